"""Shared checks for the optimizer test modules (test_optim_torch_like, test_optim_adaptive):
a parameter tree, a random gradient sequence, and the properties every optimizer has
(pure, vmappable ensembles, compiles, refuses mis-shaped gradients)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import pytest
import torch

from lux_torch import optim
from lux_torch.tree import leaves, map, stack

Make = Callable[[], optim.GradientTransformation]
STEPS = 60


def params(dtype: torch.dtype, shift: float = 0.0, zero_dim: bool = True) -> dict[str, Any]:
    """Weights, a bias, a 3-d kernel and (``zero_dim``) a 0-dim gain, seeded."""
    gen = torch.Generator().manual_seed(3)
    ps = {
        "layer_1": {
            "weight": torch.randn(5, 3, generator=gen, dtype=dtype) + shift,
            "bias": torch.randn(5, generator=gen, dtype=dtype) + shift,
        },
        "conv": {"weight": torch.randn(2, 3, 2, generator=gen, dtype=dtype) + shift},
        "gain": torch.randn((), generator=gen, dtype=dtype) + shift,
    }
    if not zero_dim:
        del ps["gain"]
    return ps


def grad_at(step: int, p: torch.Tensor) -> torch.Tensor:
    """The gradient at ``step`` for parameter ``p``: random (seeded by step and shape) plus a
    pull towards zero, so that the trajectory depends on the parameters."""
    gen = torch.Generator().manual_seed(1000 + 17 * step + p.numel())
    return torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) + 0.3 * p


def grads_at(step: int, ps: Any) -> Any:
    return map(lambda p: grad_at(step, p), ps)


def run(opt: optim.GradientTransformation, ps: Any, steps: int = STEPS) -> tuple[Any, Any]:
    state = opt.init(ps)
    for k in range(steps):
        updates, state = opt.update(grads_at(k, ps), state, ps)
        ps = optim.apply_updates(ps, updates)
    return ps, state


@contextlib.contextmanager
def torch_scalars_in(dtype: torch.dtype) -> Iterator[None]:
    """torch.optim keeps its scalar state (step, NAdam's mu_product, ASGD's eta and mu) in
    the default dtype: float64 for the float64 comparisons, so both sides round alike."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def max_abs_diff(a: Any, b: Sequence[torch.Tensor]) -> float:
    return max(float((x - y.detach()).abs().max()) for x, y in zip(leaves(a), b, strict=True))


def assert_pure(make: Make) -> None:
    """No input (ps, grads, state) is modified, in value or version."""
    ps = params(torch.float64)
    opt = make()
    state = opt.init(ps)
    for k in range(3):
        inputs = (ps, grads_at(k, ps), state)
        before = [(t.clone(), t._version) for t in leaves(inputs)]
        updates, new_state = opt.update(inputs[1], state, ps)
        ps, state = optim.apply_updates(ps, updates), new_state
        after = leaves(inputs)
        assert all(
            torch.equal(t, c) and t._version == v for t, (c, v) in zip(after, before, strict=True)
        )


