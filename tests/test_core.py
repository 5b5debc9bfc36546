"""The core contract: immutable layers, automatic children, setup, counts, modes, errors."""

from __future__ import annotations

import dataclasses
import zlib

import pytest
import torch

import lux_torch as lux
from lux_torch import Layer
from lux_torch.core import child_key
from lux_torch.tree import Static


class Affine(Layer):
    """Per-feature scale and shift (a minimal custom layer)."""

    features: int

    def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "weight": lux.init.normal(key, self.features),
            "bias": lux.init.zeros(key, self.features),
        }

    def __call__(self, x, ps, st):
        return x * ps["weight"] + ps["bias"], st

    def describe_input_error(self, x):
        return f"expected input of shape (*, {self.features}), got {tuple(x.shape)}"


class Counter(Layer):
    """A layer with state: counts its calls (and behaves differently in test mode)."""

    def init_state(self, key: torch.Tensor) -> dict:
        return {"calls": torch.zeros((), dtype=torch.int64), "training": Static(True)}

    def __call__(self, x, ps, st):
        if st["training"]:
            return x, {"calls": st["calls"] + 1, "training": st["training"]}
        return -x, st


class Composite(Layer):
    """Children from a Layer field, a tuple field and a dict field."""

    encoder: Layer
    blocks: tuple | list  # a list is frozen to a tuple
    heads: dict
    scale: float = 1.0

    def __call__(self, x, ps, st):
        new_st = {}
        x, new_st["encoder"] = self.encoder(x, ps["encoder"], st["encoder"])
        for i, block in enumerate(self.blocks, 1):
            name = f"blocks_{i}"
            x, new_st[name] = block(x, ps[name], st[name])
        for name, head in self.heads.items():
            _, new_st[name] = head(x, ps[name], st[name])
        return x * self.scale, new_st


def _composite() -> Composite:
    return Composite(Affine(3), [Affine(3), Counter()], {"mean": Affine(3), "count": Counter()})


