"""Adafactor: torch.optim.Adafactor parity and an optax-semantics reference written here."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from lux_torch import optim
from lux_torch.optim.factored import factored_dims

STEPS = 60


def _params(dtype: torch.dtype, cube: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ps = {
        "w": torch.randn(6, 4, generator=g, dtype=dtype),
        "v": torch.randn(3, 7, generator=g, dtype=dtype),
        "b": torch.randn(4, generator=g, dtype=dtype),
    }
    if cube:
        ps["c"] = torch.randn(2, 5, 3, generator=g, dtype=dtype)
    return ps


def _grad(p: torch.Tensor, i: int) -> torch.Tensor:
    return torch.sin(3.0 * p + i) + 0.1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("d", [1.0, 2.0])
def test_matches_torch_adafactor(dtype: torch.dtype, d: float) -> None:
    ps = _params(dtype)
    params = [torch.nn.Parameter(p.clone()) for p in ps.values()]
    reference = torch.optim.Adafactor(params, lr=1e-2, d=d)
    opt = optim.adafactor(1e-2, relative_step=True, min_dim_size_to_factor=1, clipping_threshold=d)
    state = opt.init(ps)
    for i in range(STEPS):
        updates, state = opt.update({k: _grad(p, i) for k, p in ps.items()}, state, ps)
        ps = optim.apply_updates(ps, updates)
        for p in params:
            p.grad = _grad(p.detach(), i)
        reference.step()
    tol = 1e-12 if dtype is torch.float64 else 1e-5
    for ours, theirs in zip(ps.values(), params, strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=tol, atol=tol)


def _reference(
    ps: dict[str, torch.Tensor],
    steps: int,
    lr: float | None,
    momentum: float | None,
    weight_decay_rate: float | None,
    min_dim: int,
    clip: float | None,
    scale_by_param: bool,
    decay_rate: float = 0.8,
    eps: float = 1e-30,
    offset: int = 0,
) -> dict[str, torch.Tensor]:
    """optax.adafactor written out per leaf (optax/_src/factorized.py and alias.py)."""
    ps = {k: p.clone() for k, p in ps.items()}
    v_row: dict[str, Any] = {}
    v_col: dict[str, Any] = {}
    v: dict[str, Any] = {}
    mom: dict[str, torch.Tensor] = {}
    for k, p in ps.items():
        shape = list(p.shape)
        if len(shape) >= 2 and sorted(shape)[-2] >= min_dim:
            order = sorted(range(len(shape)), key=lambda i: shape[i])
            d1, d0 = order[-2], order[-1]
            v_row[k] = torch.zeros([s for i, s in enumerate(shape) if i != d0], dtype=p.dtype)
            v_col[k] = torch.zeros([s for i, s in enumerate(shape) if i != d1], dtype=p.dtype)
        else:
            v[k] = torch.zeros_like(p)
        mom[k] = torch.zeros_like(p)
    for step in range(steps):
        beta = 1.0 - (step + 1 - offset) ** (-decay_rate)
        for k, p in ps.items():
            g = _grad(p, step)
            g2 = g * g + eps
            if k in v:
                v[k] = beta * v[k] + (1 - beta) * g2
                u = g / torch.sqrt(v[k])
            else:
                shape = list(p.shape)
                order = sorted(range(len(shape)), key=lambda i: shape[i])
                d1, d0 = order[-2], order[-1]
                v_row[k] = beta * v_row[k] + (1 - beta) * g2.mean(d0)
                v_col[k] = beta * v_col[k] + (1 - beta) * g2.mean(d1)
                rd1 = d1 - 1 if d1 > d0 else d1
                row = (v_row[k] / v_row[k].mean(rd1, keepdim=True)) ** -0.5
                u = g * row.unsqueeze(d0) * (v_col[k] ** -0.5).unsqueeze(d1)
            if clip is not None:
                u = u / max(1.0, float(torch.sqrt(torch.mean(u * u))) / clip)
            if lr is not None:
                u = u * lr
            if scale_by_param:
                u = u * max(float(torch.sqrt(torch.mean(p * p))), 1e-3)
            if momentum is not None:
                mom[k] = momentum * mom[k] + (1 - momentum) * u
                u = mom[k]
            if weight_decay_rate is not None:
                u = u + weight_decay_rate * p
            ps[k] = p - u
    return ps


OPTIONS = [
    # lr None: steps of the parameters' own RMS, which the parameters outgrow: few steps
    {
        "lr": None,
        "momentum": None,
        "weight_decay_rate": None,
        "min_dim": 128,
        "clip": 1.0,
        "scale_by_param": True,
        "steps": 4,
    },
    {
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay_rate": 1e-3,
        "min_dim": 2,
        "clip": 1.0,
        "scale_by_param": True,
    },
    {
        "lr": 0.01,
        "momentum": None,
        "weight_decay_rate": None,
        "min_dim": 3,
        "clip": None,
        "scale_by_param": False,
    },
]


@pytest.mark.parametrize("options", OPTIONS)
def test_matches_the_optax_reference(options: dict[str, Any]) -> None:
    ps = _params(torch.float64, cube=True)
    options = dict(options)
    steps = options.pop("steps", STEPS)
    expected = _reference(ps, steps, **options)
    opt = optim.adafactor(
        options["lr"],
        min_dim_size_to_factor=options["min_dim"],
        clipping_threshold=options["clip"],
        momentum=options["momentum"],
        weight_decay_rate=options["weight_decay_rate"],
        multiply_by_parameter_scale=options["scale_by_param"],
    )
    state = opt.init(ps)
    for i in range(steps):
        updates, state = opt.update({k: _grad(p, i) for k, p in ps.items()}, state, ps)
        ps = optim.apply_updates(ps, updates)
    for k in ps:
        torch.testing.assert_close(ps[k], expected[k], rtol=1e-12, atol=1e-12)


def test_decay_schedule_offset_and_custom_fn() -> None:
    ps = _params(torch.float64)
    expected = _reference(ps, 10, 0.1, None, None, 1, 1.0, True, decay_rate=0.5, offset=0)
    opt = optim.adafactor(0.1, min_dim_size_to_factor=1, decay_rate=0.5)
    state = opt.init(ps)
    for i in range(10):
        updates, state = opt.update({k: _grad(p, i) for k, p in ps.items()}, state, ps)
        ps = optim.apply_updates(ps, updates)
    for k in ps:
        torch.testing.assert_close(ps[k], expected[k], rtol=1e-12, atol=1e-12)
    # a capped decay (Zhai et al.) through decay_rate_fn: beta_t = min(0.5, 1 - t^-0.8)
    calls: list[torch.Tensor] = []

    def capped(t: torch.Tensor, rate: float) -> torch.Tensor:
        calls.append(t)
        return torch.clamp(1.0 - t.to(torch.float64) ** -rate, max=0.5)

    t = optim.scale_by_factored_rms(decay_rate_fn=capped, step_offset=0)
    st = t.init({"b": torch.ones(2)})
    g = {"b": torch.tensor([1.0, 2.0])}
    for _ in range(3):
        u, st = t.update(g, st, {"b": torch.ones(2)})
    assert [int(c) for c in calls] == [1, 2, 3]
    # v = 0.5 v + 0.5 g^2 at the capped steps: u = g / sqrt(v) -> 1
    torch.testing.assert_close(u["b"], torch.ones(2), rtol=1e-6, atol=1e-6)


def test_factored_state_is_sublinear() -> None:
    ps = {"w": torch.zeros(200, 300), "b": torch.zeros(300), "small": torch.zeros(4, 300)}
    state = optim.scale_by_factored_rms().init(ps)
    assert state["v_row"]["w"].shape == (200,) and state["v_col"]["w"].shape == (300,)
    assert state["v"]["w"].shape == (1,)
    assert state["v"]["b"].shape == (300,) and state["v_row"]["b"].shape == (1,)
    assert state["v"]["small"].shape == (4, 300)  # second-largest dim 4 < 128: not factored
    assert factored_dims(torch.Size([5, 2, 9]), True, 2) == (0, 2)
    assert factored_dims(torch.Size([5, 9]), False, 2) is None


def test_block_rms_transforms() -> None:
    u = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([0.1, 0.1])}
    out, _ = optim.clip_by_block_rms(1.0).update(u, ())
    rms = math.sqrt(12.5)
    torch.testing.assert_close(out["a"], u["a"] / rms)
    torch.testing.assert_close(out["b"], u["b"])
    ps = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([2.0, 2.0])}
    out, _ = optim.scale_by_param_block_rms(1e-3).update(u, (), ps)
    torch.testing.assert_close(out["a"], u["a"] * 1e-3)
    torch.testing.assert_close(out["b"], u["b"] * 2.0)
    schedule = optim.relative_step_size(0.3)
    assert [round(float(schedule(torch.tensor(c))), 4) for c in (0, 15, 99)] == [0.3, 0.25, 0.1]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: optim.adafactor(-1.0), "adafactor: lr must be >= 0"),
        (lambda: optim.adafactor(relative_step=True), "relative_step needs lr"),
        (lambda: optim.adafactor(clipping_threshold=0.0), "clipping_threshold must be > 0"),
        (lambda: optim.adafactor(momentum=1.0), r"momentum must be in \[0, 1\)"),
        (lambda: optim.adafactor(weight_decay_rate=-1.0), "weight_decay_rate must be >= 0"),
        (lambda: optim.adafactor(decay_rate=0.0), "decay_rate must be > 0"),
        (lambda: optim.adafactor(eps=0.0), "eps must be > 0"),
        (lambda: optim.adafactor(min_dim_size_to_factor=0), "min_dim_size_to_factor must be"),
        (lambda: optim.adafactor(decay_offset=-1), "step_offset must be"),
        (lambda: optim.clip_by_block_rms(0.0), "clip_by_block_rms: threshold must be > 0"),
        (lambda: optim.scale_by_param_block_rms(-1.0), "min_scale must be >= 0"),
    ],
)
def test_bad_configuration(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_needs_ps_and_a_fitting_state() -> None:
    ps = {"w": torch.ones(3, 4)}
    opt = optim.scale_by_factored_rms(min_dim_size_to_factor=1)
    with pytest.raises(ValueError, match="scale_by_factored_rms: update needs ps"):
        opt.update(ps, opt.init(ps))
    with pytest.raises(ValueError, match="scale_by_param_block_rms: update needs ps"):
        optim.scale_by_param_block_rms().update(ps, ())
    # a state made for a (3, 1) leaf would broadcast against (3, 4) gradients
    other = opt.init({"w": torch.ones(3, 1)})
    with pytest.raises(
        ValueError, match=r"state 'v_row.w' has shape \(1,\), but these gradients need \(3,\)"
    ):
        opt.update(ps, other, ps)


def test_block_transforms_refuse_mis_shaped_updates() -> None:
    ps = {"w": torch.ones(3, 2)}
    bad = {"w": torch.ones(1, 2)}
    with pytest.raises(ValueError, match=r"grads 'w' has shape \(1, 2\), but the parameter"):
        optim.clip_by_block_rms(1.0).update(bad, (), ps)
    with pytest.raises(ValueError, match=r"grads 'w' has shape \(1, 2\), but the parameter"):
        optim.scale_by_param_block_rms().update(bad, (), ps)
    with pytest.raises(ValueError, match="relative_step_size: lr must be >= 0"):
        optim.relative_step_size(-1.0)
