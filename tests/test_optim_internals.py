"""Tests for the wrapper transformations (multi_steps, lookahead, apply_if_finite,
inject_hyperparams), clip / centralize / ema, TrainState's parameter average, the new
schedules and the descriptor-driven fast path of optim.step.

References are written here from the papers / optax / torch.optim, never by calling the
implementation under test (except where an identity with another lux optimizer is the
documented behaviour: multi_steps is one inner step on the mean gradient)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers import assert_updates_are_pure

import lux_torch as lux
from lux_torch import optim
from lux_torch import schedules as S
from lux_torch.tree import leaves, map, stack

STEPS = 50


def _params(dtype: torch.dtype = torch.float64) -> dict[str, Any]:
    """A conv kernel (4-D, for centralize), a bias and a dense layer's weight."""
    gen = torch.Generator().manual_seed(0)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=dtype)

    return {"conv": {"weight": draw(4, 2, 3, 3), "bias": draw(4)}, "dense": {"weight": draw(2, 5)}}


def _grad(p: torch.Tensor, i: int = 0) -> torch.Tensor:
    return 2 * p + torch.sin(p + i)


def _run(opt: optim.GradientTransformation, ps: Any, steps: int) -> tuple[Any, Any]:
    state = opt.init(ps)
    for i in range(steps):
        updates, state = opt.update(map(lambda p, i=i: _grad(p, i), ps), state, ps)
        ps = optim.apply_updates(ps, updates)
    return ps, state


# ---------------------------------------------------------------- clip / centralize / ema


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_and_centralize_match_their_formulas(dtype: torch.dtype) -> None:
    ps = _params(dtype)
    grads = map(lambda p: 3 * _grad(p), ps)
    clipped, _ = optim.clip(0.5).update(grads, (), ps)
    for c, g in zip(leaves(clipped), leaves(grads), strict=True):
        assert torch.equal(c, torch.where(g > 0.5, 0.5, torch.where(g < -0.5, -0.5, g)).to(dtype))
    centered, _ = optim.centralize().update(grads, (), ps)
    w = grads["conv"]["weight"]
    want = w - w.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(centered["conv"]["weight"], want)  # mean over all but dim 0
    assert torch.equal(centered["conv"]["bias"], grads["conv"]["bias"])  # a vector