def test_layers_are_frozen_and_compare_by_configuration():
    layer = Affine(3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.features = 4  # type: ignore[misc]
    assert layer == Affine(3) and hash(layer) == hash(Affine(3))
    assert layer != Affine(4)
    assert dataclasses.replace(layer, features=5).features == 5
    comp = _composite()
    assert isinstance(comp.blocks, tuple)  # lists are frozen into tuples
    with pytest.raises(TypeError):
        comp.heads["x"] = Affine(1)  # dicts are read-only
    assert hash(comp) == hash(_composite()) and comp == _composite()


def test_tensor_fields_are_rejected():
    with pytest.raises(TypeError, match=r"Affine\.features is a Tensor"):
        Affine(torch.tensor(3))  # type: ignore[arg-type]


def test_children_are_automatic_and_named():
    names = list(_composite().children())
    assert names == ["encoder", "blocks_1", "blocks_2", "mean", "count"]
    with pytest.raises(ValueError, match="two children are named 'encoder'"):
        Composite(Affine(3), (), {"encoder": Affine(3)})


def test_setup_builds_nested_trees_with_per_child_keys():
    key = lux.random.key(7)
    comp = _composite()
    ps, st = lux.setup(key, comp)
    assert set(ps) == {"encoder", "blocks_1", "blocks_2", "mean", "count"}
    assert ps["blocks_2"] == {} and st["blocks_2"]["calls"].item() == 0
    assert torch.equal(
        ps["encoder"]["weight"], Affine(3).init_params(child_key(key, "encoder"))["weight"]
    )
    # different children get different keys
    assert not torch.equal(ps["encoder"]["weight"], ps["mean"]["weight"])


def _same_tree(a, b) -> bool:
    return lux.tree.structure(a) == lux.tree.structure(b) and all(
        x.dtype == y.dtype and torch.equal(x, y)
        for x, y in zip(lux.tree.leaves(a), lux.tree.leaves(b), strict=True)
    )


def test_child_keys_follow_the_documented_formula():
    # the documented formula, computed here from zlib and fold_in: a changed formula (say
    # crc32(name) ^ 1) would silently change every model's initial parameters
    key = lux.random.key(7)
    for name in ["encoder", "layer_1", "layer_10", "blocks_2", "weight_hh_l0", "ünï"]:
        golden = lux.random.fold_in(key, zlib.crc32(name.encode()))
        assert torch.equal(child_key(key, name), golden), name
    # setup hands each child exactly that key: its whole (ps, st) equals the child's own
    # setup from it (Dropout's st["key"] shows the key itself)
    for model in (_composite(), lux.Chain(lux.Linear(2, 3), lux.Dropout(0.5), Affine(3))):
        ps, st = lux.setup(key, model)
        for name, child in model.children().items():
            golden = lux.random.fold_in(key, zlib.crc32(name.encode()))
            child_ps, child_st = lux.setup(golden, child)
            assert _same_tree(ps[name], child_ps) and _same_tree(st[name], child_st), name


def test_adding_a_layer_keeps_siblings_initial_parameters():
    key = lux.random.key(0)
    small = lux.Chain(lux.Linear(2, 4), lux.Linear(4, 4))
    big = lux.Chain(lux.Linear(2, 4), lux.Linear(4, 4), lux.Linear(4, 1))
    ps_small, ps_big = lux.init_params(key, small), lux.init_params(key, big)
    assert lux.tree.allclose(ps_small["layer_1"], ps_big["layer_1"], rtol=0, atol=0)
    assert lux.tree.allclose(ps_small["layer_2"], ps_big["layer_2"], rtol=0, atol=0)
    named = lux.Chain(enc=lux.Linear(2, 4), dec=lux.Linear(4, 1))
    assert set(lux.init_params(key, named)) == {"enc", "dec"}


def test_setup_is_deterministic_and_key_dependent():
    model = lux.Chain(lux.Linear(2, 4), lux.Dropout(0.1))
    a, b, c = (lux.setup(lux.random.key(s), model) for s in (0, 0, 1))
    assert lux.tree.allclose(a[0], b[0], rtol=0, atol=0)
    assert not lux.tree.allclose(a[0], c[0])
    assert lux.tree.allclose(lux.setup(0, model)[0], a[0], rtol=0, atol=0)  # int seeds work


def test_setup_dtype_and_device():
    model = lux.Chain(lux.Linear(2, 4), lux.Dropout(0.1))
    ps, st = lux.setup(lux.random.key(0), model, dtype=torch.float64)
    assert all(leaf.dtype == torch.float64 for leaf in lux.tree.leaves(ps))
    assert st["layer_2"]["key"].dtype == torch.int64  # keys are never cast
    ps_meta, st_meta = lux.setup(lux.random.key(0), model, device="meta")
    assert all(leaf.is_meta for leaf in lux.tree.leaves((ps_meta, st_meta)))
    # a float64 setup draws in float64 (not a float32 draw cast up)
    w64 = ps["layer_1"]["weight"]
    assert not torch.equal(w64.float().double(), w64)


def test_setup_rejects_bad_keys_and_models():
    with pytest.raises(TypeError, match=r"lux.setup|lux.init_params.*expected a key"):
        lux.setup(torch.zeros(3), lux.Linear(2, 2))
    with pytest.raises(TypeError, match=r"lux\.setup: expected a lux_torch Layer, got str"):
        lux.setup(0, "Linear")  # type: ignore[arg-type]


def test_setup_of_a_torch_module_points_to_from_torch():
    message = (
        r"lux.setup: expected a lux_torch Layer, got the torch.nn.Module Linear; wrap it as a "
        r"pure layer first: layer = lux.from_torch\(module\), then ps, st = lux.setup\(key, "
        r"layer\)"
    )
    with pytest.raises(TypeError, match=message):
        lux.setup(0, torch.nn.Linear(2, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"lux.init_params: .* lux.from_torch\(module\)"):
        lux.init_params(0, torch.nn.Sequential(torch.nn.Linear(2, 3)))  # type: ignore[arg-type]
    # the key left out, as in lux.setup(nn.Linear(2, 3))
    with pytest.raises(TypeError, match=message):
        lux.setup(torch.nn.Linear(2, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"lux.setup takes a key first: lux.setup\(lux.random"):
        lux.setup(lux.Linear(2, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"lux.init_state\(key, model\): no model given"):
        lux.init_state(0)


def test_counts_need_no_memory():
    n = 50_000
    huge = lux.Chain(*[lux.Linear(n, n) for _ in range(3)])  # 30 GB in float32 > this RAM
    assert lux.param_count(huge) == 3 * (n * n + n)
    assert lux.state_count(lux.Dropout(0.5)) == 2
    comp = _composite()
    ps, st = lux.setup(0, comp)
    assert lux.param_count(comp) == lux.tree.count(ps) == 18
    assert lux.state_count(comp) == lux.tree.count(st) == 2


def test_train_and_test_mode_are_static_copies():
    comp = _composite()
    ps, st = lux.setup(0, comp)
    st_test = lux.test_mode(st)
    assert st["count"]["training"] == Static(True)  # the original is untouched
    assert st_test["count"]["training"] == Static(False)
    assert st_test["blocks_2"]["training"] == Static(False)
    assert st_test["count"]["calls"] is st["count"]["calls"]  # leaves shared, not copied
    assert lux.train_mode(st_test)["count"]["training"] == Static(True)
    # the flag is structure, not a leaf
    assert all(isinstance(leaf, torch.Tensor) for leaf in lux.tree.leaves(st_test))
    x = torch.ones(2, 3)
    y_train, _ = comp(x, ps, st)
    y_test, _ = comp(x, ps, st_test)
    assert torch.allclose(y_test, -y_train)


def test_mode_flags_work_under_vmap_grad_and_compile():
    model = lux.Chain(Affine(3), Counter())
    keys = lux.random.split(lux.random.key(0), 4)
    members = [lux.setup(k, model) for k in keys]
    sps = lux.tree.stack([m[0] for m in members])
    sst = lux.tree.stack([lux.test_mode(m[1]) for m in members])
    x = torch.ones(2, 3)
    ys, new_st = torch.func.vmap(lambda p, s: model(x, p, s))(sps, sst)
    assert ys.shape == (4, 2, 3) and new_st["layer_2"]["training"] == Static(False)

    ps, st = members[0]

    def loss(p, s):
        y, s2 = model(x, p, s)
        return y.sum(), s2

    grads, st2 = torch.func.grad(loss, has_aux=True)(ps, st)
    assert st2["layer_2"]["calls"].item() == 1
    assert torch.allclose(grads["layer_1"]["bias"], torch.full((3,), 2.0))
    compiled = torch.compile(lambda p, s: model(x, p, s), fullgraph=True, backend="eager")
    for s in (st, lux.test_mode(st)):
        y_c, _ = compiled(ps, s)
        assert torch.allclose(y_c, model(x, ps, s)[0])


def test_call_is_pure_and_apply_matches():
    model = lux.Chain(Affine(3), Counter())
    ps, st = lux.setup(0, model)
    x = torch.ones(2, 3)
    before = lux.tree.map(torch.clone, (ps, st))
    y, st2 = lux.apply(model, x, ps, st)
    assert torch.equal(y, model(x, ps, st)[0])
    assert lux.tree.allclose((ps, st), before, rtol=0, atol=0)
    assert st2["layer_2"]["calls"].item() == 1 and st["layer_2"]["calls"].item() == 0


def test_stateful_layer_keeps_latest_state():
    model = lux.Chain(Affine(3), Counter())
    ps, st = lux.setup(0, model)
    f = lux.StatefulLayer(model, ps, st)
    f(torch.ones(1, 3))
    f(torch.ones(1, 3))
    assert f.st["layer_2"]["calls"].item() == 2
    assert "StatefulLayer(Chain(" in repr(f)
    with pytest.raises(ValueError, match=r"missing keys: layer_2\.calls"):
        lux.StatefulLayer(model, ps, {"layer_1": {}, "layer_2": {"training": Static(True)}})


def _notes(info: pytest.ExceptionInfo) -> str:
    return "\n".join(getattr(info.value, "__notes__", []))


def test_errors_name_the_layer_path_and_shapes():
    model = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Chain(dec=lux.Linear(16, 1)))
    ps, st = lux.setup(0, model)
    ps_bad = {**ps, "layer_2": {"dec": {"weight": torch.zeros(1, 3), "bias": torch.zeros(1)}}}
    with pytest.raises(ValueError) as info:
        model(torch.ones(4, 2), ps_bad, st)
    assert str(info.value).startswith(
        "Linear(16 => 1): ps['weight'] has shape (1, 3), but the layer's configuration "
        "expects a tensor of shape (1, 16)"
    )
    notes = _notes(info)
    assert "in layer_2.dec (Linear(16 => 1))" in notes
    with pytest.raises(RuntimeError) as runtime_info:
        model(torch.ones(4, 3), ps, st)
    notes = _notes(runtime_info)
    assert "in layer_1 (Linear(2 => 16, tanh))" in notes
    assert "expected" in notes and "(4, 3)" in notes


def test_errors_name_missing_and_unexpected_keys():
    model = lux.Chain(lux.Linear(2, 4), lux.Linear(4, 1))
    ps, st = lux.setup(0, model)
    missing = {"layer_1": ps["layer_1"], "layer_2": {"weight": ps["layer_2"]["weight"]}}
    with pytest.raises(KeyError) as info:
        model(torch.ones(1, 2), missing, st)
    assert "ps is missing keys: layer_2.bias" in _notes(info)
    extra = {**ps, "layer_3": {"weight": torch.zeros(1)}}
    with pytest.raises((KeyError, ValueError)) as either_info:
        model(torch.ones(1, 2), extra, st)
    assert "layer_3" in str(either_info.value) + _notes(either_info)
    with pytest.raises(ValueError, match="unexpected keys: layer_3"):
        lux.check_structure(model, extra, st)
    with pytest.raises(ValueError, match=r"layer_1.weight: expected shape \(4, 2\), got \(4, 3\)"):
        lux.check_structure(
            model, {**ps, "layer_1": {**ps["layer_1"], "weight": torch.zeros(4, 3)}}, st
        )


def test_non_tensor_input_names_the_layer():
    model = lux.Chain(lux.Linear(2, 4))
    ps, st = lux.setup(0, model)
    with pytest.raises(TypeError) as info:
        model([1.0, 2.0], ps, st)
    notes = _notes(info)
    assert "layer_1 (Linear(2 => 4))" in notes and "expected a Tensor" in notes


def test_custom_layer_gets_everything_for_free():
    comp = _composite()
    text = repr(comp)
    assert text.startswith("Composite(") and "blocks_1 = Affine(features=3)" in text
    assert "# Total: 18 parameters," in text and "plus 2 states." in text
    ps, st = lux.setup(0, comp)
    flat = lux.state_dict(ps, st)
    assert "blocks_1.weight" in flat and "count.calls" in flat


def test_layers_deepcopy_to_themselves_and_pickle_by_configuration() -> None:
    import copy
    import pickle

    model = lux.Chain(
        lux.Linear(2, 3, activation=torch.tanh),
        lux.Parallel(torch.add, a=lux.Linear(3, 3), b=lux.Dropout(0.1)),
        lux.LSTM(3, 4),
    )
    assert copy.deepcopy(model) is model  # immutable: nothing to copy
    restored = pickle.loads(pickle.dumps(model))
    assert restored == model and hash(restored) == hash(model)
    assert restored is not model
    ps, st = lux.setup(0, model)
    x = torch.ones(5, 2)
    out, _ = model(x, ps, lux.test_mode(st))
    again, _ = restored(x, ps, lux.test_mode(st))
    assert torch.equal(out[0], again[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        restored.layers = ()
