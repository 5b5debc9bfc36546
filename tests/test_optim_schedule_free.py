"""Schedule-free SGD/AdamW against the paper's Algorithm 1 and optax's formulas, written
here; convergence on a quadratic."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from lux_torch import optim
from lux_torch.optim.primal_averaging import scale_by_debiased_rms, warmup_lr

STEPS = 60
CURVATURE = torch.tensor([1.0, 3.0, 10.0, 0.5], dtype=torch.float64)


def _params(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "w": torch.randn(2, 4, generator=g, dtype=dtype),
        "b": torch.randn(4, generator=g, dtype=dtype),
    }


def _grad(p: torch.Tensor, i: int) -> torch.Tensor:
    return CURVATURE.to(p.dtype) * p + 0.3 * torch.sin(p + i)


def _algorithm_1(
    ps: dict[str, torch.Tensor],
    adam: bool,
    lr: float,
    warmup: int,
    b1: float,
    wd: float,
    power: float,
    r: float,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Defazio et al. 2024, Algorithm 1 (with the facebookresearch reference's warmup,
    weights t^r max(lr)^power and AdamW's debiased second moment): returns (y, x)."""
    x = {k: p.clone() for k, p in ps.items()}
    z = {k: p.clone() for k, p in ps.items()}
    v = {k: torch.zeros_like(p) for k, p in ps.items()}
    lr_max, weight_sum = 0.0, 0.0
    for t in range(1, STEPS + 1):
        lr_t = lr * min(1.0, t / warmup) if warmup else lr
        lr_max = max(lr_max, lr_t)
        weight = t**r * lr_max**power
        weight_sum += weight
        c = weight / weight_sum if weight_sum else 0.0
        for k in ps:
            yk = (1 - b1) * z[k] + b1 * x[k]
            g = _grad(yk, t - 1)
            if adam:
                v[k] = b2 * v[k] + (1 - b2) * g * g
                g = g / (torch.sqrt(v[k] / (1 - b2**t)) + eps)
            g = g + wd * yk
            z[k] = z[k] - lr_t * g
            x[k] = (1 - c) * x[k] + c * z[k]
    y = {k: (1 - b1) * z[k] + b1 * x[k] for k in ps}
    return y, x


CASES = [
    (False, {"lr": 0.1, "warmup": 0, "b1": 0.9, "wd": 0.0, "power": 2.0, "r": 0.0}),
    (False, {"lr": 0.2, "warmup": 10, "b1": 0.8, "wd": 0.01, "power": 1.0, "r": 0.5}),
    (True, {"lr": 0.05, "warmup": 0, "b1": 0.9, "wd": 0.0, "power": 2.0, "r": 0.0}),
    (True, {"lr": 0.05, "warmup": 7, "b1": 0.95, "wd": 0.1, "power": 2.0, "r": 1.0}),
]