@pytest.mark.parametrize("debias", [True, False])
def test_ema_matches_a_hand_computed_average(debias: bool) -> None:
    decay = 0.9
    smooth = optim.ema(decay, debias=debias)
    ps = _params()
    state = smooth.init(ps)
    avg = [torch.zeros_like(p) for p in leaves(ps)]
    for t in range(1, STEPS + 1):
        values = map(lambda p, t=t: _grad(p, t), ps)
        out, state = smooth.update(values, state)
        avg = [decay * a + (1 - decay) * v for a, v in zip(avg, leaves(values), strict=True)]
        want = [a / (1 - decay**t) for a in avg] if debias else avg
        for a, b in zip(leaves(out), want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert int(state["count"]) == STEPS


# ---------------------------------------------------------------------------- multi_steps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multi_steps_is_one_inner_step_on_the_mean_gradient_exactly(dtype: torch.dtype) -> None:
    k = 3
    inner = optim.adam(0.01, weight_decay=0.1)
    opt = optim.multi_steps(inner, k)
    ps = ref_ps = _params(dtype)
    state, ref_state = opt.init(ps), inner.init(ref_ps)
    for step in range(10):
        micro = [map(lambda p, j=j: _grad(p, step * k + j), ps) for j in range(k)]
        for j, g in enumerate(micro):
            updates, state = opt.update(g, state, ps)
            if j < k - 1:
                assert all(bool((u == 0).all()) for u in leaves(updates))
                assert int(state["mini_step"]) == j + 1
            ps = optim.apply_updates(ps, updates)
        mean = map(lambda *gs: sum(gs) / k, *micro)
        ref_updates, ref_state = inner.update(mean, ref_state, ref_ps)
        ref_ps = optim.apply_updates(ref_ps, ref_updates)
        for a, b in zip(leaves((ps, state["inner"])), leaves((ref_ps, ref_state)), strict=True):
            assert torch.equal(a, b)
        assert int(state["mini_step"]) == 0


def test_multi_steps_matches_torch_adam_on_accumulated_gradients() -> None:
    k, ps = 4, _params()
    params = [torch.nn.Parameter(p.clone()) for p in leaves(ps)]
    reference = torch.optim.Adam(params, lr=0.01)
    opt = optim.multi_steps(optim.adam(0.01), k)
    state = opt.init(ps)
    for step in range(STEPS):
        for p in params:
            p.grad = torch.zeros_like(p)
        for j in range(k):
            updates, state = opt.update(map(lambda p, i=step * k + j: _grad(p, i), ps), state, ps)
            ps = optim.apply_updates(ps, updates)
            for p in params:
                assert p.grad is not None
                p.grad += _grad(p.detach(), step * k + j) / k
        reference.step()
    for ours, theirs in zip(leaves(ps), params, strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ lookahead


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lookahead_matches_the_papers_algorithm(dtype: torch.dtype) -> None:
    lr, momentum, k, alpha = 0.05, 0.9, 5, 0.5
    ps = _params(dtype)
    ours, state = _run(optim.lookahead(optim.sgd(lr, momentum=momentum), k, alpha), ps, STEPS)
    fast = [p.clone() for p in leaves(ps)]
    slow = [p.clone() for p in fast]
    buf = [torch.zeros_like(p) for p in fast]
    for i in range(STEPS):
        for j, p in enumerate(fast):  # torch.optim.SGD's rule, momentum buffer kept
            buf[j] = momentum * buf[j] + _grad(p, i)
            fast[j] = p - lr * buf[j]
        if (i + 1) % k == 0:  # Algorithm 1: slow += alpha (fast - slow); fast = slow
            slow = [s + alpha * (f - s) for s, f in zip(slow, fast, strict=True)]
            fast = [s.clone() for s in slow]
    rtol, atol = (1e-5, 1e-6) if dtype is torch.float32 else (1e-7, 1e-7)
    for a, b in zip(leaves(ours), fast, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    for a, b in zip(leaves(state["slow"]), slow, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------ apply_if_finite


def test_apply_if_finite_skips_non_finite_steps_with_optax_semantics() -> None:
    max_errors = 2
    inner = optim.sgd(0.1, momentum=0.5)
    opt = optim.apply_if_finite(inner, max_errors)
    ps = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    bad_steps = {3, 7, 8, 12, 13, 14}  # 12-14: three in a row > max_errors: applied
    state = opt.init(ps)
    w, buf = ps["w"].clone(), torch.zeros(2, dtype=torch.float64)
    run = total = 0
    for i in range(15):  # after step 14 the parameters are NaN
        g = _grad(ps["w"], i)
        if i in bad_steps:
            g = g.clone()
            g[0] = math.nan if i % 2 else math.inf
        updates, state = opt.update({"w": g}, state, ps)
        ps = optim.apply_updates(ps, updates)
        finite = i not in bad_steps
        run, total = (0, total) if finite else (run + 1, total + 1)
        if finite or run > max_errors:  # optax: apply when finite or past the limit
            buf = 0.5 * buf + g
            w = w - 0.1 * buf
        assert int(state["notfinite_count"]) == run and int(state["total_notfinite"]) == total
        assert bool(state["last_finite"]) == finite
        torch.testing.assert_close(ps["w"], w, equal_nan=True)
    assert not bool(torch.isfinite(ps["w"]).all())  # the 3rd error in a row went through


# --------------------------------------------------------------------- inject_hyperparams


def test_inject_hyperparams_equals_the_optimizer_and_follows_set_hyperparams() -> None:
    ps = _params()
    params = [torch.nn.Parameter(p.clone()) for p in leaves(ps)]
    reference = torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)
    opt = optim.inject_hyperparams(optim.adamw)(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99))
    reference = torch.optim.AdamW(params, lr=0.01, weight_decay=0.1, betas=(0.8, 0.99))
    state = opt.init(ps)
    assert sorted(state["hyperparams"]) == ["lr", "weight_decay"]
    for i in range(STEPS):
        if i == 20:
            state = optim.set_hyperparams(state, lr=0.003, weight_decay=0.5)
            for group in reference.param_groups:
                group["lr"], group["weight_decay"] = 0.003, 0.5
        updates, state = opt.update(map(lambda p, i=i: _grad(p, i), ps), state, ps)
        ps = optim.apply_updates(ps, updates)
        for p in params:
            p.grad = _grad(p.detach(), i)
        reference.step()
    for ours, theirs in zip(leaves(ps), params, strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-10, atol=1e-12)


def test_inject_hyperparams_schedules_and_checks() -> None:
    ps = {"w": torch.ones(2, dtype=torch.float64)}
    opt = optim.inject_hyperparams(optim.sgd)(lr=S.linear_schedule(0.1, 0.0, 4), momentum=0.5)
    state = opt.init(ps)
    assert sorted(state["hyperparams"]) == ["momentum"]
    with pytest.raises(ValueError, match=r"'lr' is not a settable hyperparameter"):
        optim.set_hyperparams(state, lr=0.1)
    with pytest.raises(ValueError, match="momentum must be finite"):
        optim.set_hyperparams(state, momentum=math.nan)
    with pytest.raises(ValueError, match="not the state of an inject_hyperparams"):
        optim.set_hyperparams(optim.sgd(0.1).init(ps), lr=0.1)
    bad = optim.set_hyperparams(state, momentum=1.5)
    with pytest.raises(ValueError, match=r"trace: momentum must be in \[0, 1\)"):
        opt.update({"w": torch.ones(2, dtype=torch.float64)}, bad, ps)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        optim.inject_hyperparams(optim.adam)(lr=-1.0)
    static = optim.inject_hyperparams(optim.sgd, static_args=("momentum",))(lr=0.1, momentum=0.5)
    assert sorted(static.init(ps)["hyperparams"]) == ["lr"]


@pytest.mark.slow
def test_inject_hyperparams_does_not_recompile_when_a_value_changes() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    opt = optim.inject_hyperparams(optim.adam)(lr=0.01, eps=1e-8)
    ps = _params(torch.float32)

    def step(ps: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = opt.update(grads, state, ps)
        return optim.apply_updates(ps, updates), state

    compiled = torch.compile(step, fullgraph=True)
    state = opt.init(ps)
    eager_ps, eager_state = ps, state
    for i, lr in enumerate((0.01, 0.01, 0.001, 0.1, 0.0)):
        state = optim.set_hyperparams(state, lr=lr)
        eager_state = optim.set_hyperparams(eager_state, lr=lr)
        ps, state = compiled(ps, state, map(lambda p, i=i: _grad(p, i), ps))
        eager_ps, eager_state = step(
            eager_ps, eager_state, map(lambda p, i=i: _grad(p, i), eager_ps)
        )
    assert counters["stats"]["unique_graphs"] == 1
    for a, b in zip(leaves(ps), leaves(eager_ps), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ purity, vmap, compile, shapes


def _labels_mask(ps: Any) -> Any:
    return map(lambda p: p.ndim > 1, ps)


NEW = {
    "clip": lambda: optim.chain(optim.clip(0.3), optim.sgd(0.1)),
    "centralize": lambda: optim.chain(optim.centralize(), optim.adam(0.01)),
    "ema": lambda: optim.chain(optim.ema(0.9), optim.scale(-0.1)),
    "multi_steps": lambda: optim.multi_steps(optim.adam(0.01), 2),
    "lookahead": lambda: optim.lookahead(optim.adam(0.01), 2, 0.5),
    "apply_if_finite": lambda: optim.apply_if_finite(optim.adam(0.01), 1),
    "inject_hyperparams": lambda: optim.inject_hyperparams(optim.adamw)(lr=0.01),
}


@pytest.mark.parametrize("name", NEW)
def test_new_transforms_are_pure(name: str) -> None:
    grads_at = lambda ps, i: map(lambda p: _grad(p, i), ps)  # noqa: E731
    assert_updates_are_pure(NEW[name](), _params(), grads_at, 3)


@pytest.mark.parametrize("name", NEW)
def test_new_transforms_vmap_over_an_ensemble(name: str) -> None:
    opt = NEW[name]()
    members = [map(lambda p, i=i: p + i, _params()) for i in range(3)]
    states = [opt.init(ps) for ps in members]

    def step(ps: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = opt.update(grads, state, ps)
        return optim.apply_updates(ps, updates), state

    ps_b, st_b = stack(members), stack(states)
    for i in range(4):
        ps_b, st_b = torch.func.vmap(step)(ps_b, st_b, map(lambda p, i=i: _grad(p, i), ps_b))
    for m, (ps, st) in enumerate(zip(members, states, strict=True)):
        for i in range(4):
            ps, st = step(ps, st, map(lambda p, i=i: _grad(p, i), ps))
        for a, b in zip(leaves((ps, st)), leaves((ps_b, st_b)), strict=True):
            torch.testing.assert_close(a, b[m])


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_new_transforms_compile_fullgraph(name: str) -> None:
    torch._dynamo.reset()
    opt = NEW[name]()

    def step(ps: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = opt.update(grads, state, ps)
        return optim.apply_updates(ps, updates), state

    compiled = torch.compile(step, fullgraph=True)
    ps = _params(torch.float32)
    eager = traced = (ps, opt.init(ps))
    for i in range(4):
        eager = step(*eager, map(lambda p, i=i: _grad(p, i), eager[0]))
        traced = compiled(*traced, map(lambda p, i=i: _grad(p, i), traced[0]))
    for a, b in zip(leaves(traced), leaves(eager), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NEW)
def test_new_transforms_refuse_mis_shaped_grads(name: str) -> None:
    opt = NEW[name]()
    ps = {"layer": {"w": torch.ones(3), "b": torch.zeros(2)}}
    bad = {"layer": {"w": torch.ones(1), "b": torch.ones(2)}}
    with pytest.raises(ValueError, match=r"'layer.w' has shape \(1,\), but the"):
        opt.update(bad, opt.init(ps), ps)


def test_a_state_of_another_transformation_is_refused() -> None:
    ps = _params()
    with pytest.raises(ValueError, match="multi_steps: the state does not fit"):
        optim.multi_steps(optim.adam(), 2).update(map(_grad, ps), optim.adam().init(ps), ps)
    opt = optim.chain(optim.ema(0.9), optim.scale(-1.0))
    state = opt.init(ps)
    state = ({**state[0], "ema": {"conv": state[0]["ema"]["conv"]}}, ())
    with pytest.raises(ValueError, match="grads \\(to ema\\) has a different structure"):
        opt.update(map(_grad, ps), state, ps)
    adam_state = optim.scale_by_adam().init(ps)
    adam_state["nu"] = {"conv": adam_state["nu"]["conv"]}
    with pytest.raises(ValueError, match="scale_by_adam: the state does not fit these grads"):
        optim.scale_by_adam().update(map(_grad, ps), adam_state, ps)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: optim.clip(0.0), "clip: max_delta must be > 0"),
        (lambda: optim.ema(1.0), r"ema: decay must be in \[0, 1\)"),
        (lambda: optim.multi_steps(optim.adam(), 0), "multi_steps: every_k must be an int >= 1"),
        (lambda: optim.lookahead(optim.adam(), 0), "lookahead: sync_period must be an int"),
        (lambda: optim.lookahead(optim.adam(), 2, 0.0), r"lookahead: alpha must be in \(0, 1\]"),
        (
            lambda: optim.lookahead(optim.adam(), 2).update({"w": torch.ones(1)}, ()),
            "lookahead: update needs ps",
        ),
        (
            lambda: optim.apply_if_finite(optim.adam(), -1),
            "apply_if_finite: max_consecutive_errors must be an int >= 0",
        ),
        (lambda: S.polynomial_schedule(1.0, 0.0, 0.0, 10), "power must be > 0"),
        (lambda: S.polynomial_schedule(1.0, 0.0, 1.0, 0), "transition_steps must be an int >= 1"),
        (
            lambda: S.join_schedules([S.constant_schedule(1.0)], [3]),
            "one schedule more than boundaries",
        ),
        (
            lambda: S.join_schedules([S.constant_schedule(1.0)] * 3, [5, 5]),
            "boundaries must increase",
        ),
        (lambda: S.join_schedules([S.constant_schedule(1.0)] * 2, [-1]), "every boundary"),
        (lambda: S.warmup_constant_schedule(0.0, 1.0, 0), "warmup_steps must be an int >= 1"),
        (lambda: S.one_cycle(1.0, 1), "total_steps must be an int >= 2"),
        (lambda: S.one_cycle(1.0, 10, pct_start=1.0), r"pct_start must be in \(0, 1\)"),
        (lambda: S.one_cycle(1.0, 10, div_factor=0.0), "div_factor and final_div_factor"),
        (lambda: S.one_cycle(1.0, 10, anneal="exp"), "anneal must be 'cos' or 'linear'"),
        (lambda: S.one_cycle(1.0, 10, pct_start=0.1), "pct_start \\* total_steps must not be 1"),
    ],
)
def test_bad_configurations_are_refused(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


# ------------------------------------------------------------------------------ schedules


def _torch_lrs(make: Callable[[torch.optim.Optimizer], Any], steps: int, lr: float) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    scheduler = make(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def _max_diff(schedule: S.Schedule, reference: list[float]) -> float:
    ours = schedule(torch.arange(len(reference)))
    return float((ours - torch.tensor(reference, dtype=torch.float64)).abs().max())


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"anneal": "linear"},
        {"three_phase": True},
        {"three_phase": True, "anneal": "linear", "pct_start": 0.2},
        {"pct_start": 0.45, "div_factor": 5.0, "final_div_factor": 100.0},
    ],
)
def test_one_cycle_equals_torch_one_cycle_lr(options: dict[str, Any]) -> None:
    total = 97
    torch_options = {("anneal_strategy" if k == "anneal" else k): v for k, v in options.items()}
    lrs = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.3, total_steps=total, cycle_momentum=False, **torch_options
        ),
        total - 1,  # torch refuses to step past total_steps
        0.3,
    )
    assert _max_diff(S.one_cycle(0.3, total, **options), lrs) < 1e-15


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_polynomial_schedule_equals_torch_polynomial_lr(power: float) -> None:
    lrs = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=40, power=power), 60, 0.2
    )
    assert _max_diff(S.polynomial_schedule(0.2, 0.0, power, 40), lrs) < 1e-12
    # optax's form with an end value and a delayed start
    schedule = S.polynomial_schedule(1.0, 0.1, power, 10, transition_begin=5)
    want = [0.9 * (1 - min(max(t - 5, 0), 10) / 10) ** power + 0.1 for t in range(20)]
    assert _max_diff(schedule, want) < 1e-15


