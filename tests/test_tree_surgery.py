"""Tree surgery: ``tree.at``, ``tree.map_with_path``, ``tree.partition`` / ``tree.combine``."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import lux_torch as lux
from lux_torch import tree
from lux_torch.tree import Static


def _ps() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {
        "layer_1": {"weight": torch.randn(3, 2, generator=g), "bias": torch.randn(3, generator=g)},
        "layer_2": {"weight": torch.randn(1, 3, generator=g), "bias": torch.randn(1, generator=g)},
    }


def _snapshot(t: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ({kk: vv.clone() for kk, vv in v.items()} if isinstance(v, dict) else v)
        for k, v in t.items()
    }


def test_at_replaces_a_leaf_by_function_and_by_path_without_mutating():
    ps = _ps()
    before = _snapshot(ps)
    new = torch.zeros(3)
    by_fn = tree.at(lambda p: p["layer_1"]["bias"], ps, replace=new)
    by_path = tree.at("layer_1.bias", ps, replace=new)
    for out in (by_fn, by_path):
        assert out["layer_1"]["bias"] is new
        assert out["layer_1"]["weight"] is ps["layer_1"]["weight"]  # the rest is shared
        assert out["layer_2"] is ps["layer_2"]
        assert list(out) == ["layer_1", "layer_2"]
        assert list(out["layer_1"]) == ["weight", "bias"]  # the order is kept
    assert tree.allclose(ps, before) and ps["layer_1"]["bias"] is not new  # not mutated


def test_at_replace_fn_several_parts_and_subtrees():
    ps = _ps()
    out = tree.at(lambda p: (p["layer_1"]["weight"], p["layer_2"]), ps, replace_fn=lambda x: 0)
    assert out["layer_1"]["weight"] == 0 and out["layer_2"] == 0
    assert out["layer_1"]["bias"] is ps["layer_1"]["bias"]
    out = tree.at(["layer_1.bias", "layer_2.bias"], ps, replace=(1, 2))
    assert (out["layer_1"]["bias"], out["layer_2"]["bias"]) == (1, 2)
    doubled = tree.at("layer_2.weight", ps, replace_fn=lambda w: 2 * w)
    assert torch.equal(doubled["layer_2"]["weight"], 2 * ps["layer_2"]["weight"])
    assert tree.at("", ps, replace=5) == 5  # the root


def test_at_on_a_layer_rebuilds_with_constructor_checks():
    model = lux.Chain(lux.Linear(2, 3, activation=torch.tanh), lux.Linear(3, 1))
    wider = tree.at(lambda m: m.layer_2.out_features, model, replace=4)
    assert wider == lux.Chain(lux.Linear(2, 3, activation=torch.tanh), lux.Linear(3, 4))
    assert model.layers["layer_2"] == lux.Linear(3, 1)  # not mutated
    swapped = tree.at("layer_1", model, replace=lux.Linear(2, 3))
    assert swapped == lux.Chain(lux.Linear(2, 3), lux.Linear(3, 1))
    ps, st = lux.setup(0, wider)
    assert wider(torch.ones(5, 2), ps, st)[0].shape == (5, 4)
    with pytest.raises(ValueError, match="out_features must be >= 0"):  # Linear's own check
        tree.at(lambda m: m.layer_2.out_features, model, replace=-1)
    with pytest.raises(TypeError, match="holds child layers"):  # not silently dropped
        tree.at("layer_1", model, replace=torch.tanh)
    with pytest.raises(TypeError, match=r"holds child layers.*'layer_1': 'a torch.float32 tensor"):
        tree.at("layer_1", model, replace=torch.ones(1))


def test_at_errors():
    ps = _ps()
    with pytest.raises(KeyError, match=r"'layer_3' does not exist: <root> has keys"):
        tree.at("layer_3.weight", ps, replace=1)
    with pytest.raises(KeyError, match=r"layer_1\.scale"):
        tree.at(lambda p: p["layer_1"]["scale"], ps, replace=1)
    with pytest.raises(TypeError, match="exactly one"):
        tree.at("layer_1", ps)
    with pytest.raises(TypeError, match="exactly one"):
        tree.at("layer_1", ps, replace=1, replace_fn=lambda x: x)
    with pytest.raises(ValueError, match="inside"):
        tree.at(lambda p: (p["layer_1"], p["layer_1"]["bias"]), ps, replace=(1, 2))
    with pytest.raises(ValueError, match="2 parts but replace has 3"):
        tree.at(["layer_1", "layer_2"], ps, replace=(1, 2, 3))
    with pytest.raises(TypeError, match="only select"):
        tree.at(lambda p: p["layer_1"].get("bias"), ps, replace=1)
    with pytest.raises(TypeError, match="return parts"):
        tree.at(lambda p: ps["layer_1"]["bias"], ps, replace=1)
    model = lux.Chain(lux.Linear(2, 3), lux.Linear(3, 1))
    with pytest.raises(KeyError, match="children"):
        tree.at("layer_9", model, replace=1)
    with pytest.raises(ValueError, match="selected twice"):  # one child, named two ways
        tree.at(lambda m: (m.layer_2, m.layers["layer_2"]), model, replace=(model, model))


def test_map_with_path():
    ps = _ps()
    seen: list[str] = []

    def fn(path: str, leaf: torch.Tensor) -> torch.Tensor:
        seen.append(path)
        return leaf * 0 if path.endswith("bias") else leaf

    out = tree.map_with_path(fn, ps)
    assert seen == tree.paths(ps)
    assert torch.equal(out["layer_2"]["bias"], torch.zeros(1))
    assert out["layer_1"]["weight"] is ps["layer_1"]["weight"]
    st = {"training": Static(True), "key": torch.tensor([1, 2])}
    assert tree.map_with_path(lambda p, x: x, st)["training"] == Static(True)


def test_partition_and_combine_round_trip():
    ps = _ps()
    a, b = tree.partition(ps, lambda t: t.ndim == 2)
    assert a["layer_1"]["bias"] is tree.ABSENT and a["layer_1"]["weight"] is ps["layer_1"]["weight"]
    assert b["layer_1"]["weight"] is tree.ABSENT and b["layer_2"]["bias"] is ps["layer_2"]["bias"]
    assert tree.paths(a) == ["layer_1.weight", "layer_2.weight"]
    back = tree.combine(a, b)
    assert tree.structure(back) == tree.structure(ps)
    assert all(x is y for x, y in zip(tree.leaves(back), tree.leaves(ps), strict=True))
    # a prefix tree of bools, as made by map_with_path
    a2, b2 = tree.partition(ps, {"layer_1": True, "layer_2": False})
    assert tree.paths(a2) == ["layer_1.weight", "layer_1.bias"]
    assert tree.paths(b2) == ["layer_2.weight", "layer_2.bias"]
    mask = tree.map_with_path(lambda p, t: p.endswith("bias"), ps)
    assert tree.paths(tree.partition(ps, mask)[0]) == ["layer_1.bias", "layer_2.bias"]


def test_partition_grad_matches_full_grad_and_compiles():
    model = lux.Chain(lux.Linear(2, 3, activation=torch.tanh), lux.Linear(3, 1))
    ps, st = lux.setup(0, model, dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    trainable, frozen = tree.partition(ps, {"layer_1": False, "layer_2": True})

    def loss(p: Any) -> torch.Tensor:
        y: torch.Tensor = model(x, tree.combine(p, frozen), st)[0]
        return y.square().sum()

    grads = torch.func.grad(loss)(trainable)
    full = torch.func.grad(lambda p: model(x, p, st)[0].square().sum())(ps)
    assert grads["layer_1"]["weight"] is tree.ABSENT
    assert tree.allclose(grads["layer_2"], full["layer_2"], rtol=1e-12, atol=0)
    compiled = torch.compile(loss, fullgraph=True, backend="eager")
    assert torch.allclose(compiled(trainable), loss(trainable))
    stacked = tree.stack([trainable, tree.map(lambda t: 2 * t, trainable)])
    batched = torch.func.vmap(loss)(stacked)
    assert torch.allclose(batched[1], loss(tree.unstack(stacked)[1]))


def test_partition_and_combine_errors():
    ps = _ps()
    with pytest.raises(TypeError, match="Python bool"):
        tree.partition(ps, lambda t: t.sum() > 0)  # a tensor, not a bool
    with pytest.raises(ValueError, match="prefix"):
        tree.partition(ps, {"layer_9": True})
    a, _ = tree.partition(ps, lambda t: t.ndim == 2)
    with pytest.raises(ValueError, match="more than one tree has a leaf at"):
        tree.combine(a, ps)
    with pytest.raises(ValueError, match="different structures"):
        tree.combine(a, {"layer_1": tree.ABSENT})