def _step(opt: optim.GradientTransformation) -> Callable[..., tuple[Any, Any]]:
    def step(ps: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = opt.update(grads, state, ps)
        return optim.apply_updates(ps, updates), state

    return step


def assert_ensemble_vmaps(make: Make, dtype: torch.dtype, zero_dim: bool) -> None:
    """An ensemble of 3 optimizers in one ``vmap`` equals 3 separate runs; the parameters
    keep their dtype."""
    opt = make()
    members = [params(dtype, shift=0.5 * i, zero_dim=zero_dim) for i in range(3)]
    states = [opt.init(ps) for ps in members]
    assert all(isinstance(t, torch.Tensor) for t in leaves(states[0]))
    step = _step(opt)
    ps_b, st_b = stack(members), stack(states)
    for k in range(4):
        grads = stack([grads_at(k, ps) for ps in members])
        ps_b, st_b = torch.func.vmap(step)(ps_b, st_b, grads)
        members_states = [
            step(ps, st, grads_at(k, ps)) for ps, st in zip(members, states, strict=True)
        ]
        members = [m[0] for m in members_states]
        states = [m[1] for m in members_states]
    for i, (ps, st) in enumerate(zip(members, states, strict=True)):
        for a, b in zip(leaves((ps, st)), leaves((ps_b, st_b)), strict=True):
            torch.testing.assert_close(a, b[i])


def assert_compiles(make: Make, dtype: torch.dtype, zero_dim: bool) -> None:
    """``torch.compile(fullgraph=True)`` of update + apply_updates equals eager."""
    torch._dynamo.reset()
    opt = make()
    step = _step(opt)
    compiled = torch.compile(step, fullgraph=True)
    ps = params(dtype, zero_dim=zero_dim)
    eager = traced = (ps, opt.init(ps))
    for k in range(4):
        eager = step(*eager, grads_at(k, eager[0]))
        traced = compiled(*traced, grads_at(k, traced[0]))
    rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-7, 1e-7)
    for a, b in zip(leaves(traced), leaves(eager), strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def assert_refuses_misshaped(make: Make) -> None:
    """A gradient of shape (1,) for a (5,) parameter is refused, with and without ps."""
    opt = make()
    ps = params(torch.float32)
    bad = grads_at(0, ps)
    bad["layer_1"]["bias"] = torch.ones(1)
    with pytest.raises(ValueError, match=r"grads 'layer_1.bias' has shape \(1,\), but the"):
        opt.update(bad, opt.init(ps), ps)
    try:
        opt.update(grads_at(0, ps), opt.init(ps))
    except ValueError as e:  # an optimizer that needs ps says so
        assert "needs ps" in str(e)
        return
    with pytest.raises(ValueError, match=r"grads 'layer_1.bias' has shape \(1,\), but the"):
        opt.update(bad, opt.init(ps))


def assert_differentiable(make: Make) -> None:
    """``torch.autograd.gradcheck`` of an update (after 7 steps) w.r.t. a gradient leaf."""
    opt = make()
    ps = params(torch.float64)
    state = run(opt, ps, steps=7)[1]

    def update(weight: torch.Tensor) -> torch.Tensor:
        grads = grads_at(7, ps)
        grads["layer_1"]["weight"] = weight
        updates = opt.update(grads, state, ps)[0]
        return torch.cat([u.reshape(-1) for u in leaves(updates)])

    weight = grads_at(7, ps)["layer_1"]["weight"].clone().requires_grad_()
    assert torch.autograd.gradcheck(update, (weight,))


DTYPE_IDS = ["float32", "float64"]


def property_tests(
    makes: list[Make], ids: list[str], promote_0dim_float32: Collection[str] = ()
) -> tuple[Callable[..., None], ...]:
    """The property tests of a test module's optimizers, to bind to module-level ``test_*``
    names: purity, refusal of mis-shaped gradients, a vmapped ensemble and (slow)
    ``torch.compile(fullgraph=True)``, both in float32 and float64.

    ``promote_0dim_float32``: the ids of optimizers whose traced updates (vmap, compile)
    turn a 0-dim float32 parameter into float64, a bug of the existing ``scale_by_adam``
    and of schedules in ``scale_by_learning_rate`` (their float64 factors promote 0-dim
    leaves); their float32 vmap and compile tests run without the 0-dim leaf.
    """
    cases = [
        pytest.param(m, i not in promote_0dim_float32, id=i)
        for m, i in zip(makes, ids, strict=True)
    ]
    over = pytest.mark.parametrize(("make", "float32_0dim"), cases)
    dtypes = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=DTYPE_IDS)

    @over
    def test_pure(make: Make, float32_0dim: bool) -> None:
        assert_pure(make)

    @over
    def test_refuses_misshaped_gradients(make: Make, float32_0dim: bool) -> None:
        assert_refuses_misshaped(make)

    @dtypes
    @over
    def test_ensemble_vmaps(make: Make, float32_0dim: bool, dtype: torch.dtype) -> None:
        assert_ensemble_vmaps(make, dtype, float32_0dim or dtype == torch.float64)

    @pytest.mark.slow
    @dtypes
    @over
    def test_compiles_fullgraph(make: Make, float32_0dim: bool, dtype: torch.dtype) -> None:
        assert_compiles(make, dtype, float32_0dim or dtype == torch.float64)

    return test_pure, test_ensemble_vmaps, test_refuses_misshaped_gradients, test_compiles_fullgraph