def test_join_and_warmup_constant_equal_torch_sequential_and_linear_lr() -> None:
    lrs = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=5),
                torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
            ],
            milestones=[8],
        ),
        30,
        0.5,
    )
    joined = S.join_schedules(
        [S.linear_schedule(0.05, 0.5, 5), S.exponential_decay(0.5, 1, 0.9)], [8]
    )
    assert _max_diff(joined, lrs) < 1e-12
    lrs = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=8), 20, 0.4
    )
    assert _max_diff(S.warmup_constant_schedule(0.1, 0.4, 8), lrs) < 1e-15


@pytest.mark.slow
def test_new_schedules_compile_and_vmap() -> None:
    made = [
        S.one_cycle(0.3, 50, three_phase=True),
        S.polynomial_schedule(1.0, 0.0, 2.0, 20),
        S.join_schedules([S.constant_schedule(1.0), S.linear_schedule(1.0, 0.0, 10)], [5]),
        S.warmup_constant_schedule(0.0, 1.0, 7),
    ]
    counts = torch.arange(60)
    for schedule in made:
        eager = torch.stack([schedule(c) for c in counts])
        torch.testing.assert_close(torch.func.vmap(schedule)(counts), eager)
        compiled = torch.compile(schedule, fullgraph=True, dynamic=False)
        torch.testing.assert_close(torch.stack([compiled(c) for c in counts[:3]]), eager[:3])


