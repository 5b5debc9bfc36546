"""Tests for lux_torch.training: learning, eager/compiled/autograd equivalence, errors."""

from __future__ import annotations

import functools
import re
import warnings
from typing import Any

import pytest
import torch

import lux_torch as lux
from lux_torch.tree import allclose, leaves


def _mlp(dropout: float = 0.0) -> lux.Chain:
    layers: list[Any] = [lux.Linear(2, 32, activation=torch.tanh)]
    if dropout:
        layers.append(lux.Dropout(dropout))
    layers += [lux.Linear(32, 32, activation=torch.tanh), lux.Linear(32, 1)]
    return lux.Chain(*layers)


def _data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    x = lux.random.uniform(lux.random.key(1), (n, 2), low=-1.0, high=1.0)
    return x, torch.sin(3 * x[:, :1]) * x[:, 1:]


def _state(optimizer: Any = None, dropout: float = 0.0) -> lux.TrainState:
    model = _mlp(dropout)
    ps, st = lux.setup(0, model)
    return lux.TrainState(model, ps, st, optimizer or lux.optim.adam(1e-2))


MSE = lux.losses.MSELoss()


@pytest.mark.parametrize("ad", ["auto", "func", "autograd"])
def test_train_step_learns(ad: str) -> None:
    ts, data = _state(), _data()
    first: torch.Tensor | None = None
    for _ in range(300):
        ts, loss, stats = lux.train_step(MSE, data, ts, ad=ad)
        first = loss if first is None else first
    final, _, _ = MSE(ts.model, ts.params, ts.states, data)
    assert stats == {}
    assert ts.step == 300
    assert first is not None and final < first / 10, (first, final)


def test_compiled_step_equals_eager() -> None:
    data = _data()
    eager, compiled = _state(dropout=0.1), _state(dropout=0.1)
    for _ in range(5):
        eager, loss_e, _ = lux.train_step(MSE, data, eager)
        compiled, loss_c, _ = lux.train_step(MSE, data, compiled, compile=True)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-6)
    assert allclose(compiled.params, eager.params, rtol=1e-4, atol=1e-6)
    assert allclose(compiled.opt_state, eager.opt_state, rtol=1e-4, atol=1e-6)
    # the dropout key advanced identically (bit-identical randomness)
    assert allclose(compiled.states, eager.states, rtol=0, atol=0)
    assert len(compiled._cache) == 1  # compiled once, reused across the 5 steps


def test_compiled_autograd_path_equals_eager() -> None:
    data = _data()
    eager, compiled = _state(), _state()
    for _ in range(3):
        eager, _, _ = lux.train_step(MSE, data, eager)
        compiled, _, _ = lux.train_step(MSE, data, compiled, compile=True, ad="autograd")
    assert allclose(compiled.params, eager.params, rtol=1e-4, atol=1e-6)


def test_gradient_paths_agree_and_states_advance() -> None:
    ts, data = _state(dropout=0.2), _data()
    g_func, loss_f, _, ts_f = lux.compute_gradients(MSE, data, ts, ad="func")
    g_auto, loss_a, _, ts_a = lux.compute_gradients(MSE, data, ts, ad="autograd")
    assert allclose(g_func, g_auto, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss_f, loss_a)
    assert not loss_a.requires_grad
    assert all(not t.requires_grad for t in leaves(g_auto) + leaves(ts_a.states))
    # the Dropout key moved on; the parameters did not; the given state is untouched
    assert not torch.equal(ts_a.states["layer_2"]["key"], ts.states["layer_2"]["key"])
    assert ts_a.params is ts.params and ts_f.step == ts.step == 0


def test_apply_gradients_is_pure() -> None:
    ts, data = _state(), _data()
    before = lux.tree.map(torch.clone, ts.params)
    grads, _, _, ts2 = lux.compute_gradients(MSE, data, ts)
    ts3 = lux.apply_gradients(ts2, grads)
    assert allclose(ts.params, before, rtol=0, atol=0)
    assert not allclose(ts3.params, before)
    assert ts3.step == 1 and ts2.step == 0


def test_unused_parameters_get_zero_gradients() -> None:
    model = lux.Parallel(lambda a, b: a, lux.Linear(2, 1), lux.Linear(2, 1))
    ps, st = lux.setup(0, model)
    ts = lux.TrainState(model, ps, st, lux.optim.sgd(0.1))
    grads, _, _, _ = lux.compute_gradients(MSE, _data(), ts, ad="autograd")
    assert torch.count_nonzero(grads["layer_2"]["weight"]) == 0
    assert torch.count_nonzero(grads["layer_1"]["weight"]) > 0


