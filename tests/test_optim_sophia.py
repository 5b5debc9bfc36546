"""Sophia against optax's rule written here (exact on a diagonal Hessian), Hutchinson's
estimator, and the obj_fn API."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lux_torch import optim
from lux_torch.tree import leaves, stack

C = torch.tensor([1.0, 4.0, 0.5, 2.0], dtype=torch.float64)
D = torch.tensor([0.3, 0.1, 1.0, 0.0], dtype=torch.float64)


def _loss(ps: dict[str, torch.Tensor]) -> torch.Tensor:
    # a diagonal Hessian c + 3 d p^2: Hutchinson's u * (H u) is exact (u^2 = 1)
    out: torch.Tensor = sum(  # type: ignore[assignment]
        (C * p**2 / 2 + D * p**4 / 4).sum() for p in ps.values()
    )
    return out


def _params() -> dict[str, torch.Tensor]:
    return {
        "a": torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64),
        "b": torch.tensor([-1.0, 0.2, 2.0, -0.7], dtype=torch.float64),
    }


# without clipping the first step divides by eps (no Hessian estimate yet): a large eps
@pytest.mark.parametrize(("clip", "eps"), [(1.0, 1e-8), (0.05, 1e-8), (None, 1.0)])
def test_matches_optax_rule_on_a_diagonal_hessian(clip: float | None, eps: float) -> None:
    lr, b1, b2, gamma, wd, k = 0.05, 0.9, 0.95, 0.1, 1e-2, 3
    ps = _params()
    ref = {n: p.clone() for n, p in ps.items()}
    m = {n: torch.zeros_like(p) for n, p in ps.items()}
    h = {n: torch.zeros_like(p) for n, p in ps.items()}
    opt = optim.sophia(
        lr,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=wd,
        gamma=gamma,
        clip_threshold=clip,
        update_interval=k,
    )
    state = opt.init(ps)
    for t in range(1, 61):
        updates, state = opt.update(torch.func.grad(_loss)(ps), state, ps, obj_fn=_loss)
        ps = optim.apply_updates(ps, updates)
        grads = torch.func.grad(_loss)(ref)
        for n, p in ref.items():
            m[n] = b1 * m[n] + (1 - b1) * grads[n]
            u = (m[n] / (1 - b1**t)) / torch.clamp(gamma * h[n], min=eps)
            if clip is not None:
                u = u.clamp(-clip, clip)
            if (t - 1) % k == 0:  # after the direction, as optax
                h[n] = b2 * h[n] + (1 - b2) * (C + 3 * D * p**2)
            ref[n] = p - lr * (u + wd * p)
    for n in ps:
        torch.testing.assert_close(ps[n], ref[n], rtol=1e-12, atol=1e-12)
    if clip == 1.0:
        assert float(_loss(ps)) < float(_loss(_params())) / 10


def test_hutchinson_is_unbiased() -> None:
    a = torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hess = a @ a.T + torch.eye(5, dtype=torch.float64)

    def quad(ps: dict[str, torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = 0.5 * ps["x"] @ hess @ ps["x"]
        return out

    est = optim.hutchinson_diag_hessian(seed=3)
    ps = {"x": torch.zeros(5, dtype=torch.float64)}
    state = est.init(ps)
    draws = []
    for _ in range(4000):
        d, state = est.update(ps, state, ps, obj_fn=quad)
        draws.append(d["x"])
    mean = torch.stack(draws).mean(0)
    spread = torch.stack(draws).std(0) / 4000**0.5
    assert bool(((mean - hess.diagonal()).abs() < 5 * spread + 1e-12).all()), (
        mean,
        hess.diagonal(),
    )
    assert not torch.equal(draws[0], draws[1])  # the key advances


def test_vmaps_and_estimates_only_on_its_steps() -> None:
    calls: list[int] = []

    def counting(ps: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(1)
        return _loss(ps)

    opt = optim.sophia(0.05, update_interval=4)
    ps = _params()
    state = opt.init(ps)
    for _ in range(8):
        updates, state = opt.update(torch.func.grad(_loss)(ps), state, ps, obj_fn=counting)
        ps = optim.apply_updates(ps, updates)
    assert len(calls) == 2  # steps 1 and 5: eagerly, only when due

    def step(p: Any, s: Any) -> tuple[Any, Any]:
        u, s = opt.update(torch.func.grad(_loss)(p), s, p, obj_fn=_loss)
        return optim.apply_updates(p, u), s

    members = [{n: t + 0.1 * i for n, t in _params().items()} for i in range(3)]
    states = [opt.init(p) for p in members]
    ps_b = {n: torch.stack([m[n] for m in members]) for n in members[0]}
    st_b = stack(states)
    for _ in range(5):
        ps_b, st_b = torch.func.vmap(step)(ps_b, st_b)
    for i, (p, s) in enumerate(zip(members, states, strict=True)):
        for _ in range(5):
            p, s = step(p, s)
        for n in p:
            torch.testing.assert_close(ps_b[n][i], p[n], rtol=1e-12, atol=1e-12)


def test_pure_and_float32() -> None:
    opt = optim.sophia(0.05, update_interval=2)
    ps, ps32 = _params(), {n: p.float() for n, p in _params().items()}
    state, state32 = opt.init(ps), opt.init(ps32)

    def loss32(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return _loss({n: t.double() for n, t in p.items()}).float()

    for _ in range(5):
        grads = torch.func.grad(_loss)(ps)
        snapshot = [t.clone() for t in leaves((ps, grads, state))]
        updates, new_state = opt.update(grads, state, ps, obj_fn=_loss)
        for before, after in zip(snapshot, leaves((ps, grads, state)), strict=True):
            assert torch.equal(before, after)
        ps, state = optim.apply_updates(ps, updates), new_state
        u32, state32 = opt.update(torch.func.grad(loss32)(ps32), state32, ps32, obj_fn=loss32)
        ps32 = optim.apply_updates(ps32, u32)
    for n in ps:
        assert ps32[n].dtype is torch.float32
        torch.testing.assert_close(ps32[n].double(), ps[n], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_update_compiles_fullgraph() -> None:
    opt = optim.sophia(0.05, update_interval=2)

    def step(p: Any, s: Any) -> tuple[Any, Any]:
        u, s = opt.update(torch.func.grad(_loss)(p), s, p, obj_fn=_loss)
        return optim.apply_updates(p, u), s

    compiled = torch.compile(step, fullgraph=True)
    ps, state = _params(), opt.init(_params())
    cps, cstate = _params(), opt.init(_params())
    for _ in range(4):
        ps, state = step(ps, state)
        cps, cstate = compiled(cps, cstate)
    for a, b in zip(leaves((ps, state)), leaves((cps, cstate)), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_needs_obj_fn_and_checks() -> None:
    opt = optim.sophia()
    ps = _params()
    with pytest.raises(ValueError, match="scale_by_sophia: update needs ps and obj_fn"):
        opt.update(ps, opt.init(ps), ps)
    with pytest.raises(ValueError, match="hutchinson_diag_hessian: update needs ps and obj_fn"):
        est = optim.hutchinson_diag_hessian()
        est.update(ps, est.init(ps), ps)
    bad = {"a": torch.ones(1, dtype=torch.float64), "b": ps["b"]}
    with pytest.raises(ValueError, match=r"grads 'a' has shape \(1,\), but the parameter"):
        opt.update(bad, opt.init(ps), ps, obj_fn=_loss)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: optim.sophia(-1.0), "sophia: lr must be >= 0"),
        (lambda: optim.sophia(b1=1.0), r"b1 must be in \[0, 1\)"),
        (lambda: optim.sophia(b2=-0.1), r"b2 must be in \[0, 1\)"),
        (lambda: optim.sophia(eps=0.0), "eps must be > 0"),
        (lambda: optim.sophia(gamma=-1.0), "gamma must be >= 0"),
        (lambda: optim.sophia(clip_threshold=0.0), "clip_threshold must be > 0"),
        (lambda: optim.sophia(update_interval=0), "update_interval must be an int >= 1"),
        (lambda: optim.sophia(weight_decay=-1.0), "weight_decay must be >= 0"),
    ],
)
def test_bad_configuration(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