# --------------------------------------------------------------------- TrainState's EMA


def _mse(model: Any, ps: Any, st: Any, data: Any) -> Any:
    x, y = data
    out, st = model(x, ps, st)
    return ((out - y) ** 2).mean(), st, {}


@pytest.mark.parametrize("mode", ["eager", "donate", "compile"])
def test_train_state_keeps_the_average_of_its_parameters(mode: str) -> None:
    decay = 0.8
    model = lux.Chain(lux.Linear(3, 8, activation=torch.tanh), lux.Linear(8, 1))
    ps, st = lux.setup(0, model)
    ts = lux.TrainState(model, ps, st, optim.adam(1e-2), ema=optim.ema(decay))
    x = torch.linspace(-1, 1, 48).reshape(16, 3)
    y = x.sum(1, keepdim=True).sin()
    seen = [map(torch.clone, ts.params)]
    for a, b in zip(leaves(ts.ema_params), leaves(ps), strict=True):
        torch.testing.assert_close(a, b)  # the average of the initial parameters alone
    for _ in range(12):
        ts, _, _ = lux.train_step(
            _mse, (x, y), ts, donate=mode == "donate", compile=mode == "compile"
        )
        seen.append(map(torch.clone, ts.params))
    weights = [(1 - decay) * decay ** (len(seen) - 1 - i) for i in range(len(seen))]
    norm = 1 - decay ** len(seen)
    want = map(lambda *xs: sum(w * x for w, x in zip(weights, xs, strict=True)) / norm, *seen)
    for a, b in zip(leaves(ts.ema_params), leaves(want), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert int(ts.ema_state["count"]) == len(seen)
    out, _ = model(x, ts.ema_params, ts.states)  # evaluate with the averaged parameters
    assert out.shape == (16, 1)
    with pytest.raises(TypeError, match=r"ema must be a lux_torch\.optim\.GradientTransformation"):
        lux.TrainState(model, ps, st, optim.adam(1e-2), ema=0.99)  # type: ignore[arg-type]


# ------------------------------------------------------------- the descriptor and step


def test_step_picks_the_fused_kernel_from_the_descriptor_only() -> None:
    ps = _params(torch.float32)
    opt = optim.adam(0.01)
    assert opt.descriptor == optim.FusedAdam(False, 0.01, (0.9, 0.999), 1e-8, 0.0, 1)
    assert optim.adamw(0.01).descriptor.decoupled  # type: ignore[union-attr]
    schedule = S.constant_schedule(0.01)  # a schedule: evaluated by the fused path
    assert optim.adam(schedule).descriptor == optim.FusedAdam(
        False, schedule, (0.9, 0.999), 1e-8, 0.0, 1
    )
    injected = optim.inject_hyperparams(optim.adam)(lr=0.01)  # tensors in the state: update
    assert injected.descriptor is None
    state = opt.init(ps)
    donated = map(torch.clone, ps)
    new_ps, _ = optim.step(opt, map(_grad, donated), state, donated, donate=True)
    assert leaves(new_ps)[0] is leaves(donated)[0]  # the kernel ran in place
    plain = opt._replace()  # the same maths, no fast path
    assert plain.descriptor is None and optim.described(opt, None).descriptor is None
    init, update = opt  # still optax's pair
    assert (init, update) == (opt.init, opt.update) and len(opt) == 2
    kept = map(torch.clone, ps)
    new_plain, _ = optim.step(plain, map(_grad, kept), plain.init(ps), kept, donate=True)
    assert leaves(new_plain)[0] is not leaves(kept)[0]
    for a, b in zip(leaves(new_ps), leaves(new_plain), strict=True):
        torch.testing.assert_close(a, b)
    calls: list[int] = []

    def reduce(grads: Any) -> Any:
        calls.append(1)
        return map(lambda g: 2 * g, grads)

    wrapped = optim.described(opt, optim.Reduced(reduce, opt))
    got, _ = optim.step(wrapped, map(_grad, ps), opt.init(ps), ps)
    want, _ = optim.step(opt, map(lambda p: 2 * _grad(p), ps), opt.init(ps), ps)
    assert calls == [1]
    for a, b in zip(leaves(got), leaves(want), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("donate", [False, True])
def test_step_refuses_mis_shaped_grads_instead_of_running_the_kernel(donate: bool) -> None:
    # the fused kernel would read a (1,) gradient past its end: step takes the checked path
    ps = {"w": torch.ones(3), "b": torch.zeros(2)}
    opt = optim.adam(0.1)
    with pytest.raises(ValueError, match=r"grads 'w' has shape \(1,\), but the"):
        optim.step(opt, {"w": torch.ones(1), "b": torch.ones(2)}, opt.init(ps), ps, donate=donate)


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.adam(0.1),
        lambda: optim.adam(optim.constant_schedule(0.1)),
        lambda: optim.sgd(optim.linear_schedule(0.1, 0.01, 10), momentum=0.9),
        lambda: optim.lamb(0.1, weight_decay=0.1),
    ],
    ids=["adam", "adam-schedule", "sgd-schedule", "lamb"],
)
def test_traced_updates_keep_a_0dim_leafs_dtype(make: Callable[[], Any]) -> None:
    # a traced float64 factor (bias correction, schedule) times a 0-dim float32 leaf promoted
    # it to float64 under vmap, and the next update failed
    opt = make()
    ps = {"w": torch.ones(3), "g": torch.tensor(0.5)}
    grads = {"w": torch.full((3,), 0.3), "g": torch.tensor(0.2)}
    eager, _ = opt.update(grads, opt.init(ps), ps)

    def stack(t: Any) -> Any:
        return map(lambda a: torch.stack([a, a]), t)

    state = stack(opt.init(ps))
    for _ in range(2):  # the second update reads the first one's state
        vmapped, state = torch.func.vmap(opt.update)(stack(grads), state, stack(ps))
    assert {k: v.dtype for k, v in vmapped.items()} == {"w": torch.float32, "g": torch.float32}
    first, _ = torch.func.vmap(opt.update)(stack(grads), stack(opt.init(ps)), stack(ps))
    for k in ps:
        torch.testing.assert_close(first[k][0], eager[k])


