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
    assert optree.tree_structure(t, namespace=tree.NAMESPACE).num_leaves == 3  # type: ignore[arg-type]  # optree's PyTree[T] admits no dict[Any, Any]


def test_static_is_immutable_hashable_and_boolean():
    s = Static(True)
    with pytest.raises(AttributeError):
        s.value = False
    assert bool(s) and not bool(Static(False))
    assert {Static(1): "a"}[Static(1)] == "a"
    with pytest.raises(TypeError):
        Static([1, 2])  # static values must be hashable


def test_paths_map_count_allclose():
    t = _tree()
    assert tree.paths(t) == ["layer_1.weight", "layer_1.bias", "layer_2.key"]  # insertion order
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
        result: torch.Tensor = (p["a"] ** 2).sum() + p["b"].sum()
        return result

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
        "layer_1.weight",
        "layer_1.bias",
        "layer_3.weight",
        "layer_3.bias",
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
    assert [t.sum().item() for t in tripled] == [6.0, 0.0]  # a.w, then c[0]: insertion order


# --- one leaf order everywhere: dict insertion order (issue 14 §1) ---------------------------


def _chain12() -> tuple[lux.Layer, dict, dict]:
    model = lux.Chain(*[lux.Linear(3, 3) for _ in range(12)])
    ps, st = lux.setup(0, model)
    return model, ps, st


def _unsorted() -> dict:
    """Nested dicts whose insertion order is not their sorted order (and an empty dict)."""
    g = torch.Generator().manual_seed(1)
    return {
        "z": {"w": torch.randn(2, 3, generator=g), "b": torch.randn(3, generator=g)},
        "m": {},
        "a": {
            "y": torch.randn(4, generator=g),
            "s": Static(True),
            "k": (torch.randn(1, generator=g),),
        },
        "c": torch.randn(2, 2, generator=g),
    }


_UNSORTED_PATHS = ["z.w", "z.b", "a.y", "a.k.0", "c"]
_CHAIN12_PATHS = [f"layer_{i}.{name}" for i in range(1, 13) for name in ("weight", "bias")]


def _get(t: dict, path: str):
    for part in path.split("."):
        t = t[int(part)] if isinstance(t, tuple) else t[part]
    return t


def _assert_same_leaves(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and torch.equal(g, w)


@pytest.mark.parametrize("which", ["chain12", "unsorted"])
def test_leaves_and_paths_follow_dict_insertion_order(which: str) -> None:
    t, expected = (
        (_chain12()[1], _CHAIN12_PATHS) if which == "chain12" else (_unsorted(), _UNSORTED_PATHS)
    )
    assert tree.paths(t) == expected  # layer_10 follows layer_9; weight before bias
    for leaf, path in zip(tree.leaves(t), expected, strict=True):
        assert leaf is _get(t, path)
    for path, leaf in tree.flatten_with_paths(t):
        assert leaf is _get(t, path)
    flat_leaves, spec = tree.flatten(t)
    assert [x is _get(t, p) for x, p in zip(flat_leaves, expected, strict=True)] == [True] * len(
        expected
    )
    assert tree.paths(tree.unflatten(spec, flat_leaves)) == expected
    assert tree.paths(tree.map(torch.neg, t)) == expected
    flat, _ = tree.ravel(t)
    assert torch.equal(flat, torch.cat([_get(t, p).reshape(-1) for p in expected]))


def _everything(t: dict) -> dict:
    """Every tree function on ``t``; under ``torch.compile`` and in eager mode alike."""
    flat_leaves, spec = tree.flatten(t)
    flat, unravel = tree.ravel(t)
    stacked = tree.stack([t, tree.map(lambda x: x + 1, t)])
    return {
        "leaves": tree.leaves(t),
        "map": tree.map(lambda x: x * 2, t),
        "map_leaves": tree.leaves(tree.map(lambda x: x * 2, t)),
        "flatten": flat_leaves,
        "unflatten": tree.unflatten(spec, [x - 1 for x in flat_leaves]),
        "paths": tree.paths(t),
        "with_paths": tree.flatten_with_paths(t),
        "ravel": flat,
        "unravel": unravel(flat * 3),
        "stacked_leaves": tree.leaves(stacked),
        "unstacked": tree.unstack(stacked),
        "count": tree.count(t),
        "same_structure": tree.structure(t) == tree.structure(tree.map(torch.neg, t)),
    }


def _assert_results_agree(got: dict, want: dict) -> None:
    for name in ("leaves", "map_leaves", "flatten", "ravel", "stacked_leaves"):
        got_ = got[name] if isinstance(got[name], list) else [got[name]]
        want_ = want[name] if isinstance(want[name], list) else [want[name]]
        _assert_same_leaves(got_, want_)
    for name in ("map", "unflatten", "unravel"):
        assert tree.paths(got[name]) == tree.paths(want[name])  # key order kept as well
        _assert_same_leaves(tree.leaves(got[name]), tree.leaves(want[name]))
    assert got["paths"] == want["paths"]
    assert [p for p, _ in got["with_paths"]] == want["paths"]
    _assert_same_leaves([x for _, x in got["with_paths"]], [x for _, x in want["with_paths"]])
    assert len(got["unstacked"]) == len(want["unstacked"]) == 2
    for g, w in zip(got["unstacked"], want["unstacked"], strict=True):
        assert tree.paths(g) == tree.paths(w)
        _assert_same_leaves(tree.leaves(g), tree.leaves(w))
    assert got["count"] == want["count"] and got["same_structure"] is want["same_structure"] is True


@pytest.mark.parametrize("which", ["chain12", "unsorted"])
def test_every_tree_function_agrees_eager_and_compiled(which: str) -> None:
    t, expected = (
        (_chain12()[1], _CHAIN12_PATHS) if which == "chain12" else (_unsorted(), _UNSORTED_PATHS)
    )
    eager = _everything(t)
    assert eager["paths"] == expected
    torch._dynamo.reset()
    compiled = torch.compile(_everything, fullgraph=True, backend="eager")(t)
    _assert_results_agree(compiled, eager)


def test_tree_functions_agree_under_vmap_and_make_fx() -> None:
    from torch.fx.experimental.proxy_tensor import make_fx

    t = _unsorted()
    members = [t, tree.map(lambda x: x * 5, t)]

    def ravel_and_leaves(member: dict) -> tuple:
        return tree.ravel(member)[0], *tree.leaves(tree.map(lambda x: x + 1, member))

    mapped = torch.func.vmap(ravel_and_leaves)(tree.stack(members))
    in_order = [torch.cat([_get(m, p).reshape(-1) for p in _UNSORTED_PATHS]) for m in members]
    assert torch.equal(mapped[0], torch.stack(in_order))
    per_member = [ravel_and_leaves(m) for m in members]
    _assert_same_leaves(list(mapped), [torch.stack(xs) for xs in zip(*per_member, strict=True)])

    traced = make_fx(ravel_and_leaves)(t)
    _assert_same_leaves(list(traced(t)), list(ravel_and_leaves(t)))


def test_ravel_equals_parameters_to_vector_of_the_equivalent_torch_module() -> None:
    _, ps, st = _chain12()
    module = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(12)])
    renamed = {
        f"{int(k.split('.')[0][len('layer_') :]) - 1}.{k.split('.', 1)[1]}": v
        for k, v in lux.state_dict(ps, st).items()
    }
    assert list(renamed) == list(module.state_dict())  # the same names in the same order
    module.load_state_dict(renamed)
    expected = torch.nn.utils.parameters_to_vector(module.parameters())
    assert torch.equal(tree.ravel(ps)[0], expected)


