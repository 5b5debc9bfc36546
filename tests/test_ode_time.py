"""NeuralODE: time as data (call options), gradients to it, and no silently dropped gradient."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from typing import Any

import pytest
import torch
import torchdiffeq

import lux_torch as lux
from lux_torch.ode import NeuralODE

F64 = torch.float64
EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _field() -> lux.Chain:
    return lux.Chain(lux.Linear(2, 8, activation=torch.tanh), lux.Linear(8, 2))


def _setup(node: NeuralODE) -> tuple[Any, Any]:
    ps, st = lux.setup(0, node, dtype=F64)
    return lux.tree.map(lambda p: p.requires_grad_(True), ps), st


def _y0() -> torch.Tensor:
    return lux.random.normal(lux.random.key(1), (4, 2), dtype=F64)


def _reference(ps: Any, adjoint: bool) -> Any:
    """The same field as a plain function of (t, y), for torchdiffeq."""
    w1, b1 = ps["vector_field"]["layer_1"]["weight"], ps["vector_field"]["layer_1"]["bias"]
    w2, b2 = ps["vector_field"]["layer_2"]["weight"], ps["vector_field"]["layer_2"]["bias"]
    leaves = (w1, b1, w2, b2)

    def f(t: torch.Tensor, y: torch.Tensor) -> Any:
        return torch.tanh(y @ w1.T + b1) @ w2.T + b2

    def solve(y0: torch.Tensor, t: torch.Tensor) -> Any:
        kw = {"rtol": 1e-9, "atol": 1e-9}
        if adjoint:
            return torchdiffeq.odeint_adjoint(f, y0, t, adjoint_params=leaves, **kw)
        return torchdiffeq.odeint(f, y0, t, **kw)

    return solve, leaves


# --------------------------------------------------------------------------- time as data


@pytest.mark.parametrize("adjoint", [False, True])
def test_times_given_with_the_input_get_torchdiffeqs_gradients(adjoint: bool) -> None:
    node = NeuralODE(_field(), rtol=1e-9, atol=1e-9, adjoint=adjoint)
    ps, st = _setup(node)
    y0 = _y0().requires_grad_(True)
    t = torch.tensor([0.0, 0.3, 0.7, 1.2], dtype=F64, requires_grad=True)
    ys, _ = node((y0, {"t": t}), ps, st)
    w = torch.linspace(-1.0, 1.0, ys.numel(), dtype=F64).reshape(ys.shape)
    ours = torch.autograd.grad((ys * w).sum(), (t, y0, *lux.tree.leaves(ps)))
    solve, leaves = _reference(ps, adjoint)
    ref = solve(y0, t)
    theirs = torch.autograd.grad((ref * w).sum(), (t, y0, *leaves))
    torch.testing.assert_close(ys, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    assert ours[0].abs().sum() > 0  # d/dt is not silently zero


def test_times_in_the_options_take_precedence_and_need_no_rebuild() -> None:
    configured = NeuralODE(_field(), (0.0, 1.0), rtol=1e-9, atol=1e-9)
    ps, st = _setup(configured)
    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    ys, _ = configured((_y0(), {"t": t}), ps, st)
    plain = NeuralODE(_field(), tuple(t.tolist()), rtol=1e-9, atol=1e-9)
    expected, _ = plain(_y0(), ps, st)
    assert ys.shape == (3, 4, 2)
    torch.testing.assert_close(ys, expected, rtol=0, atol=0)
    # a decreasing grid, and one time point as in torchdiffeq (returns y0[None])
    back, _ = configured((ys[-1], {"t": t.flip(0)}), ps, st)
    torch.testing.assert_close(back[-1], _y0(), rtol=0, atol=1e-7)
    one, _ = configured((_y0(), {"t": t[:1]}), ps, st)
    torch.testing.assert_close(one, _y0()[None], rtol=0, atol=0)
    # a tuple state with options
    pair = NeuralODE(lux.Parallel(None, _field(), _field()), (0.0, 1.0))
    both_ps = {"vector_field": {"layer_1": ps["vector_field"], "layer_2": ps["vector_field"]}}
    _, pair_st = lux.setup(0, pair)
    tup, _ = pair(((_y0(), _y0()), {"t": t}), both_ps, pair_st)
    torch.testing.assert_close(tup[0], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (({"t": torch.tensor([0.0, 1.0])},), "must follow the initial state"),
        ((None, {"tt": torch.tensor([0.0, 1.0])}), "unknown call option 'tt'"),
        ((None, {"t": torch.zeros(2, 2)}), "must be a 1-D tensor of times, got shape"),
        ((None, {"t": torch.tensor([0.0, 1.0, 0.5])}), r"strictly increasing.*t\[2\] = 0.5"),
        ((None, {"t": torch.tensor([0.0, float("nan")])}), "must be finite"),
        ((None, {"t": torch.tensor([], dtype=F64)}), "at least one time point"),
        ((None, {"t": torch.tensor([0.0, 1.0]) * 1j}), "must be real"),
        ((None, {"t0": torch.tensor(0.0)}), "'t0' .* needs event_fn"),
        ((None, {}), "no time points"),
    ],
)
def test_bad_call_options_raise(x: tuple[Any, ...], match: str) -> None:
    node = NeuralODE(_field())
    ps, st = _setup(node)
    x = tuple(_y0() if v is None else v for v in x)
    with pytest.raises((ValueError, TypeError), match=match):
        node(x, ps, st)


def test_per_batch_grids_compile_once() -> None:
    from torch._dynamo.utils import counters

    node = NeuralODE(_field(), method="rk4", options={"step_size": 0.05})
    ps, st = lux.setup(0, node)
    y0 = _y0().float()
    grids = [torch.tensor([0.0, 0.2 * k, 0.5 * k]) for k in (1.0, 1.5, 2.0, 0.7)]
    eager = compiled = lux.TrainState(node, ps, st, lux.optim.adam(1e-2))
    torch._dynamo.reset()
    graphs = []
    for t in grids:
        batch = ((y0, {"t": t}), y0[None].expand(3, -1, -1) * 0.5)
        eager, loss_e, _ = lux.train_step(lux.losses.MSELoss(), batch, eager)
        compiled, loss_c, _ = lux.train_step(lux.losses.MSELoss(), batch, compiled, compile=True)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-7)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] > 0 and graphs[1:] == [graphs[0]] * 3, graphs  # no recompilation


# --------------------------------------------------------------------------- events


def _example(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("bouncing_ball", EXAMPLES / "bouncing_ball.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bouncing_ball", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("adjoint", [False, True])
def test_chained_event_solves_reproduce_torchdiffeqs_gradients(
    adjoint: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchdiffeq's bouncing_ball.py: 3 bounces, each solve starting at the previous event
    # time given as a tensor ({"t0": event_t}), so gradients flow through the whole chain
    ball = _example(monkeypatch)
    ours = ball.lux_gradients(3, adjoint)
    theirs = ball.torchdiffeq_gradients(3, adjoint)
    for name in ball.NAMES:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6)
    assert float(ours["gravity"]) == pytest.approx(-0.2800, abs=1e-4)
    assert float(ours["init_vel"]) == pytest.approx(0.102, abs=1e-3)


def test_bouncing_ball_example_fits_gravity_and_writes_png(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ball.png"
    fitted = _example(monkeypatch).main(steps=6, nbounces=3, out=out)
    assert fitted["gravity"] == pytest.approx(9.8, abs=1e-6)
    assert fitted["absorption"] == pytest.approx(0.2, abs=1e-6)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_event_fn_reading_a_parameter_outside_the_state_raises() -> None:
    height = torch.tensor(0.5, dtype=F64, requires_grad=True)
    node = NeuralODE(lux.WrappedFunction(lambda y: -torch.ones_like(y)), (0.0, 1.0))
    node = NeuralODE(node.vector_field, (0.0, 5.0), event_fn=lambda t, y: y.sum() - height)
    ps, st = lux.setup(0, node, dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    with pytest.raises(ValueError, match=r"event_fn reads 1 tensor\(s\) requiring grad"):
        node(y0, ps, st)
    with torch.no_grad():  # nothing to differentiate: nothing to lose
        (event_t, _), _ = node(y0, ps, st)
    assert float(event_t) == pytest.approx(0.5, abs=1e-6)


# --------------------------------------------------------------------------- the adjoint


class Conditioned(lux.Layer):
    """``dy/dt = tanh(W y + c)`` with a context ``c`` from ``st`` (e.g. an encoder's output)."""

    def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"weight": lux.random.normal(key, (2, 2)) * 0.5}

    def init_state(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"context": torch.zeros(2)}

    def __call__(self, y: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        return torch.tanh(y @ ps["weight"].T + st["context"]), st


@pytest.mark.parametrize("leaf", [True, False])
def test_adjoint_gives_state_tensors_their_gradient(leaf: bool) -> None:
    encoder_w = torch.tensor([0.3, -0.7], dtype=F64, requires_grad=True)
    grads = {}
    for adjoint in (False, True):
        node = NeuralODE(Conditioned(), (0.0, 0.5, 1.0), adjoint=adjoint, rtol=1e-10, atol=1e-10)
        ps, st = _setup(node)
        context = encoder_w if leaf else encoder_w * 2.0  # a leaf, or computed from one
        st["vector_field"]["context"] = context
        ys, _ = node(_y0(), ps, st)
        wrt = (encoder_w, ps["vector_field"]["weight"])
        grads[adjoint] = torch.autograd.grad((ys**2).sum(), wrt)
    assert grads[False][0].abs().sum() > 0
    for a, b in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_adjoint_refuses_a_closure_tensor_it_cannot_see() -> None:
    scale = torch.tensor(0.5, dtype=F64, requires_grad=True)
    field = lux.WrappedFunction(lambda y: -scale * y)
    node = NeuralODE(field, (0.0, 1.0), adjoint=True)
    ps, st = lux.setup(0, node, dtype=F64)
    with pytest.raises(ValueError, match=r"reads 1 tensor\(s\) requiring grad, of shape \(\)"):
        node(_y0(), ps, st)
    backprop, _ = NeuralODE(field, (0.0, 1.0))(_y0(), ps, st)  # backprop sees it
    (g,) = torch.autograd.grad(backprop.sum(), scale)
    assert g.abs() > 0


def test_adjoint_refuses_a_state_tensor_that_changes() -> None:
    class Drifting(Conditioned):
        def __call__(self, y: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
            dy, _ = super().__call__(y, ps, st)
            return dy, {"context": st["context"] * 0.99}

    node = NeuralODE(Drifting(), (0.0, 1.0), adjoint=True)
    ps, st = _setup(node)
    st["vector_field"]["context"] = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="must pass through the field unchanged"):
        node(_y0(), ps, st)


def test_vector_field_adjoint_params_include_state_tensors_requiring_grad() -> None:
    context = torch.ones(2, dtype=F64, requires_grad=True)
    f = lux.ode.vector_field(Conditioned(), {"weight": torch.eye(2)}, {"context": context})
    assert f.adjoint_params[-1] is context and len(f.adjoint_params) == 2


# --------------------------------------------------------------------------- tolerances


def test_per_element_tensor_tolerances_match_torchdiffeq() -> None:
    atol = torch.tensor([1e-9, 1e-3], dtype=F64)  # loose on the second component only
    rtol = torch.full((4, 2), 1e-6, dtype=F64)
    node = NeuralODE(_field(), (0.0, 1.0), rtol=rtol, atol=atol)
    ps, st = _setup(node)
    ys, new_st = node(_y0(), ps, st)
    f_nfe = [0]
    w1, b1 = ps["vector_field"]["layer_1"]["weight"], ps["vector_field"]["layer_1"]["bias"]
    w2, b2 = ps["vector_field"]["layer_2"]["weight"], ps["vector_field"]["layer_2"]["bias"]

    def f(t: torch.Tensor, y: torch.Tensor) -> Any:
        f_nfe[0] += 1
        return torch.tanh(y @ w1.T + b1) @ w2.T + b2

    ref = torchdiffeq.odeint(f, _y0(), torch.tensor([0.0, 1.0], dtype=F64), rtol=rtol, atol=atol)
    torch.testing.assert_close(ys, ref, rtol=0, atol=0)
    assert int(new_st["stats"]["nfe"]) == f_nfe[0]
    assert "atol=tensor of shape (2,)" in repr(node)
    uniform, _ = NeuralODE(_field(), (0.0, 1.0), rtol=1e-6, atol=1e-9)(_y0(), ps, st)
    assert not torch.equal(ys, uniform)  # the per-element tolerance was honoured


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"atol": torch.tensor([-1.0])}, "finite non-negative"),
        ({"atol": torch.tensor([1e-6], requires_grad=True)}, "not require grad"),
        ({"rtol": torch.tensor([1e-6, 1e-6, 1e-6])}, r"shape \(3,\) does not broadcast"),
    ],
)
def test_bad_tensor_tolerances_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        node = NeuralODE(_field(), (0.0, 1.0), **kwargs)
        ps, st = _setup(node)
        node(_y0(), ps, st)


