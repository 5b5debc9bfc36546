"""The contract every optimizer of adafactor/muon/schedule_free/lbfgs keeps: pure, state a
tree of tensors that vmaps as an ensemble, float32 and float64, compile(fullgraph), and
mis-shaped gradients refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from lux_torch import optim
from lux_torch.tree import leaves, stack
from lux_torch.tree import map as tree_map

MAKERS: dict[str, Callable[[], optim.GradientTransformation]] = {
    "adafactor": lambda: optim.adafactor(),
    "adafactor_full": lambda: optim.adafactor(
        0.1, min_dim_size_to_factor=2, momentum=0.9, weight_decay_rate=1e-3, relative_step=True
    ),
    "muon": lambda: optim.muon(0.02),
    "muon_bf16_adamw_rms": lambda: optim.muon(
        0.02, ns_dtype=torch.bfloat16, adjust_lr_fn="match_rms_adamw", nesterov=False
    ),
    "schedule_free_sgd": lambda: optim.schedule_free_sgd(0.1, warmup_steps=2, weight_decay=0.01),
    "schedule_free_adamw": lambda: optim.schedule_free_adamw(0.01, warmup_steps=2, r=1.0),
    "lbfgs": lambda: optim.lbfgs(0.1, memory_size=2, line_search=None),
}


def _tol(name: str, exact: float) -> float:
    """bfloat16 Newton-Schulz: batched (vmap) and compiled bfloat16 matmuls round differently
    from eager ones, so those agree to bfloat16's resolution only."""
    return 3e-3 if "bf16" in name else exact


def _params(dtype: torch.dtype = torch.float64) -> dict[str, Any]:
    g = torch.Generator().manual_seed(4)
    return {
        "layer": {
            "weight": torch.randn(4, 3, generator=g, dtype=dtype),
            "bias": torch.randn(4, generator=g, dtype=dtype),
        },
        "head": torch.randn(2, 4, generator=g, dtype=dtype),
    }


def _grad(p: torch.Tensor) -> torch.Tensor:
    return torch.sin(3.0 * p) + 0.1 * p


def _step(opt: optim.GradientTransformation, ps: Any, state: Any) -> tuple[Any, Any]:
    updates, state = opt.update(tree_map(_grad, ps), state, ps)
    return optim.apply_updates(ps, updates), state


@pytest.mark.parametrize("name", MAKERS)
def test_inputs_not_mutated(name: str) -> None:
    opt = MAKERS[name]()
    ps = _params()
    state = opt.init(ps)
    for _ in range(3):
        grads = tree_map(_grad, ps)
        snapshot = [t.clone() for t in leaves((ps, grads, state))]
        updates, new_state = opt.update(grads, state, ps)
        new_ps = optim.apply_updates(ps, updates)
        for before, after in zip(snapshot, leaves((ps, grads, state)), strict=True):
            assert torch.equal(before, after)
        ps, state = new_ps, new_state


@pytest.mark.parametrize("name", MAKERS)
def test_state_is_a_tree_of_tensors_and_vmaps(name: str) -> None:
    opt = MAKERS[name]()
    members = [tree_map(lambda p, i=i: p + 0.1 * i, _params()) for i in range(3)]
    states = [opt.init(ps) for ps in members]
    assert all(isinstance(t, torch.Tensor) for t in leaves(states[0]))
    ps_b, st_b = stack(members), stack(states)
    for _ in range(3):
        ps_b, st_b = torch.func.vmap(lambda p, s: _step(opt, p, s))(ps_b, st_b)
    for i, (ps, st) in enumerate(zip(members, states, strict=True)):
        for _ in range(3):
            ps, st = _step(opt, ps, st)
        for a, b in zip(leaves((ps, st)), leaves((ps_b, st_b)), strict=True):
            torch.testing.assert_close(a, b[i], rtol=_tol(name, 1e-10), atol=_tol(name, 1e-10))


@pytest.mark.parametrize("name", MAKERS)
def test_float32_follows_float64(name: str) -> None:
    opt = MAKERS[name]()
    ps64, ps32 = _params(), _params(torch.float32)
    st64, st32 = opt.init(ps64), opt.init(ps32)
    for _ in range(5):
        ps64, st64 = _step(opt, ps64, st64)
        ps32, st32 = _step(opt, ps32, st32)
    # adafactor without lr steps by the parameters' RMS along g / sqrt(v) (sign-like at the
    # first step), which amplifies float32 rounding of small gradients
    tol = 2e-2 if "bf16" in name else 2e-3 if name == "adafactor" else 1e-4
    for a, b in zip(leaves(ps64), leaves(ps32), strict=True):
        assert b.dtype is torch.float32
        torch.testing.assert_close(b.double(), a, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", MAKERS)
def test_mis_shaped_gradients_are_refused(name: str) -> None:
    opt = MAKERS[name]()
    ps = _params()
    grads = tree_map(_grad, ps)
    grads["layer"]["bias"] = torch.ones(1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"'layer.bias' has shape \(1,\), but the (parameter|upd)"):
        opt.update(grads, opt.init(ps), ps)


@pytest.mark.slow
@pytest.mark.parametrize("name", MAKERS)
def test_update_compiles_fullgraph(name: str) -> None:
    opt = MAKERS[name]()
    compiled = torch.compile(lambda p, s: _step(opt, p, s), fullgraph=True)
    ps, state = _params(), opt.init(_params())
    cps, cstate = _params(), opt.init(_params())
    for _ in range(3):
        ps, state = _step(opt, ps, state)
        cps, cstate = compiled(cps, cstate)
    for a, b in zip(leaves((ps, state)), leaves((cps, cstate)), strict=True):
        torch.testing.assert_close(b, a, rtol=_tol(name, 1e-9), atol=_tol(name, 1e-9))