# ------------------------------------------------------------------- leaf-list kernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["mul", "mul_", "div", "add", "add_"])
def test_foreach_python_scalars_give_the_per_leaf_results_bitwise(
    name: str, dtype: torch.dtype
) -> None:
    # the leaf-list ops hand a Python scalar to torch's kernels as a 0-dim tensor (a list
    # of them for add), a faster overload: the results must be those of the per-leaf op
    # with the Python number, bit for bit, in the leaves' dtypes
    from lux_torch.optim import foreach as fe

    gen = torch.Generator().manual_seed(0)
    shapes: list[tuple[int, ...]] = [(32, 2), (32,), (), (1, 3)]
    x = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    for scalar in (0.1, 1e-8 * (1 - 0.9**3), -0.999):
        fn = getattr(fe, name)
        got = fn([t.clone() for t in x], scalar)
        want = [getattr(torch, name.rstrip("_"))(t, scalar) for t in x]
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype == dtype
            assert torch.equal(a, b)
        # a Constant (its tensors made once, for a fixed hyperparameter) gives the same
        got = fn([t.clone() for t in x], fe.Constant(scalar))
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype == dtype
            assert torch.equal(a, b)
    mixed = [torch.ones(2), torch.ones(2, dtype=torch.float64)]  # one op per dtype: kept
    for addend in (0.1, fe.Constant(0.1)):
        for a, b in zip(fe.add(mixed, addend), [t + 0.1 for t in mixed], strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)