def test_state_dict_pairs_names_with_their_tensors_eager_and_compiled() -> None:
    model = lux.Chain(
        z=lux.VariationalHiddenDropout(0.5),
        a=lux.Dropout(0.5),
        net=lux.Chain(*[lux.Linear(3, 3) for _ in range(12)]),
    )
    ps, st = lux.setup(0, model)
    eager = lux.state_dict(ps, st)
    expected = [f"net.{p}" for p in _CHAIN12_PATHS] + ["z.mask_key", "a.key"]
    assert list(eager) == expected
    torch._dynamo.reset()
    compiled = torch.compile(lux.state_dict, fullgraph=True, backend="eager")(ps, st)
    assert list(compiled) == expected
    for name, value in compiled.items():
        source = _get(ps, name) if name.startswith("net.") else _get(st, name)
        assert torch.equal(value, source) and torch.equal(eager[name], source), name


def test_resample_masks_re_keys_only_mask_keys_eager_and_compiled() -> None:
    model = lux.Chain(z=lux.VariationalHiddenDropout(0.5), a=lux.Dropout(0.5))
    _, st = lux.setup(0, model)
    key = lux.random.key(7)
    eager = lux.resample_masks(st, key)
    torch._dynamo.reset()
    compiled = torch.compile(lux.resample_masks, fullgraph=True, backend="eager")(st, key)
    for new in (eager, compiled):
        assert not torch.equal(new["z"]["mask_key"], st["z"]["mask_key"])
        assert torch.equal(new["a"]["key"], st["a"]["key"])  # Dropout's key is not a mask key
        assert new["z"]["training"] == Static(True)
    assert torch.equal(compiled["z"]["mask_key"], eager["z"]["mask_key"])


def test_allclose_and_flatten_like_match_dict_entries_by_key() -> None:
    t = _unsorted()
    reordered = {"c": t["c"], "a": dict(reversed(t["a"].items())), "m": {}, "z": t["z"]}
    assert tree.allclose(t, reordered)
    assert not tree.allclose(t, {**reordered, "c": t["c"] + 1})
    assert tree.paths(reordered) != tree.paths(t)
    leaves_, _ = tree.flatten_like(reordered, t, "grads")  # in the order of ``like``
    _assert_same_leaves(leaves_, tree.leaves(t))
    with pytest.raises(ValueError, match=r"missing \['c'\]"):
        tree.flatten_like({k: v for k, v in reordered.items() if k != "c"}, t, "grads")


def test_unravel_from_an_eager_ravel_runs_under_compile() -> None:
    # the usual pattern: ravel once in eager mode, compile a loss of the flat vector
    t = _unsorted()
    flat, unravel = tree.ravel(t)
    torch._dynamo.reset()
    compiled = torch.compile(lambda v: unravel(v * 2), fullgraph=True, backend="eager")(flat)
    eager = unravel(flat * 2)
    assert tree.paths(compiled) == tree.paths(eager) == _UNSORTED_PATHS
    assert compiled["m"] == {} and compiled["a"]["s"] == Static(True)
    _assert_same_leaves(tree.leaves(compiled), tree.leaves(eager))


def test_an_optimizer_step_matches_grads_to_parameters_by_key_not_position() -> None:
    _, ps, _ = _chain12()
    grads = tree.map(lambda p: torch.full_like(p, 0.5) * p, ps)
    reordered = dict(reversed([(k, dict(reversed(v.items()))) for k, v in grads.items()]))
    assert tree.paths(reordered) != tree.paths(grads)
    opt = lux.optim.adam(1e-2)
    state = opt.init(ps)
    want = lux.optim.apply_updates(ps, opt.update(grads, state, ps)[0])
    got = lux.optim.apply_updates(ps, opt.update(reordered, state, ps)[0])
    assert tree.paths(got) == tree.paths(ps)
    assert tree.allclose(got, want, rtol=0, atol=0)