def test_torch_optim_partial_matches_lux_adam() -> None:
    data = _data()
    ours = _state(lux.optim.adam(1e-2, weight_decay=0.01))
    theirs = _state(functools.partial(torch.optim.Adam, lr=1e-2, weight_decay=0.01))
    assert theirs.uses_torch_optim and isinstance(theirs.opt_state, torch.optim.Adam)
    given = lux.setup(0, ours.model)[0]
    for _ in range(25):
        ours, _, _ = lux.train_step(MSE, data, ours)
        theirs, _, _ = lux.train_step(MSE, data, theirs)
    assert allclose(theirs.params, ours.params, rtol=1e-5, atol=1e-6)
    # the caller's parameters were copied, not updated in place
    assert allclose(given, lux.setup(0, ours.model)[0], rtol=0, atol=0)


def test_torch_optim_compiled_gradients() -> None:
    data = _data()
    eager = _state(functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    compiled = _state(functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    for _ in range(3):
        eager, _, _ = lux.train_step(MSE, data, eager)
        compiled, _, _ = lux.train_step(MSE, data, compiled, compile=True)
    assert allclose(compiled.params, eager.params, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------- errors


def test_non_scalar_loss_is_an_error() -> None:
    def per_sample(model: Any, ps: Any, st: Any, data: Any) -> Any:
        x, y = data
        pred, st = model(x, ps, st)
        return (pred - y) ** 2, st, {}

    for ad in ("func", "autograd"):
        with pytest.raises(ValueError, match=r"per_sample must return a scalar.*shape \(64, 1\)"):
            lux.train_step(per_sample, _data(), _state(), ad=ad)


def test_loss_fn_with_wrong_arity_is_an_error() -> None:
    def two(model: Any, ps: Any, st: Any, data: Any) -> Any:
        pred, st = model(data[0], ps, st)
        return pred.mean(), st

    with pytest.raises(TypeError, match=r"two must return \(loss, st, stats\).*tuple of 2"):
        lux.train_step(two, _data(), _state())


def _pred_target(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(pred, target)


PLAIN_LOSSES = [
    (torch.nn.functional.mse_loss, "torch.nn.functional.mse_loss", "lux_torch.losses.MSELoss()"),
    (torch.nn.MSELoss(), "torch.nn.MSELoss()", "lux_torch.losses.MSELoss()"),
    (torch.nn.CrossEntropyLoss(label_smoothing=0.1), "torch.nn.CrossEntropyLoss()",
     "lux_torch.losses.CrossEntropyLoss() (it takes torch's arguments)"),
    (torch.nn.functional.binary_cross_entropy_with_logits,
     "torch.nn.functional.binary_cross_entropy_with_logits",
     "the matching lux_torch.losses class"),
    (_pred_target, "_pred_target", "the matching lux_torch.losses class"),
]  # fmt: skip


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize(("loss_fn", "name", "use"), PLAIN_LOSSES, ids=[p[1] for p in PLAIN_LOSSES])
def test_plain_pred_target_loss_says_how_to_use_it(
    loss_fn: Any, name: str, use: str, compile: bool
) -> None:
    """A (pred, target) loss from torch.nn raised AttributeError ("'dict' object has no
    attribute 'size'") or TypeError ("forward() takes 3 positional arguments but 5 were
    given"), and Dynamo's Unsupported when compiled."""
    ts = _state()
    message = (
        rf"(?s)loss_fn {re.escape(name)} is a plain \(pred, target\) loss, but train_step \(and "
        r"compute_gradients\) calls "
        r"loss_fn\(model, ps, st, data\) and expects \(loss, st, stats\) back.*Use "
        + re.escape(use)
        + r".*\ndef loss_fn\(model, ps, st, data\):\n    x, y = data\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's size_average deprecation, if called
        with pytest.raises(TypeError, match=message) as info:
            lux.train_step(loss_fn, _data(), ts, compile=compile)
    assert "Observed exception" not in str(info.value)
    if not compile:
        with pytest.raises(TypeError, match=message):
            lux.compute_gradients(loss_fn, _data(), ts)
    assert ts.step == 0


def test_plain_loss_check_is_off_the_happy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recognition runs only when the call fails (eager) or once when a step compiles;
    a loss_fn of the right form whose own error is unrelated keeps that error."""
    import lux_torch.training as training

    calls: list[Any] = []
    monkeypatch.setattr(training, "_plain_loss_hint", lambda fn: calls.append(fn))
    ts = _state()
    for compile in (False, True, True, True):
        ts, _, _ = lux.train_step(MSE, _data(), ts, compile=compile)
    assert calls == [MSE]  # once, at the compiled step's first call

    def broken(model: Any, ps: Any, st: Any, data: Any) -> Any:
        return {}.size()  # type: ignore[attr-defined]

    monkeypatch.undo()
    with pytest.raises(AttributeError, match="'dict' object has no attribute 'size'"):
        lux.train_step(broken, _data(), ts)


def test_gradient_structure_mismatch_is_an_error() -> None:
    ts = _state()
    grads, _, _, _ = lux.compute_gradients(MSE, _data(), ts)
    del grads["layer_2"]["bias"]
    grads["extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['layer_2.bias'\], unexpected \['extra'\]"):
        lux.apply_gradients(ts, grads)
    grads, _, _, _ = lux.compute_gradients(MSE, _data(), ts)
    grads["layer_1"]["weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"layer_1.weight has shape \(3, 3\).*\(32, 2\)"):
        lux.apply_gradients(ts, grads)


@pytest.mark.parametrize("compile", [False, True])
def test_nan_loss_raises_and_keeps_parameters(compile: bool) -> None:
    ts = _state()
    x, y = _data()
    y = y.clone()
    y[3] = float("nan")
    before = lux.tree.map(torch.clone, ts.params)
    with pytest.raises(FloatingPointError, match=r"loss is not finite at step 0.*not updated"):
        lux.train_step(MSE, (x, y), ts, compile=compile)
    assert allclose(ts.params, before, rtol=0, atol=0)
    # opting out propagates the NaN, as documented
    bad, loss, _ = lux.train_step(MSE, (x, y), ts, compile=compile, check_finite=False)
    assert torch.isnan(loss) and any(torch.isnan(p).any() for p in leaves(bad.params))


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_gradient_with_a_finite_loss_raises(compile: bool, value: str) -> None:
    def sqrt_at_zero(model: Any, ps: Any, st: Any, data: Any) -> Any:
        loss, st, stats = MSE(model, ps, st, data)
        zero = ps["layer_3"]["bias"] - ps["layer_3"]["bias"].detach()
        # at 0: d sqrt(z)/dz = inf; d sqrt(|z|)/dz = inf * sign(0) = nan. (Not sqrt(0 * b):
        # Inductor folds a product with the constant 0 to 0, as under torch.compile.)
        return loss + torch.sqrt(zero if value == "inf" else zero.abs()).sum(), st, stats

    ts = _state()
    grads, loss, _, _ = lux.compute_gradients(sqrt_at_zero, _data(), ts)
    assert torch.isfinite(loss)  # only the gradient is not
    bad = grads["layer_3"]["bias"]
    assert (bad.isinf() if value == "inf" else bad.isnan()).all()
    with pytest.raises(FloatingPointError, match="not finite"):
        lux.train_step(sqrt_at_zero, _data(), ts, compile=compile)


def test_bad_arguments() -> None:
    model = _mlp()
    ps, st = lux.setup(0, model)
    with pytest.raises(ValueError, match="ad must be one of"):
        lux.train_step(MSE, _data(), lux.TrainState(model, ps, st, lux.optim.sgd(0.1)), ad="jax")
    with pytest.raises(TypeError, match=r"factory of a torch\.optim\.Optimizer"):
        lux.TrainState(model, ps, st, 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="returned dict"):
        lux.TrainState(model, ps, st, lambda params: {})  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match=r"must be a lux_torch\.Layer"):
        lux.TrainState(torch.nn.Linear(2, 1), ps, st, lux.optim.sgd(0.1))  # type: ignore[arg-type]
    del ps["layer_3"]
    with pytest.raises(ValueError, match="ps is missing keys: layer_3"):
        lux.TrainState(model, ps, st, lux.optim.sgd(0.1))


def test_train_state_is_immutable_and_replace_keeps_cache() -> None:
    ts = _state()
    with pytest.raises(AttributeError, match="immutable"):
        ts.step = 3
    with pytest.raises(TypeError, match="unknown fields"):
        ts.replace(lr=0.1)
    ts, _, _ = lux.train_step(MSE, _data(), ts, compile=True)
    assert ts.replace(step=7)._cache is ts._cache
    assert ts.replace(model=_mlp(0.1))._cache == {}
    assert "TrainState(model=Chain" in repr(ts) and "1185 parameters" in repr(ts)


class _OldStyleSquare(torch.autograd.Function):
    """An autograd.Function without setup_context: torch.func cannot differentiate it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        result: torch.Tensor = 2 * x * grad
        return result


class _Square(lux.Layer):
    requires_autograd = True  # tells ad="auto" to use the autograd path, compiled too

    def __call__(self, x: Any, ps: Any, st: Any) -> Any:
        return _OldStyleSquare.apply(x), st


def test_layers_requiring_autograd_pick_the_autograd_path() -> None:
    model = lux.Chain(lux.Linear(2, 1), _Square())
    ps, st = lux.setup(0, model)
    ts = lux.TrainState(model, ps, st, lux.optim.sgd(0.1))
    with pytest.raises(RuntimeError, match="setup_context"):
        lux.train_step(MSE, _data(), ts, ad="func")
    eager, _, _ = lux.train_step(MSE, _data(), ts)
    compiled, _, _ = lux.train_step(MSE, _data(), ts, compile=True)
    assert allclose(compiled.params, eager.params, rtol=1e-5, atol=1e-7)


DONATED = [lambda: lux.optim.adam(1e-2), lambda: lux.optim.sgd(0.1, momentum=0.9)]


@pytest.mark.parametrize("make", DONATED, ids=["adam", "sgd"])
def test_donated_steps_equal_pure_steps(make: Any) -> None:
    data = _data()
    pure, donated = _state(make()), _state(make())
    for _ in range(5):
        pure, _, _ = lux.train_step(MSE, data, pure)
        previous = donated
        donated, _, _ = lux.train_step(MSE, data, donated, donate=True)
    assert allclose(donated.params, pure.params, rtol=1e-6, atol=1e-7)
    # donation reused the previous train state's buffers (documented: don't use it again)
    assert leaves(donated.params)[0] is leaves(previous.params)[0]


@pytest.mark.parametrize("ad", ["auto", "autograd"])  # autograd: gradients, then the kernel
@pytest.mark.parametrize("make", DONATED, ids=["adam", "sgd"])
def test_compiled_donated_steps_equal_eager_and_check_nan(make: Any, ad: str) -> None:
    data = _data()
    eager, donated = _state(make()), _state(make())
    for _ in range(5):
        eager, _, _ = lux.train_step(MSE, data, eager)
        donated, _, _ = lux.train_step(MSE, data, donated, compile=True, donate=True, ad=ad)
    assert allclose(donated.params, eager.params, rtol=1e-4, atol=1e-6)
    x, y = data
    before = lux.tree.map(torch.clone, donated.params)
    with pytest.raises(FloatingPointError, match="not updated"):
        lux.train_step(MSE, (x, y * float("nan")), donated, compile=True, donate=True, ad=ad)
    assert allclose(donated.params, before, rtol=0, atol=0)


def test_many_compiled_loss_functions_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    from lux_torch import training

    monkeypatch.setattr(training, "_CACHE_WARN", 1)
    ts, data = _state(lux.optim.sgd(0.1)), _data()
    ts, _, _ = lux.train_step(lambda *a: MSE(*a), data, ts, compile=True)
    with pytest.warns(RuntimeWarning, match="pass the same loss_fn object"):
        lux.train_step(lambda *a: MSE(*a), data, ts, compile=True)
    assert len(ts._cache) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", ["dense", "strided"])
def test_finiteness_check_finds_every_non_finite_value_and_keeps_gradients(
    dtype: torch.dtype, layout: str
) -> None:
    from lux_torch.training import _all_finite

    def grads() -> dict[str, torch.Tensor]:
        w = torch.arange(12, dtype=dtype).reshape(3, 4)
        return {"w": w.t() if layout == "strided" else w, "b": torch.full((2,), -3.5, dtype=dtype)}

    one = torch.tensor(1.0)
    g = grads()
    assert _all_finite(one, g) is True
    assert all(torch.equal(a, b) for a, b in zip(leaves(g), leaves(grads()), strict=True))
    assert _all_finite(torch.tensor(float("inf")), g) is False
    for bad in (float("nan"), float("inf"), float("-inf")):
        g = grads()
        g["w"][2, 1] = bad
        assert _all_finite(one, g) is False, bad