# --------------------------------------------------------------------------- dense output


def test_dense_output_equals_the_solve_at_any_time_and_differentiates() -> None:
    node = NeuralODE(_field(), (0.0, 2.0), rtol=1e-9, atol=1e-9)
    ps, st = _setup(node)
    sol, new_st = node.dense(_y0(), ps, st)
    times = torch.tensor([0.0, 0.37, 1.0, 1.91, 2.0], dtype=F64)
    dense = sol(times)
    solved, _ = node((_y0(), {"t": times}), ps, st)
    assert dense.shape == (5, 4, 2) and sol(times[1]).shape == (4, 2)
    torch.testing.assert_close(dense, solved, rtol=1e-7, atol=1e-8)
    assert int(new_st["stats"]["nfe"]) > 0
    leaves = lux.tree.leaves(ps)
    g_dense = torch.autograd.grad(dense[1:4].sum(), leaves)
    g_solve = torch.autograd.grad(solved[1:4].sum(), leaves)
    for a, b in zip(g_dense, g_solve, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"t = 2.5 is outside the solved span \[0.0, 2.0\]"):
        sol(torch.tensor([1.0, 2.5]))


@pytest.mark.parametrize(
    ("kwargs", "x", "match"),
    [
        ({"method": "rk4"}, None, "method='rk4'"),
        ({"adjoint": True}, None, "adjoint=True"),
        ({}, (None, {"t": torch.tensor([1.0, 0.0])}), "must increase"),
        ({}, ((None, None), {"t": torch.tensor([0.0, 1.0])}), "needs a Tensor state"),
    ],
)
def test_dense_output_refuses_what_torchdiffeq_cannot_do(
    kwargs: dict[str, Any], x: Any, match: str
) -> None:
    node = NeuralODE(_field(), (0.0, 1.0), **kwargs)
    ps, st = _setup(node)
    if x is None:
        x = _y0()
    else:
        first = x[0] if x[0] is None else tuple(_y0() for _ in x[0])
        x = (_y0() if first is None else first, x[1])
    with pytest.raises((ValueError, TypeError), match=match):
        node.dense(x, ps, st)