def test_foreach_constant_falls_back_to_its_value_where_it_has_no_tensor() -> None:
    # a Constant's tensors are CPU float32/float64: other dtypes, a traced call and a
    # Constant built in inference mode (its tensors must still be saved for backward) work
    from lux_torch.optim import foreach as fe

    x = [torch.linspace(-1, 1, 5, dtype=torch.bfloat16), torch.ones((), dtype=torch.bfloat16)]
    for a, t in zip(fe.mul(x, fe.Constant(0.3)), x, strict=True):
        assert a.dtype == torch.bfloat16 and torch.equal(a, t * 0.3)
    with torch.inference_mode():
        c = fe.Constant(0.5)
    assert repr(c) == "Constant(0.5)"
    injected = torch.tensor(0.9)  # inject_hyperparams' values stay tensors
    assert fe.Constant.of(injected) is injected and repr(fe.Constant.of(2)) == "Constant(2.0)"
    w = torch.ones(3, requires_grad=True)
    (out,) = fe.mul([w * 2], c)  # records the product: the factor is saved for backward
    (grad,) = torch.autograd.grad((out * w).sum(), w)
    assert torch.equal(grad, torch.full((3,), 2.0))
    compiled = torch.compile(lambda v: fe.add(fe.mul(v, c), c), fullgraph=True)
    (y,) = compiled([torch.arange(3.0)])
    assert torch.equal(y, torch.arange(3.0) * 0.5 + 0.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.sgd(optim.constant_schedule(0.1), weight_decay=0.1),
        lambda: optim.sgd(optim.constant_schedule(0.1), momentum=0.9, weight_decay=0.1),
        lambda: optim.sgd(optim.constant_schedule(0.1), momentum=0.9, nesterov=True),
        lambda: optim.adam(optim.cosine_decay_schedule(0.1, 20)),
        lambda: optim.nadam(weight_decay=0.1),
        lambda: optim.chain(optim.clip(0.5), optim.radam()),
    ],
    ids=["sgd", "sgd-momentum", "sgd-nesterov", "adam-schedule", "nadam", "clip-radam"],
)
def test_step_on_leaves_equals_update_and_apply_bitwise(make: Callable[[], Any]) -> None:
    # step runs a chain of leaf-list members on the leaves it flattened once and adds the
    # updates into their own temporaries: the result is update + apply_updates, bit for
    # bit, and neither ps nor grads nor the state is written
    from lux_torch.optim._base import LeafUpdate

    opt = optim.described(make(), None)  # without its fused kernel (sgd's, adam's)
    assert isinstance(opt.update, LeafUpdate)  # every member runs on leaf lists
    ps_a = ps_b = _params(torch.float32)
    st_a = st_b = opt.init(ps_a)
    for i in range(5):
        grads = map(lambda p, i=i: _grad(p, i), ps_a)
        given = (ps_a, grads, st_a)
        kept = [t.clone() for t in leaves(given)]
        ps_a, st_a = optim.step(opt, grads, st_a, ps_a)
        for a, b in zip(leaves(given), kept, strict=True):
            assert torch.equal(a, b)
        updates, st_b = opt.update(grads, st_b, ps_b)
        ps_b = optim.apply_updates(ps_b, updates)
        for a, b in zip(leaves((ps_a, st_a)), leaves((ps_b, st_b)), strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)


def test_hoisted_factors_are_reductions_inductor_does_not_unroll() -> None:
    # a per-step factor (Adam's bias corrections) must reach Inductor as a reduction it
    # materializes once per step: one it unrolls into pointwise code is inlined into
    # every vector iteration of the update kernels (a size-1 sum was, under torch 2.13,
    # and made the compiled medium-MLP Adam step 1.15x slower)
    import torch._inductor.config as config
    from torch.fx.experimental.proxy_tensor import make_fx

    from lux_torch.optim._base import _HOIST, hoist

    assert config.unroll_reductions_threshold < _HOIST
    count = torch.tensor(7, dtype=torch.int64)
    graph = make_fx(lambda c: hoist(1.0 - 0.999 ** c.to(torch.float64)))(count)
    (reduction,) = [n for n in graph.graph.nodes if n.target == torch.ops.aten.amax.default]
    assert reduction.args[0].meta["val"].numel() == _HOIST
    assert torch.equal(graph(count), 1.0 - 0.999 ** count.to(torch.float64))
    assert hoist(0.5) == 0.5  # eager values pass through
