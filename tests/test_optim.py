"""Tests for lux_torch.optim: parity with torch.optim, purity, vmap, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from lux_torch import optim
from lux_torch.tree import leaves, map, stack

STEPS = 25


def _params(dtype: torch.dtype) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    return {
        "layer_1": {
            "weight": torch.randn(4, 3, generator=gen, dtype=dtype),
            "bias": torch.randn(4, generator=gen, dtype=dtype),
        },
        "layer_2": {"weight": torch.randn(2, 4, generator=gen, dtype=dtype)},
    }


def _grad(p: torch.Tensor) -> torch.Tensor:
    return 2 * p + torch.sin(p)


CASES: list[tuple[Callable[[], optim.GradientTransformation], Callable[[list], Any]]] = [
    (lambda: optim.sgd(0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
    (
        lambda: optim.sgd(0.05, momentum=0.9, weight_decay=0.1),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.1),
    ),
    (
        lambda: optim.sgd(0.05, momentum=0.8, nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
    ),
    (lambda: optim.adam(0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    (
        lambda: optim.adam(0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    ),
    (
        lambda: optim.adamw(0.01, weight_decay=0.1),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
    ),
    (lambda: optim.rmsprop(0.01), lambda ps: torch.optim.RMSprop(ps, lr=0.01)),
    (
        lambda: optim.rmsprop(0.01, momentum=0.9, centered=True),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.9, centered=True),
    ),
    (lambda: optim.adagrad(0.1), lambda ps: torch.optim.Adagrad(ps, lr=0.1)),
    (
        lambda: optim.adagrad(0.1, initial_accumulator_value=0.5),
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.5),
    ),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_torch_optim(case: int, dtype: torch.dtype) -> None:
    make_ours, make_torch = CASES[case]
    ps = _params(dtype)
    params = [torch.nn.Parameter(p.clone()) for p in leaves(ps)]
    reference = make_torch(params)
    opt = make_ours()
    state = opt.init(ps)
    for _ in range(STEPS):
        grads = map(_grad, ps)
        updates, state = opt.update(grads, state, ps)
        ps = optim.apply_updates(ps, updates)
        for p in params:
            p.grad = _grad(p.detach())
        reference.step()
    for ours, theirs in zip(leaves(ps), params, strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-6)


def test_inputs_not_mutated() -> None:
    ps = _params(torch.float64)
    opt = optim.adamw(0.1)
    state = opt.init(ps)
    grads = map(_grad, ps)
    snapshot = [t.clone() for t in leaves((ps, grads, state))]
    versions = [t._version for t in leaves((ps, grads, state))]
    updates, new_state = opt.update(grads, state, ps)
    optim.apply_updates(ps, updates)
    for before, after in zip(snapshot, leaves((ps, grads, state)), strict=True):
        assert torch.equal(before, after)
    assert versions == [t._version for t in leaves((ps, grads, state))]
    assert new_state is not state


def test_state_is_a_tree_of_tensors_and_vmaps() -> None:
    opt = optim.adam(0.01)
    members = [map(lambda p, i=i: p + i, _params(torch.float64)) for i in range(3)]
    states = [opt.init(ps) for ps in members]
    assert all(isinstance(t, torch.Tensor) for t in leaves(states[0]))

    def step(ps: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = opt.update(grads, state, ps)
        return optim.apply_updates(ps, updates), state

    ps_b, st_b = stack(members), stack(states)
    for _ in range(3):
        ps_b, st_b = torch.func.vmap(step)(ps_b, st_b, map(_grad, ps_b))
    for i, (ps, st) in enumerate(zip(members, states, strict=True)):
        for _ in range(3):
            ps, st = step(ps, st, map(_grad, ps))
        for a, b in zip(leaves((ps, st)), leaves((ps_b, st_b)), strict=True):
            torch.testing.assert_close(a, b[i])


def test_clip_by_global_norm() -> None:
    clip = optim.clip_by_global_norm(1.0)
    grads = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0])}
    clipped, _ = clip.update(grads, clip.init(grads))
    norm = torch.sqrt(sum((t**2).sum() for t in leaves(clipped)))
    torch.testing.assert_close(norm, torch.tensor(1.0))
    torch.testing.assert_close(clipped["a"], torch.tensor([0.6, 0.0]))
    small = {"a": torch.tensor([0.3, 0.0]), "b": torch.tensor([0.4])}
    kept, _ = clip.update(small, ())
    torch.testing.assert_close(kept["b"], small["b"])


def test_chain_composes() -> None:
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.scale(-0.5))
    grads = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0])}
    state = opt.init(grads)
    assert isinstance(state, tuple) and len(state) == 2
    updates, _ = opt.update(grads, state)
    torch.testing.assert_close(updates["a"], torch.tensor([-0.3, 0.0]))
    torch.testing.assert_close(updates["b"], torch.tensor([-0.4]))


def test_schedule_learning_rate() -> None:
    seen: list[int] = []

    def schedule(count: torch.Tensor) -> float:
        seen.append(int(count))
        return 0.1

    opt = optim.sgd(schedule)
    ps = {"w": torch.ones(2)}
    state = opt.init(ps)
    for _ in range(3):
        updates, state = opt.update({"w": torch.ones(2)}, state, ps)
        ps = optim.apply_updates(ps, updates)
    assert seen == [0, 1, 2]
    torch.testing.assert_close(ps["w"], torch.full((2,), 0.7))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: optim.sgd(-0.1), "lr must be >= 0"),
        (lambda: optim.adam(-1e-3), "lr must be >= 0"),
        (lambda: optim.adam(betas=(1.0, 0.999)), r"betas\[0\]"),
        (lambda: optim.adamw(betas=(0.9, -0.1)), r"betas\[1\]"),
        (lambda: optim.clip_by_global_norm(0.0), "max_norm"),
        (lambda: optim.sgd(0.1, nesterov=True), "nesterov"),
    ],
)
def test_bad_configuration(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_grads_structure_mismatch_is_named() -> None:
    opt = optim.adam(0.01)
    ps = {"a": torch.ones(2), "b": torch.ones(2)}
    state = opt.init(ps)
    with pytest.raises(ValueError, match=r"missing \['b'\], unexpected \['c'\]"):
        opt.update({"a": torch.ones(2), "c": torch.ones(2)}, state, ps)
    sgd = optim.sgd(0.1)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        sgd.update({"a": torch.ones(2)}, sgd.init(ps), ps)
