"""Tree utilities: Static nodes, ravel, stack/unstack, to, paths, state_dict round trips."""

from __future__ import annotations

import optree
import pytest
import torch
import torch.utils._pytree as torch_pytree

import lux_torch as lux
from lux_torch import tree
from lux_torch.tree import Static


def _tree() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "layer_1": {"weight": torch.randn(3, 2, generator=g), "bias": torch.randn(3, generator=g)},
        "layer_2": {"key": torch.tensor([0, 1]), "training": Static(True)},
    }


def test_static_is_leafless_in_both_pytree_registries():
    t = _tree()
    assert all(isinstance(x, torch.Tensor) for x in tree.leaves(t))
    assert len(tree.leaves(t)) == 3
    torch_leaves, spec = torch_pytree.tree_flatten(t)
    assert len(torch_leaves) == 3
    rebuilt = torch_pytree.tree_unflatten(torch_leaves, spec)
    assert rebuilt["layer_2"]["training"] == Static(True)
    # the value is part of the structure
    flipped = {**t, "layer_2": {**t["layer_2"], "training": Static(False)}}
    assert tree.structure(t) != tree.structure(flipped)
    assert optree.tree_structure(t, namespace=tree.NAMESPACE).num_leaves == 3


def test_static_is_immutable_hashable_and_boolean():
    s = Static(True)
    with pytest.raises(AttributeError):
        s.value = False  # type: ignore[misc]
    assert bool(s) and not bool(Static(False))
    assert {Static(1): "a"}[Static(1)] == "a"
    with pytest.raises(TypeError):
        Static([1, 2])  # static values must be hashable


def test_paths_map_count_allclose():
    t = _tree()
    assert tree.paths(t) == ["layer_1.bias", "layer_1.weight", "layer_2.key"]
    doubled = tree.map(lambda x: x * 2, t)
    assert doubled["layer_2"]["training"] == Static(True)
    assert torch.equal(doubled["layer_1"]["bias"], t["layer_1"]["bias"] * 2)
    assert tree.count(t) == 6 + 3 + 2
    assert tree.allclose(t, tree.map(torch.clone, t))
    assert not tree.allclose(t, doubled)
    assert not tree.allclose(t, {"layer_1": t["layer_1"]})


def test_ravel_round_trip_mixed_dtypes_and_gradients():
    t = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.float64)}
    flat, unravel = tree.ravel(t)
    assert flat.shape == (10,) and flat.dtype == torch.float64
    back = unravel(flat)
    assert back["a"].dtype == torch.float32 and torch.equal(back["a"], t["a"])
    with pytest.raises(ValueError, match="expected a 1-D tensor of 10 elements"):
        unravel(torch.zeros(9))

    def f(v: torch.Tensor) -> torch.Tensor:
        p = unravel(v)
        return (p["a"] ** 2).sum() + p["b"].sum()

    g = torch.func.grad(f)(flat)
    assert torch.allclose(g[:6], 2 * flat[:6]) and torch.allclose(
        g[6:], torch.ones(4, dtype=torch.float64)
    )


def test_ravel_of_model_parameters_drives_a_flat_optimiser():
    model = lux.Chain(lux.Linear(2, 8, activation=torch.tanh), lux.Linear(8, 1))
    ps, st = lux.setup(0, model)
    flat, unravel = tree.ravel(ps)
    assert flat.numel() == lux.param_count(model)
    x = torch.linspace(-1, 1, 16).reshape(8, 2)

    def loss(v):
        return (model(x, unravel(v), st)[0] ** 2).mean()

    before = loss(flat)
    for _ in range(20):
        flat = flat - 0.1 * torch.func.grad(loss)(flat)
    assert loss(flat) < before


def test_stack_and_unstack_are_inverse():
    trees = [tree.map(lambda x, i=i: x + i, _tree()) for i in range(3)]
    stacked = tree.stack(trees)
    assert stacked["layer_1"]["weight"].shape == (3, 3, 2)
    assert stacked["layer_2"]["training"] == Static(True)
    back = tree.unstack(stacked)
    assert len(back) == 3 and all(tree.allclose(a, b) for a, b in zip(back, trees, strict=True))
    with pytest.raises(ValueError):
        tree.stack([])
    with pytest.raises(ValueError, match="disagree"):
        tree.unstack({"a": torch.zeros(2), "b": torch.zeros(3)})
    mismatched = {**_tree(), "layer_2": {**_tree()["layer_2"], "training": Static(False)}}
    with pytest.raises(ValueError):
        tree.stack([_tree(), mismatched])


def test_to_casts_floats_only():
    t = _tree()
    moved = tree.to(t, dtype=torch.float64)
    assert moved["layer_1"]["weight"].dtype == torch.float64
    assert moved["layer_2"]["key"].dtype == torch.int64
    meta = tree.to(t, device="meta")
    assert all(x.is_meta for x in tree.leaves(meta))


def test_state_dict_round_trip_and_errors():
    model = lux.Chain(lux.Linear(2, 4), lux.Dropout(0.5), lux.Linear(4, 1))
    ps, st = lux.setup(0, model)
    sd = lux.state_dict(ps, st)
    assert list(sd) == [
        "layer_1.bias",
        "layer_1.weight",
        "layer_3.bias",
        "layer_3.weight",
        "layer_2.key",
    ]
    ps2, st2 = lux.load_state_dict(model, sd)
    assert tree.allclose(ps, ps2, rtol=0, atol=0) and tree.allclose(st, st2, rtol=0, atol=0)
    assert st2["layer_2"]["training"] == Static(True)
    broken = dict(sd)
    del broken["layer_1.bias"]
    broken["layer_9.weight"] = torch.zeros(1)
    broken["layer_3.weight"] = torch.zeros(2, 2)
    with pytest.raises(lux.StateDictError) as info:
        lux.load_state_dict(model, broken)
    text = str(info.value)
    assert "missing: layer_1.bias" in text and "unexpected: layer_9.weight" in text
    assert "layer_3.weight: expected (1, 4), got (2, 2)" in text


def test_load_state_dict_accepts_a_torch_state_dict_with_the_same_layout():
    torch_model = torch.nn.Linear(3, 2)
    ps, _ = lux.load_state_dict(lux.Linear(3, 2), torch_model.state_dict())
    x = torch.ones(1, 3)
    assert torch.allclose(lux.Linear(3, 2)(x, ps, {})[0], torch_model(x))


def test_flatten_unflatten_round_trip_eager_and_compiled() -> None:
    nested = {"b": {}, "a": {"w": torch.ones(2), "s": Static(True)}, "c": (torch.zeros(1),)}
    leaves_, spec = tree.flatten(nested)
    assert [t.shape for t in leaves_] == [(2,), (1,)]
    back = tree.unflatten(spec, [t + 1 for t in leaves_])
    assert back["b"] == {} and back["a"]["s"] == Static(True)
    assert torch.equal(back["a"]["w"], torch.full((2,), 2.0))

    @torch.compile(fullgraph=True)
    def bump(inner: dict) -> tuple[dict, list]:
        leaves_, spec = tree.flatten(inner)
        mapped = tree.map(lambda t: t * 3, inner)  # empty dicts broke optree under Dynamo
        return tree.unflatten(spec, [t + 1 for t in leaves_]), tree.leaves(mapped)

    compiled, tripled = bump(nested)
    assert compiled["b"] == {} and compiled["a"]["s"] == Static(True)
    assert torch.equal(compiled["a"]["w"], back["a"]["w"])
    assert sorted(t.sum().item() for t in tripled) == [0.0, 6.0]