@pytest.mark.parametrize(("adam", "h"), CASES)
def test_matches_algorithm_1(adam: bool, h: dict[str, Any]) -> None:
    ps = _params()
    y, x = _algorithm_1(ps, adam, **h)
    common = {
        "warmup_steps": h["warmup"],
        "b1": h["b1"],
        "weight_decay": h["wd"],
        "weight_lr_power": h["power"],
        "r": h["r"],
    }
    opt = (
        optim.schedule_free_adamw(h["lr"], **common)
        if adam
        else optim.schedule_free_sgd(h["lr"], **common)
    )
    state = opt.init(ps)
    for i in range(STEPS):
        updates, state = opt.update({k: _grad(p, i) for k, p in ps.items()}, state, ps)
        ps = optim.apply_updates(ps, updates)
    eval_ps = optim.schedule_free_eval_params(state, ps)
    for k in ps:
        torch.testing.assert_close(ps[k], y[k], rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(eval_ps[k], x[k], rtol=1e-10, atol=1e-10)


def test_matches_optax_formulas_with_a_base_optimizer() -> None:
    # optax.contrib.schedule_free: x = (y - (1 - b1) z) / b1 recomputed each step
    ps = _params()
    b1, lr = 0.9, 0.05
    base = optim.chain(optim.scale_by_adam((0.5, 0.99)), optim.scale_by_learning_rate(lr))
    opt = optim.schedule_free(base, lr, b1=b1)
    ref_base = optim.chain(optim.scale_by_adam((0.5, 0.99)), optim.scale_by_learning_rate(lr))
    y = {k: p.clone() for k, p in ps.items()}
    z = {k: p.clone() for k, p in ps.items()}
    ref_state = ref_base.init(ps)
    weight_sum = 0.0
    state = opt.init(ps)
    for i in range(STEPS):
        grads = {k: _grad(p, i) for k, p in y.items()}
        weight_sum += lr**2.0
        ck = lr**2.0 / weight_sum
        u, ref_state = ref_base.update(grads, ref_state, y)
        new_z = {k: z[k] + u[k] for k in z}
        prev_x = {k: (y[k] - (1 - b1) * z[k]) / b1 for k in y}
        x = {k: (1 - ck) * prev_x[k] + ck * new_z[k] for k in y}
        y, z = {k: b1 * x[k] + (1 - b1) * new_z[k] for k in y}, new_z
        updates, state = opt.update({k: _grad(p, i) for k, p in ps.items()}, state, ps)
        ps = optim.apply_updates(ps, updates)
    for k in ps:
        torch.testing.assert_close(ps[k], y[k], rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(state["z"][k], z[k], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("make", "tol"),
    [
        (lambda: optim.schedule_free_sgd(0.15, warmup_steps=10), 1e-9),
        # constant-lr Adam hovers at the lr's scale around the optimum; the average x is 5e5x lower
        (lambda: optim.schedule_free_adamw(0.02, warmup_steps=10), 1e-3),
    ],
)
def test_converges_on_a_quadratic(make: Any, tol: float, dtype: torch.dtype) -> None:
    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return 0.5 * (CURVATURE.to(dtype) * p["w"] ** 2).sum()

    ps = {"w": torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=dtype)}
    opt = make()
    state = opt.init(ps)
    for _ in range(2000):
        updates, state = opt.update(torch.func.grad(loss)(ps), state, ps)
        ps = optim.apply_updates(ps, updates)
    final = float(loss(optim.schedule_free_eval_params(state, ps)))
    assert final < (tol if dtype is torch.float64 else max(tol, 1e-6)), final
    assert ps["w"].dtype is dtype


def test_state_and_errors() -> None:
    ps = _params()
    opt = optim.schedule_free_sgd(0.1)
    state = opt.init(ps)
    assert sorted(state) == ["b1", "base", "count", "max_lr", "weight_sum", "z"]
    assert state["z"]["w"] is not ps["w"] and torch.equal(state["z"]["w"], ps["w"])
    with pytest.raises(ValueError, match="schedule_free: update needs ps"):
        opt.update(ps, state)
    with pytest.raises(ValueError, match="schedule_free_eval_params: state must be the state of"):
        optim.schedule_free_eval_params((), ps)
    with pytest.raises(ValueError, match=r"state z 'b' has shape \(4,\), but the parameter has"):
        optim.schedule_free_eval_params(
            state, {"w": ps["w"], "b": torch.ones(5, dtype=torch.float64)}
        )
    # the warmup's first step is lr / warmup_steps (the reference's (k + 1) / warmup)
    sched = warmup_lr(1.0, 4)
    assert callable(sched) and [float(sched(torch.tensor(k))) for k in range(5)] == [
        0.25,
        0.5,
        0.75,
        1.0,
        1.0,
    ]
    assert math.isclose(float(state["b1"]), 0.9)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: optim.schedule_free_sgd(-1.0), "schedule_free_sgd: lr must be >= 0"),
        (lambda: optim.schedule_free_adamw(b1=0.0), r"schedule_free: b1 must be in \(0, 1\)"),
        (lambda: optim.schedule_free_adamw(b1=1.0), r"b1 must be in \[0, 1\)"),
        (lambda: optim.schedule_free_adamw(b2=1.0), r"b2 must be in \[0, 1\)"),
        (lambda: optim.schedule_free_sgd(warmup_steps=-1), "warmup_steps must be an int >= 0"),
        (lambda: optim.schedule_free_sgd(weight_lr_power=-1.0), "weight_lr_power must be >= 0"),
        (lambda: optim.schedule_free_sgd(r=-1.0), "r must be >= 0"),
        (lambda: optim.schedule_free_adamw(eps=-1.0), "eps must be >= 0"),
    ],
)
def test_bad_configuration(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_refuses_mis_shaped_grads_and_state_with_any_base() -> None:
    # a tree-level base that checks nothing: schedule_free checks itself
    def passthrough(grads: Any, state: Any, ps: Any = None) -> tuple[Any, Any]:
        return grads, state

    opt = optim.schedule_free(optim.GradientTransformation(lambda ps: (), passthrough), 0.1)
    ps = _params()
    state = opt.init(ps)
    bad = {"w": torch.ones(2, 4, dtype=torch.float64), "b": torch.ones(1, dtype=torch.float64)}
    with pytest.raises(ValueError, match=r"grads 'b' has shape \(1,\), but the parameter"):
        opt.update(bad, state, ps)
    other = opt.init({"w": ps["w"], "b": torch.ones(1, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"state z 'b' has shape \(1,\), but the parameter"):
        opt.update({k: _grad(p, 0) for k, p in ps.items()}, other, ps)
    debiased = scale_by_debiased_rms()
    with pytest.raises(ValueError, match=r"grads 'b' has shape \(1,\), but the parameter"):
        debiased.update(bad, debiased.init(ps))
    with pytest.raises(ValueError, match="schedule_free: lr must be >= 0"):
        optim.schedule_free(optim.GradientTransformation(lambda ps: (), passthrough), -1.0)
