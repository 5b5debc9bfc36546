"""Tests for lux_torch.optim: parity with torch.optim, purity, vmap, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers import assert_updates_are_pure

from lux_torch import optim, schedules
from lux_torch import tree as lux_tree
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
    (
        lambda: optim.rmsprop(0.01, weight_decay=0.1),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, weight_decay=0.1),
    ),
    (
        lambda: optim.rmsprop(0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.2),
        lambda ps: torch.optim.RMSprop(
            ps, lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.2
        ),
    ),
    (
        lambda: optim.adagrad(0.1, lr_decay=0.05),
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.05),
    ),
    (
        lambda: optim.adagrad(0.1, weight_decay=0.1),
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, weight_decay=0.1),
    ),
    (
        lambda: optim.adagrad(
            0.1, eps=1e-6, initial_accumulator_value=0.2, lr_decay=0.01, weight_decay=0.05
        ),
        lambda ps: torch.optim.Adagrad(
            ps, lr=0.1, eps=1e-6, initial_accumulator_value=0.2, lr_decay=0.01, weight_decay=0.05
        ),
    ),
    (
        lambda: optim.adamw(0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.5),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.5),
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


def _labels() -> dict[str, Any]:
    return {"layer_1": "adam", "layer_2": "sgd"}


PURE = [
    lambda: optim.adamw(0.1),
    lambda: optim.adam(0.1, weight_decay=0.1),
    lambda: optim.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    lambda: optim.rmsprop(0.1, momentum=0.9, centered=True),
    lambda: optim.adagrad(0.1, lr_decay=0.1),
    lambda: optim.lion(0.1, weight_decay=0.1),
    lambda: optim.chain(optim.clip_by_global_norm(0.5), optim.adam(0.1), optim.scale(2.0)),
    lambda: optim.partition({"adam": optim.adam(0.1), "sgd": optim.set_to_zero()}, _labels()),
    lambda: optim.masked(
        optim.adam(0.1), {"layer_1": {"weight": True, "bias": False}, "layer_2": True}
    ),
]


@pytest.mark.parametrize("make", PURE)
def test_inputs_not_mutated(make: Callable[[], optim.GradientTransformation]) -> None:
    # the fast path works in place on its own temporaries only: no input, no earlier state
    assert_updates_are_pure(
        make(), _params(torch.float64), lambda ps, i: map(_grad, ps), 2, new_state=True
    )


VMAPPED = [
    lambda: optim.adam(0.01),
    lambda: optim.lion(0.01, weight_decay=0.1),
    lambda: optim.masked(
        optim.adam(0.05), {"layer_1": {"weight": True, "bias": False}, "layer_2": True}
    ),
    lambda: optim.partition(
        {"adam": optim.adam(0.05), "sgd": optim.sgd(0.1, momentum=0.9)}, _labels()
    ),
]


@pytest.mark.parametrize("make", VMAPPED)
def test_state_is_a_tree_of_tensors_and_vmaps(
    make: Callable[[], optim.GradientTransformation],
) -> None:
    opt = make()
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


def test_lion_matches_the_papers_algorithm() -> None:
    lr, (b1, b2), wd = 0.01, (0.9, 0.99), 0.5
    for dtype in (torch.float64, torch.float32):
        ps = _params(dtype)
        opt = optim.lion(lr, betas=(b1, b2), weight_decay=wd)
        state = opt.init(ps)
        ref = [p.clone() for p in leaves(ps)]
        momentum = [torch.zeros_like(p) for p in ref]
        for _ in range(STEPS):
            updates, state = opt.update(map(_grad, ps), state, ps)
            ps = optim.apply_updates(ps, updates)
            for i, p in enumerate(ref):
                g = _grad(p)
                direction = torch.sign(b1 * momentum[i] + (1 - b1) * g)
                ref[i] = p - lr * (direction + wd * p)
                momentum[i] = b2 * momentum[i] + (1 - b2) * g
        for ours, theirs in zip(leaves(ps), ref, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        for ours, theirs in zip(leaves(state[0]["mu"]), momentum, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        assert int(state[0]["count"]) == STEPS


def test_set_to_zero() -> None:
    ps = _params(torch.float32)
    opt = optim.set_to_zero()
    assert opt.init(ps) == ()
    updates, state = opt.update(map(_grad, ps), (), ps)
    assert state == ()
    for u, p in zip(leaves(updates), leaves(ps), strict=True):
        assert torch.equal(u, torch.zeros_like(p))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_partition_matches_two_torch_optimizers(dtype: torch.dtype) -> None:
    ps = _params(dtype)
    opt = optim.partition(
        {"adam": optim.adam(0.01, weight_decay=0.1), "sgd": optim.sgd(0.05, momentum=0.9)},
        _labels(),
    )
    first = [torch.nn.Parameter(p.clone()) for p in leaves(ps["layer_1"])]
    second = [torch.nn.Parameter(p.clone()) for p in leaves(ps["layer_2"])]
    references = [
        torch.optim.Adam(first, lr=0.01, weight_decay=0.1),
        torch.optim.SGD(second, lr=0.05, momentum=0.9),
    ]
    state = opt.init(ps)
    for _ in range(STEPS):
        updates, state = opt.update(map(_grad, ps), state, ps)
        ps = optim.apply_updates(ps, updates)
        for p in first + second:
            p.grad = _grad(p.detach())
        for reference in references:
            reference.step()
    for ours, theirs in zip(leaves(ps), first + second, strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-6)


def test_partition_freezes_a_subtree_exactly() -> None:
    ps0 = _params(torch.float32)
    opt = optim.partition(
        {"train": optim.adam(1e-2), "frozen": optim.set_to_zero(), "unused": optim.adam()},
        {"layer_1": "frozen", "layer_2": {"weight": "train"}},
    )
    state = opt.init(ps0)
    assert state["frozen"] == ()
    assert state["train"][1]["mu"] == {
        "layer_2": {"weight": state["train"][1]["mu"]["layer_2"]["weight"]}
    }
    assert state["unused"][1]["mu"] == {} and state["unused"][1]["nu"] == {}
    ps = ps0
    for _ in range(STEPS):
        updates, state = opt.update(map(_grad, ps), state, ps)
        ps = optim.apply_updates(ps, updates)
    for a, b in zip(leaves(ps["layer_1"]), leaves(ps0["layer_1"]), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ps["layer_2"]["weight"], ps0["layer_2"]["weight"])
    assert int(state["train"][1]["count"]) == STEPS and int(state["unused"][1]["count"]) == STEPS


def test_masked_semantics() -> None:
    ps = _params(torch.float64)
    grads = map(_grad, ps)
    # a callable mask: the weights only; the biases' updates pass through unchanged
    opt = optim.masked(optim.scale(-0.5), lambda tree: map(lambda p: p.ndim > 1, tree))
    updates, _ = opt.update(grads, opt.init(ps), ps)
    assert updates["layer_1"]["bias"] is grads["layer_1"]["bias"]
    torch.testing.assert_close(updates["layer_2"]["weight"], -0.5 * grads["layer_2"]["weight"])
    # a prefix mask; the inner state holds the masked leaves only
    inner = optim.adam(0.01)
    opt = optim.masked(inner, {"layer_1": False, "layer_2": True})
    state = opt.init(ps)
    assert list(state[1]["mu"]) == ["layer_2"]
    sub, sub_state = {"layer_2": ps["layer_2"]}, inner.init({"layer_2": ps["layer_2"]})
    for _ in range(5):
        grads = map(_grad, ps)
        updates, state = opt.update(grads, state, ps)
        sub_updates, sub_state = inner.update({"layer_2": grads["layer_2"]}, sub_state, sub)
        assert updates["layer_1"] is not None and torch.equal(
            updates["layer_1"]["weight"], grads["layer_1"]["weight"]
        )
        assert torch.equal(updates["layer_2"]["weight"], sub_updates["layer_2"]["weight"])
        ps, sub = optim.apply_updates(ps, updates), optim.apply_updates(sub, sub_updates)
    assert torch.equal(leaves(state)[1], leaves(sub_state)[1])


def test_partition_update_compiles_fullgraph() -> None:
    torch._dynamo.reset()
    ps = {**_params(torch.float32), "layer_3": {}}  # a parameter-free layer's empty entry
    opt = optim.partition(
        {
            "adam": optim.adam(0.01, weight_decay=0.1),
            "sgd": optim.sgd(0.05, momentum=0.9),
            "unused": optim.adam(),
        },
        {"layer_1": "adam", "layer_2": "sgd", "layer_3": "sgd"},
    )

    def step(ps: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = opt.update(grads, state, ps)
        return optim.apply_updates(ps, updates), state

    compiled = torch.compile(step, fullgraph=True)
    eager = traced = (ps, opt.init(ps))
    for _ in range(3):
        eager = step(*eager, map(_grad, eager[0]))
        traced = compiled(*traced, map(_grad, traced[0]))
    assert lux_tree.structure(traced) == lux_tree.structure(eager)
    for a, b in zip(leaves(traced), leaves(eager), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_vmap_over_grads_with_a_shared_state() -> None:
    # an unbatched state (in_dims None) under vmap: the per-leaf fallback path
    ps = _params(torch.float64)
    opt = optim.adam(0.01)
    state = opt.update(map(_grad, ps), opt.init(ps), ps)[1]
    grads = stack([map(lambda p, k=k: k * _grad(p), ps) for k in (1.0, 2.0)])
    updates, states = torch.func.vmap(lambda g: opt.update(g, state, ps))(grads)
    for k, i in ((1.0, 0), (2.0, 1)):
        u, st = opt.update(map(lambda p: k * _grad(p), ps), state, ps)
        for a, b in zip(leaves((u, st)), leaves((updates, states)), strict=True):
            torch.testing.assert_close(a, b[i])


def test_update_is_differentiable() -> None:
    # the fast path's in-place temporaries must not break autograd through an update
    ps = _params(torch.float64)
    for opt in (optim.adamw(0.1), optim.rmsprop(0.1, centered=True), optim.lion(0.1)):
        state = opt.update(map(_grad, ps), opt.init(ps), ps)[1]

        def f(g1: torch.Tensor, g2: torch.Tensor, opt: Any = opt, state: Any = state) -> Any:
            grads = {"layer_1": {"weight": g1, "bias": g2}, "layer_2": ps["layer_2"]}
            updates = opt.update(grads, state, ps)[0]
            return (updates["layer_1"]["weight"] ** 2).sum() + updates["layer_1"]["bias"].sum()

        inputs = (ps["layer_1"]["weight"].clone(), ps["layer_1"]["bias"].clone())
        assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in inputs))

    # a learning rate with a gradient (meta-learning)
    def loss(lr: torch.Tensor) -> torch.Tensor:
        opt = optim.adam(lambda count: lr)
        state = opt.init(ps)
        for _ in range(2):
            updates, state = opt.update(map(_grad, ps), state, ps)
        total: torch.Tensor = sum(u.sum() for u in leaves(updates))
        return total

    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (lr,))


def test_mixed_dtypes_match_torch() -> None:
    ps = {"a": torch.linspace(-1, 1, 6).reshape(2, 3), "b": torch.linspace(0, 1, 4).double()}
    params = [torch.nn.Parameter(p.clone()) for p in leaves(ps)]
    reference = torch.optim.Adam(params, lr=0.01, weight_decay=0.1)
    opt = optim.adam(0.01, weight_decay=0.1)
    state = opt.init(ps)
    for _ in range(STEPS):
        updates, state = opt.update(map(_grad, ps), state, ps)
        ps = optim.apply_updates(ps, updates)
        for p in params:
            p.grad = _grad(p.detach())
        reference.step()
    assert [t.dtype for t in leaves(ps)] == [torch.float32, torch.float64]
    for ours, theirs in zip(leaves(ps), params, strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-6)


def test_chain_with_tree_level_members() -> None:
    # a member without the leaf-level form (masked, a user's transformation) makes the
    # chain call every member on trees; results are unchanged
    double = optim.GradientTransformation(
        lambda ps: (), lambda grads, state, ps=None: (map(lambda g: 2 * g, grads), state)
    )
    pairs = [
        (
            optim.chain(optim.masked(optim.add_decayed_weights(0.1), True), optim.adam(0.01)),
            optim.adam(0.01, weight_decay=0.1),
        ),
        (optim.chain(double, optim.sgd(0.05, momentum=0.9)), optim.sgd(0.1, momentum=0.9)),
    ]
    for tree_level, leaf_level in pairs:
        ps_a = ps_b = _params(torch.float64)
        st_a, st_b = tree_level.init(ps_a), leaf_level.init(ps_b)
        for _ in range(5):
            u_a, st_a = tree_level.update(map(_grad, ps_a), st_a, ps_a)
            u_b, st_b = leaf_level.update(map(_grad, ps_b), st_b, ps_b)
            ps_a, ps_b = optim.apply_updates(ps_a, u_a), optim.apply_updates(ps_b, u_b)
        for a, b in zip(leaves(ps_a), leaves(ps_b), strict=True):
            torch.testing.assert_close(a, b)


def test_state_layouts() -> None:
    ps = {"w": torch.ones(2)}

    def keys(state: Any) -> Any:
        if isinstance(state, dict):
            return {k: keys(v) if k == "count" else "tree" for k, v in state.items()}
        return tuple(keys(s) for s in state) if isinstance(state, tuple) else "leaf"

    adam_state = {"count": "leaf", "mu": "tree", "nu": "tree"}
    assert keys(optim.adam().init(ps)) == ((), adam_state, {"count": "leaf"})
    assert keys(optim.adamw().init(ps)) == (adam_state, (), {"count": "leaf"})
    assert keys(optim.sgd(0.1, momentum=0.9).init(ps)) == ((), {"buf": "tree"}, {"count": "leaf"})
    assert keys(optim.rmsprop().init(ps)) == ((), adam_state, (), {"count": "leaf"})
    assert keys(optim.adagrad().init(ps)) == (
        (),
        {"count": "leaf", "sum": "tree"},
        {"count": "leaf"},
    )
    assert keys(optim.lion().init(ps)) == ({"count": "leaf", "mu": "tree"}, (), {"count": "leaf"})
    for t in leaves(optim.adam().init(ps)):
        assert t.dtype in (torch.int64, torch.float32)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: optim.partition({"adam": optim.adam()}, {"layer_1": "adam", "layer_2": "zz"}),
            r"unknown labels layer_2='zz'; the labels of transforms are \['adam'\]",
        ),
        (
            lambda: optim.partition({"adam": optim.adam()}, lambda ps: "sgd").init(
                _params(torch.float32)
            ),
            r"unknown labels <root>='sgd'",
        ),
        (
            lambda: optim.partition({"adam": optim.adam()}, {"layer_1": "adam"}).init(
                _params(torch.float32)
            ),
            r"partition: the label tree does not match the parameters at the root: "
            r"missing \['layer_2'\], unexpected \[\]",
        ),
        (
            lambda: optim.masked(optim.adam(), {"layer_1": {"weight": True}, "layer_2": True}).init(
                _params(torch.float32)
            ),
            r"masked: the mask tree does not match the parameters at 'layer_1': missing \['bias'\]",
        ),
        (
            lambda: optim.masked(optim.adam(), {"layer_1": 1}),
            "mask values must be Python bools, got layer_1=1",
        ),
        (lambda: optim.partition({}, "a"), "transforms is empty"),
        (
            lambda: optim.partition({"adam": optim.adam()}, "adam").update(
                map(_grad, _params(torch.float32)), (), _params(torch.float32)
            ),
            r"the state must have one entry per label \['adam'\]",
        ),
        (
            lambda: optim.adamw(0.1).update(
                map(_grad, _params(torch.float32)), optim.adamw(0.1).init(_params(torch.float32))
            ),
            "add_decayed_weights: update needs ps",
        ),
        (
            lambda: optim.adam(0.1).update(
                map(_grad, _params(torch.float32)), optim.sgd(0.1).init(_params(torch.float32))
            ),
            "chain: the state does not fit this transformation and these grads",
        ),
        (lambda: optim.lion(betas=(0.9, 1.0)), r"scale_by_lion: betas\[1\]"),
        (lambda: optim.adagrad(lr_decay=-1.0), "adagrad: lr_decay must be >= 0"),
        (lambda: optim.rmsprop(weight_decay=-1.0), "weight_decay must be >= 0"),
    ],
)
def test_masked_partition_and_new_alias_errors(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_grads_mismatch_without_ps_is_named() -> None:
    opt = optim.adam(0.01)
    state = opt.init({"a": torch.ones(2), "b": torch.ones(2)})
    with pytest.raises(ValueError, match=r"grads \(to scale_by_adam\).*missing \['b'\]"):
        opt.update({"a": torch.ones(2), "c": torch.ones(2)}, state)


FUSED = [
    lambda: optim.adam(0.01, weight_decay=0.1),
    optim.adamw,
    lambda: optim.sgd(0.05),
    lambda: optim.sgd(0.05, momentum=0.9, weight_decay=0.1),
    lambda: optim.sgd(0.05, momentum=0.9, nesterov=True),
    # schedules: a new learning rate every step, so evaluating one at the wrong count shows
    lambda: optim.adam(schedules.cosine_decay_schedule(0.01, STEPS), weight_decay=0.1),
    lambda: optim.adamw(schedules.linear_schedule(1e-3, 1e-2, STEPS)),
    lambda: optim.sgd(schedules.exponential_decay(0.05, 1, 0.7), momentum=0.9),
    lambda: optim.sgd(lambda count: 0.01 * (count + 1)),  # a Python float... of a tensor
]
FUSED_IDS = ["adam", "adamw", "sgd", "sgd-momentum", "sgd-nesterov"]
FUSED_IDS += ["adam-cosine", "adamw-linear", "sgd-momentum-exponential", "sgd-lambda"]


@pytest.mark.parametrize("make", FUSED, ids=FUSED_IDS)
def test_step_fused_equals_update_and_apply(make: Callable[[], Any]) -> None:
    opt = make()
    assert isinstance(opt.descriptor, optim.FusedAdam | optim.FusedSGD)
    ps = _params(torch.float32)
    before = map(torch.clone, ps)
    fused_ps, fused_state = ps, opt.init(ps)
    ref_ps, ref_state = ps, opt.init(ps)
    for _ in range(STEPS):
        fused_ps, fused_state = optim.step(opt, map(_grad, fused_ps), fused_state, fused_ps)
        updates, ref_state = opt.update(map(_grad, ref_ps), ref_state, ref_ps)
        ref_ps = optim.apply_updates(ref_ps, updates)
    got, want = leaves(fused_ps) + leaves(fused_state), leaves(ref_ps) + leaves(ref_state)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(leaves(ps), leaves(before), strict=True):
        assert torch.equal(a, b)  # the caller's parameters were not touched


@pytest.mark.parametrize("donate", [False, True])
@pytest.mark.parametrize("make", FUSED, ids=FUSED_IDS)
def test_fused_step_respects_strides(make: Callable[[], Any], donate: bool) -> None:
    # torch's fused Adam kernels walk memory linearly: a transposed gradient (vmapped
    # matmuls produce them) or parameter must not reach them as is
    opt = make()
    cl, cl3 = torch.channels_last, torch.channels_last_3d
    ps = {
        "w": torch.randn(3, 4, 5),
        "t": torch.randn(5, 4).t(),
        # convolution weights stored channels-last (the kernels take them as they are),
        # with gradients in the other layout and in the same one
        "c": torch.randn(4, 3, 2, 3).contiguous(memory_format=cl),
        "c3": torch.randn(2, 3, 2, 2, 3).contiguous(memory_format=cl3),
        "k": torch.randn(4, 3, 3, 2),
    }
    grads = {
        "w": torch.randn(3, 5, 4).transpose(1, 2),
        "t": torch.randn(4, 5),
        "c": torch.randn(4, 3, 2, 3),
        "c3": torch.randn(2, 3, 2, 2, 3).contiguous(memory_format=cl3),
        "k": torch.randn(4, 3, 3, 2).contiguous(memory_format=cl),
    }
    updates, ref_state = opt.update(grads, opt.init(ps), ps)
    expected = optim.apply_updates(ps, updates)
    given = map(torch.clone, ps)
    got, state = optim.step(opt, grads, opt.init(ps), given, donate=donate)
    for a, b in zip(leaves(got) + leaves(state), leaves(expected) + leaves(ref_state), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make", FUSED, ids=FUSED_IDS)
def test_fused_kernels_take_channels_last_weights_as_they_are(make: Callable[[], Any]) -> None:
    # convolution weights stored channels-last (what a compiled step's gradients come in):
    # the kernel runs on them in place; a gradient in another layout is copied into theirs
    opt = make()
    cl, cl3 = torch.channels_last, torch.channels_last_3d
    ps = {
        "c": torch.randn(4, 3, 2, 3).contiguous(memory_format=cl),
        "c3": torch.randn(2, 3, 2, 2, 3).contiguous(memory_format=cl3),
        "k": torch.randn(4, 3, 3, 2),
        "b": torch.randn(4),
    }
    state = opt.init(ps)
    moments = [m for m in leaves(state) if m.shape == ps["c"].shape]
    assert all(m.stride() == ps["c"].stride() for m in moments)  # laid out as the weight
    for step in range(3):
        grads = {
            "c": torch.randn(4, 3, 2, 3, generator=torch.Generator().manual_seed(step)),
            "c3": torch.randn(2, 3, 2, 2, 3).contiguous(memory_format=cl3),
            "k": torch.randn(4, 3, 3, 2).contiguous(memory_format=cl),
            "b": torch.randn(4),
        }
        updates, ref_state = opt.update(grads, state, ps)
        expected = optim.apply_updates(ps, updates)
        given = map(torch.clone, ps)
        got, state = optim.step(opt, grads, state, given, donate=True)
        assert all(a is b for a, b in zip(leaves(got), leaves(given), strict=True))  # in place
        for a, b in zip(leaves((got, state)), leaves((expected, ref_state)), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert got["c"].is_contiguous(memory_format=cl)
        ps = got


@pytest.mark.parametrize("make", FUSED, ids=FUSED_IDS)
def test_step_donate_updates_in_place(make: Callable[[], Any]) -> None:
    opt = make()
    ps = _params(torch.float32)
    state = opt.init(ps)
    expected, kept = optim.step(opt, map(_grad, ps), state, ps)
    new_ps, new_state = optim.step(opt, map(_grad, ps), state, ps, donate=True)
    # the buffers were reused: the parameters and the moments (momentum buffers)
    assert all(a is b for a, b in zip(leaves(new_ps), leaves(ps), strict=True))
    moments = [k for k in ("mu", "nu", "buf") if k in state[1]]  # not the new count
    assert moments or not leaves(state[1])
    for k in moments:
        assert all(
            a is b for a, b in zip(leaves(new_state[1][k]), leaves(state[1][k]), strict=True)
        )
    for a, b in zip(leaves((new_ps, new_state)), leaves((expected, kept)), strict=True):
        torch.testing.assert_close(a, b)
    assert int(new_state[-1]["count"]) == 1


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_sgd_step_matches_torch_optim_sgd(dtype: torch.dtype, nesterov: bool) -> None:
    # the fused kernel starts from trace's zero buffers as a non-first step: the same
    # trajectory as torch.optim.SGD, whose first step copies the gradient into the buffer
    opt = optim.sgd(0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    ps = _params(dtype)
    params = [torch.nn.Parameter(p.clone()) for p in leaves(ps)]
    reference = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    state = opt.init(ps)
    for _ in range(STEPS):
        grads = map(_grad, ps)
        for p, g in zip(params, leaves(grads), strict=True):
            p.grad = g.clone()
        reference.step()
        ps, state = optim.step(opt, grads, state, ps)
    for a, b in zip(leaves(ps), params, strict=True):
        torch.testing.assert_close(a, b.detach())
    assert int(state[-1]["count"]) == STEPS


def test_fused_sgd_is_left_to_update_where_the_kernel_does_not_apply() -> None:
    # a vmapped ensemble (no batching rule), a state of another layout (the named error of
    # the leaf path), parameters that require grad (torch.func.grad through a step)
    opt = optim.sgd(0.1, momentum=0.9)
    ps = _params(torch.float64)
    members = [ps, map(lambda p: p + 1, ps)]
    ens = stack(members)
    batched, _ = torch.func.vmap(lambda p, s: optim.step(opt, map(_grad, p), s, p))(
        ens, torch.func.vmap(opt.init)(ens)
    )
    for i, member in enumerate(members):
        want, _ = optim.step(opt, map(_grad, member), opt.init(member), member)
        for a, b in zip(leaves(batched), leaves(want), strict=True):
            torch.testing.assert_close(a[i], b)
    shared = opt.init(ps)  # unbatched (in_dims None) under the vmap of the parameters
    batched, _ = torch.func.vmap(lambda p: optim.step(opt, map(_grad, p), shared, p))(ens)
    for i, member in enumerate(members):
        want, _ = optim.step(opt, map(_grad, member), shared, member)
        for a, b in zip(leaves(batched), leaves(want), strict=True):
            torch.testing.assert_close(a[i], b)
    with pytest.raises(ValueError, match="trace: the state does not fit"):
        optim.step(opt, map(_grad, ps), optim.adam().init(ps), ps)
    with pytest.raises(ValueError, match="chain: the state does not fit"):
        optim.step(opt, map(_grad, ps), {}, ps)
    adam = optim.adam(0.1)  # its fused path reads the same layout checks
    with pytest.raises(ValueError, match="chain: the state does not fit"):
        optim.step(adam, map(_grad, ps), {}, ps)
    with pytest.raises(ValueError, match="scale_by_adam: the state does not fit"):
        optim.step(adam, map(_grad, ps), opt.init(ps), ps)
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (new,), _ = optim.step(opt, (w * 2,), opt.init((w,)), (w,))
    (grad,) = torch.autograd.grad(new.sum(), w)  # d/dw (w - 0.1 * 2w) = 0.8
    torch.testing.assert_close(grad, torch.full((3,), 0.8, dtype=torch.float64))


@pytest.mark.parametrize("make", [optim.adam, optim.sgd])
def test_step_falls_back_for_integer_schedule_values_and_checks_structure(
    make: Callable[..., Any],
) -> None:
    # a schedule whose value the kernels do not take (an integer tensor): update
    ps = _params(torch.float64)
    for value in (torch.tensor(1), torch.tensor(0, dtype=torch.int32)):
        opt = make(lambda count, value=value: value)
        assert opt.descriptor is not None
        state = opt.init(ps)
        new_ps, new_state = optim.step(opt, map(_grad, ps), state, ps, donate=True)
        updates, ref_state = opt.update(map(_grad, ps), state, ps)
        expected = optim.apply_updates(ps, updates)
        for a, b in zip(leaves((new_ps, new_state)), leaves((expected, ref_state)), strict=True):
            torch.testing.assert_close(a, b)
        assert leaves(new_ps)[0] is not leaves(ps)[0]  # not donated: the update ran
    grads = map(_grad, ps)
    del grads["layer_2"]
    with pytest.raises(ValueError, match="missing"):
        optim.step(optim.adam(0.01), grads, optim.adam(0.01).init(ps), ps)


def test_update_traces_with_make_fx() -> None:
    from torch.fx.experimental.proxy_tensor import make_fx

    opt = optim.adam(0.01)
    ps = _params(torch.float32)
    state = opt.init(ps)

    def step(ps: Any, state: Any, grads: Any) -> Any:
        return optim.step(opt, grads, state, ps)

    graph = make_fx(step)(ps, state, map(_grad, ps))
    expected, _ = step(ps, state, map(_grad, ps))
    got, _ = graph(ps, state, map(_grad, ps))
    for a, b in zip(leaves(got), leaves(expected), strict=True):
        torch.testing.assert_close(a, b)


def test_errors_inside_an_update_propagate() -> None:
    # An update runs on foreach kernels and used to be rerun on a slower path after any
    # RuntimeError, which hid real bugs. Only the known conditions (vmap: foreach kernels
    # have no batching rule; a scalar that requires grad) take the per-leaf path, decided
    # up front. A foreach call with lists of different lengths used to fall back to a
    # per-leaf loop over the first list, silently dropping the rest.
    from lux_torch.optim import foreach

    a, b = torch.ones(2), torch.ones(3)
    with pytest.raises(RuntimeError, match="same number of tensors"):
        foreach.add([a], [a, b])


def test_mis_shaped_gradients_and_updates_are_refused_not_broadcast() -> None:
    # torch's _foreach ops broadcast: a (1,) gradient would update all three elements
    ps = {"layer": {"w": torch.ones(3), "b": torch.zeros(2)}}
    bad = {"layer": {"w": torch.ones(1), "b": torch.ones(2)}}
    with pytest.raises(ValueError, match=r"updates 'layer.w' has shape \(1,\), but the param"):
        optim.apply_updates(ps, bad)
    with pytest.raises(ValueError, match=r"grads 'layer.w' has shape \(1,\), but the parameter"):
        sgd = optim.sgd(0.1)
        sgd.update(bad, sgd.init(ps), ps)
    adam = optim.adam(1e-3)
    for args in ((), (ps,)):  # with and without ps: the moments have the parameter's shape
        with pytest.raises(ValueError, match=r"grads 'layer.w' has shape \(1,\), but the upd"):
            adam.update(bad, adam.init(ps), *args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make", FUSED, ids=FUSED_IDS)
def test_fused_steps_on_cuda_equal_update_and_apply(make: Callable[[], Any]) -> None:
    # parameters, gradients and the whole state on the GPU (the step counts too)
    opt = make()
    ps = map(lambda t: t.cuda(), _params(torch.float32))
    state = map(lambda t: t.cuda(), opt.init(ps))
    ref_ps, ref_state = ps, state
    for _ in range(5):
        grads = map(_grad, ps)
        new_ps, new_state = optim.step(opt, grads, state, map(torch.clone, ps), donate=True)
        updates, ref_state = opt.update(map(_grad, ref_ps), ref_state, ref_ps)
        ref_ps = optim.apply_updates(ref_ps, updates)
        ps, state = new_ps, new_state
    for a, b in zip(leaves((ps, state)), leaves((ref_ps, ref_state)), strict=True):
        assert a.device.type == "cuda"
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
