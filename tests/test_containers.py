"""Lux's combinators: naming, indexing, semantics per Lux, state threading, conformance.

Every container goes through the conformance harness in float32 (with ``torch.compile``)
and float64 (compile skipped: the float32 run already captured the same graph).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import pytest
import torch
from helpers import DTYPES, check, randn
from torch import nn

from lux_torch.core import Layer, param_count, setup, test_mode
from lux_torch.layers import (
    Bilinear,
    BranchLayer,
    Chain,
    Dropout,
    Linear,
    Maxout,
    NoOpLayer,
    PairwiseFusion,
    Parallel,
    RepeatedLayer,
    Scale,
    SkipConnection,
    WrappedFunction,
)
from lux_torch.testing import check_layer
from lux_torch.tree import Static


class Counter(Layer):
    """Adds ``shift`` and counts its calls in ``st["calls"]`` (checks state threading)."""

    shift: float = 1.0

    def init_state(self, key: torch.Tensor) -> dict[str, Any]:
        return {"calls": torch.zeros((), dtype=torch.int64), "training": Static(True)}

    def __call__(self, x, ps, st):
        return x + self.shift, {"calls": st["calls"] + 1, "training": st["training"]}


def _calls(st: dict) -> dict[str, int]:
    """``{path: calls}`` of every Counter state in ``st``."""
    out = {}
    for name, sub in st.items():
        if isinstance(sub, dict):
            if "calls" in sub:
                out[name] = int(sub["calls"])
            else:
                out |= {f"{name}.{k}": v for k, v in _calls(sub).items()}
    return out


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("dtype", DTYPES)
def test_chain_matches_nn_sequential(dtype):
    """Chain conformance, with nn.Sequential (names "0", "2") as the reference."""
    model = Chain(Linear(3, 4, activation=torch.tanh), Linear(4, 2))
    seq = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to("meta")
    names = {"layer_1": "0", "layer_2": "2"}

    def reference(tensors, x):
        renamed = {names[k.split(".")[0]] + "." + k.split(".")[1]: t for k, t in tensors.items()}
        return torch.func.functional_call(seq, renamed, (x,))

    report = check(
        model,
        randn(2, 3, dtype=dtype),
        dtype,
        reference=reference,
        expected_repr=(
            "Chain(\n"
            "    layer_1 = Linear(3 => 4, tanh),     # 16 parameters\n"
            "    layer_2 = Linear(4 => 2),           # 10 parameters\n"
            ")         # Total: 26 parameters,\n"
            "          #        plus 0 states."
        ),
    )
    assert report["parity"] == "passed" and report["vmap"] == "passed"


def test_chain_output_equals_nn_sequential_with_the_same_weights():
    model = Chain(Linear(3, 5, activation=torch.relu), Linear(5, 2))
    ps, st = setup(7, model)
    seq = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).to("meta")
    weights = {
        "0.weight": ps["layer_1"]["weight"],
        "0.bias": ps["layer_1"]["bias"],
        "2.weight": ps["layer_2"]["weight"],
        "2.bias": ps["layer_2"]["bias"],
    }
    x = randn(6, 3)
    y, _ = model(x, ps, st)
    torch.testing.assert_close(y, torch.func.functional_call(seq, weights, (x,)), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_combinators_conformance(dtype):
    x = randn(2, 3, dtype=dtype)
    pair = (x, randn(2, 3, dtype=dtype, seed=2))
    cases = [
        (Parallel(torch.add, Linear(3, 2), Linear(3, 2)), pair),
        (Parallel(None, Linear(3, 2), Scale(3)), x),
        (Parallel(Bilinear(2, 3, 2), Linear(3, 2), NoOpLayer()), x),
        (SkipConnection(Linear(3, 3, activation=torch.tanh), torch.add), x),
        (SkipConnection(Linear(3, 2), Bilinear(2, 3, 1)), x),
        (BranchLayer(Linear(3, 2), Scale(3)), x),
        (BranchLayer(Linear(3, 2), Linear(3, 2), fusion=torch.mul), x),
        (PairwiseFusion(torch.add, Linear(3, 3), Linear(3, 3)), (x, *pair)),
        (Maxout(Linear(3, 2), Linear(3, 2)), x),
        (RepeatedLayer(Linear(3, 3, activation=torch.tanh), repeats=3), x),
        (
            RepeatedLayer(
                Parallel(torch.add, Linear(3, 3, activation=torch.tanh), Scale(3)),
                repeats=2,
                input_injection=True,
            ),
            x,
        ),
    ]
    for layer, inputs in cases:
        report = check(layer, inputs, dtype, compile=False)
        assert report["gradcheck"] == "passed" and report["vmap"] == "passed"
    # torch.compile(fullgraph=True) of every combinator nested in one Chain: one compile
    # instead of eleven
    model = Chain(
        SkipConnection(Linear(3, 3, activation=torch.tanh), torch.add),
        RepeatedLayer(Scale(3), repeats=2),
        BranchLayer(Linear(3, 3), Scale(3)),
        Parallel(torch.add, Linear(3, 3), Linear(3, 3)),
        Maxout(Linear(3, 3), Scale(3)),
        BranchLayer(NoOpLayer(), Scale(3), NoOpLayer()),
        PairwiseFusion(torch.mul, Linear(3, 3), Scale(3)),
    )
    report = check(model, x, dtype, gradcheck=False)
    assert report["compile"] == ("passed" if dtype == torch.float32 else "skipped: disabled")


def test_containers_thread_state_under_compile_and_vmap():
    """Stateful children (a Dropout key, Counters) in every container, in one graph."""
    model = Chain(
        Dropout(0.5),
        Parallel(torch.add, Counter(), Counter()),
        BranchLayer(Counter(), fusion=lambda y: y),
        SkipConnection(Counter(), Chain(WrappedFunction(lambda t: t[0] + t[1]), Counter())),
        Maxout(Counter(), Counter(-1.0)),
        PairwiseFusion(torch.add, Counter(), Counter()),
        RepeatedLayer(Counter(), repeats=3),
    )
    report = check_layer(model, randn(2, 3), gradcheck=False, stochastic=True)
    assert report["compile[train]"] == "passed" and report["vmap[train]"] == "passed"
    ps, st = setup(0, model)
    _, new_st = model(randn(2, 3), ps, st)
    assert _calls(new_st) == {
        "layer_2.layer_1": 1,
        "layer_2.layer_2": 1,
        "layer_3.layer_1": 1,
        "layer_4.layer": 1,
        "layer_4.connection.layer_2": 1,
        "layer_5.layer_1": 1,
        "layer_5.layer_2": 1,
        "layer_6.layer_1": 1,
        "layer_6.layer_2": 1,
        "layer_7.layer": 3,
    }
    assert not torch.equal(new_st["layer_1"]["key"], st["layer_1"]["key"])
    assert _calls(model(randn(2, 3), ps, new_st)[1])["layer_7.layer"] == 6
    # test mode reaches every child's flag
    _, test_st = model(randn(2, 3), ps, test_mode(st))
    assert torch.equal(test_st["layer_1"]["key"], st["layer_1"]["key"])


# --------------------------------------------------------------------------- Chain


def test_chain_names_children_like_lux():
    a, b = Linear(2, 3), Linear(3, 1)
    assert list(Chain(a, b).layers) == ["layer_1", "layer_2"]
    assert list(Chain(enc=a, dec=b).layers) == ["enc", "dec"]
    assert Chain({"enc": a, "dec": b}) == Chain(enc=a, dec=b)
    ps, _ = setup(0, Chain(enc=a, dec=b))
    assert set(ps) == {"enc", "dec"} and ps["enc"]["weight"].shape == (3, 2)
    nested = Chain(Chain(a, torch.tanh), b)
    ps = setup(0, nested)[0]
    assert set(ps["layer_1"]) == {"layer_1", "layer_2"} and ps["layer_1"]["layer_2"] == {}
    assert nested[0][1] == WrappedFunction(torch.tanh)
    assert Chain()(torch.ones(2), {}, {})[0].shape == (2,)  # the empty Chain is the identity
    with pytest.raises(TypeError, match="either positionally"):
        Chain(a, dec=b)
    with pytest.raises(TypeError, match=r"Chain: layer_2 is a torch.nn.Module \(Linear\)"):
        Chain(a, nn.Linear(3, 1, device="meta"))
    with pytest.raises(TypeError, match="Chain: layer_1 must be a Layer or a callable, got int"):
        Chain(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"without '\.'"):
        Chain({"a.b": a})


def test_chain_indexing_slicing_and_ps_subtrees():
    model = Chain(Linear(2, 4, activation=torch.tanh), Linear(4, 4), torch.relu, Linear(4, 1))
    ps, st = setup(0, model)
    x = randn(3, 2)
    assert model[0] == Linear(2, 4, activation=torch.tanh) and model[-1] == Linear(4, 1)
    assert model["layer_3"] == WrappedFunction(torch.relu)
    assert len(model) == 4 and list(model) == list(model.layers.values())
    head, tail = model[:2], model[2:]
    assert isinstance(head, Chain) and list(tail.layers) == ["layer_3", "layer_4"]
    assert list(model[::2].layers) == ["layer_1", "layer_3"]
    mid, _ = head(x, {k: ps[k] for k in head.layers}, {k: st[k] for k in head.layers})
    y, _ = tail(mid, {k: ps[k] for k in tail.layers}, {k: st[k] for k in tail.layers})
    assert torch.equal(y, model(x, ps, st)[0])
    with pytest.raises(IndexError):
        model[4]
    with pytest.raises(KeyError):
        model["nope"]


def test_chain_rejects_extra_or_missing_entries():
    model = Chain(Linear(2, 3), Linear(3, 1))
    ps, st = setup(0, model)
    with pytest.raises(ValueError, match="ps has unexpected keys: layer_3"):
        model(randn(4, 2), ps | {"layer_3": {}}, st)
    with pytest.raises(ValueError, match="st is missing keys: layer_2"):
        model(randn(4, 2), ps, {"layer_1": {}})
    with pytest.raises(KeyError, match=r"ps is missing keys: layer_2\.weight"):
        model(randn(4, 2), {"layer_1": ps["layer_1"], "other": {}}, st)


def test_errors_name_the_path_of_the_failing_layer():
    model = Chain(enc=Chain(Linear(2, 3), Linear(4, 1)), head=Linear(1, 1))
    ps, st = setup(0, model)
    with pytest.raises(RuntimeError, match=r"in enc\.layer_2 \(Linear\(4 => 1\)\)") as info:
        model(randn(5, 2), ps, st)
    assert "expected input of shape (*, 4), got (5, 3)" in info.value.__notes__[0]
    skip = SkipConnection(Linear(2, 2), Chain(WrappedFunction(lambda t: t[0]), Linear(3, 1)))
    ps, st = setup(0, skip)
    with pytest.raises(RuntimeError, match=r"connection\.layer_2 \(Linear\(3 => 1\)\)"):
        skip(randn(5, 2), ps, st)


def test_containers_are_immutable_and_compare_by_configuration():
    model = Chain(Linear(2, 3), torch.relu)
    assert model == Chain(Linear(2, 3), torch.relu)
    assert hash(model) == hash(Chain(Linear(2, 3), torch.relu))
    assert model != Chain(torch.relu, Linear(2, 3))
    assert model != Chain(a=Linear(2, 3), b=torch.relu)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.layers = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        model.layers["layer_3"] = Linear(1, 1)  # type: ignore[index]
    assert Parallel(operator.add, Linear(2, 2)) == Parallel(operator.add, Linear(2, 2))
    assert Parallel(operator.add, Linear(2, 2)) != Parallel(operator.mul, Linear(2, 2))
    assert RepeatedLayer(Linear(2, 2), 3) != RepeatedLayer(Linear(2, 2), 4)
    assert hash(SkipConnection(Linear(2, 2), operator.add)) == hash(
        SkipConnection(Linear(2, 2), operator.add)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        RepeatedLayer(Linear(2, 2)).repeats = 2  # type: ignore[misc]


# --------------------------------------------------------------------------- other containers


def test_parallel_semantics():
    l1, l2 = Linear(3, 2), Linear(3, 2)
    model = Parallel(torch.add, l1, l2)
    ps, st = setup(0, model)
    assert list(ps) == ["layer_1", "layer_2"]
    x1, x2 = randn(4, 3), randn(4, 3, seed=2)
    y1 = l1(x1, ps["layer_1"], {})[0]
    y2 = l2(x2, ps["layer_2"], {})[0]
    assert torch.equal(model((x1, x2), ps, st)[0], y1 + y2)  # a tuple: one input per layer
    shared = model(x1, ps, st)[0]  # anything else: every layer gets it
    assert torch.equal(shared, y1 + l2(x1, ps["layer_2"], {})[0])
    out, _ = Parallel(None, l1, l2)((x1, x2), ps, st)
    assert isinstance(out, tuple) and torch.equal(out[0], y1) and torch.equal(out[1], y2)
    with pytest.raises(ValueError, match="got a tuple of 3 inputs for 2 layers"):
        model((x1, x2, x1), ps, st)
    # a layer as the connection is a child that receives the tuple of outputs
    fused = Parallel(Bilinear(2, 2, 1), l1, l2)
    ps, st = setup(0, fused)
    assert list(ps) == ["layer_1", "layer_2", "connection"]
    y = fused((x1, x2), ps, st)[0]
    y1, y2 = l1(x1, ps["layer_1"], {})[0], l2(x2, ps["layer_2"], {})[0]
    assert torch.equal(y, Bilinear(2, 2, 1)((y1, y2), ps["connection"], {})[0])
    named = Parallel(None, a=l1, b=l2)
    assert list(setup(0, named)[0]) == ["a", "b"]
    with pytest.raises(ValueError, match="Parallel: needs at least 1 layer"):
        Parallel(torch.add)
    with pytest.raises(TypeError, match="connection must be a function or None"):
        Parallel(3, l1)  # type: ignore[arg-type]


def test_skip_connection_semantics():
    inner = Linear(3, 3)
    block = SkipConnection(inner, torch.add)
    ps, st = setup(0, block)
    assert list(ps) == ["layer"]
    x = randn(4, 3)
    assert torch.equal(block(x, ps, st)[0], inner(x, ps["layer"], {})[0] + x)
    # a plain callable as the layer is wrapped; a layer as the connection gets (y, x)
    assert SkipConnection(torch.sin, torch.add).layer == WrappedFunction(torch.sin)
    mixed = SkipConnection(Linear(3, 2), Bilinear(2, 3, 1))
    ps, st = setup(0, mixed)
    assert list(ps) == ["layer", "connection"]
    y_inner = Linear(3, 2)(x, ps["layer"], {})[0]
    expected = Bilinear(2, 3, 1)((y_inner, x), ps["connection"], {})[0]
    assert torch.equal(mixed(x, ps, st)[0], expected)
    assert param_count(mixed) == 8 + 7
    with pytest.raises(TypeError, match="SkipConnection: connection must be a function"):
        SkipConnection(inner, None)  # type: ignore[arg-type]


def test_branch_layer_semantics():
    l1, l2 = Linear(3, 2), Scale(3)
    model = BranchLayer(l1, l2)
    ps, st = setup(0, model)
    x = randn(4, 3)
    (a, b), _ = model(x, ps, st)
    assert torch.equal(a, l1(x, ps["layer_1"], {})[0]) and torch.equal(b, x)
    # a tuple input is not split (unlike Parallel)
    pair = (x, x)
    empty: dict[str, dict[str, Any]] = {"layer_1": {}, "layer_2": {}}
    out, _ = BranchLayer(NoOpLayer(), NoOpLayer())(pair, empty, empty)
    assert out == (pair, pair)
    fused = BranchLayer(Linear(3, 2), Linear(3, 2), fusion=torch.add)
    ps, st = setup(0, fused)
    y = fused(x, ps, st)[0]
    parts = [Linear(3, 2)(x, ps[k], {})[0] for k in ("layer_1", "layer_2")]
    assert torch.equal(y, parts[0] + parts[1])
    with_layer = BranchLayer(Linear(3, 2), Linear(3, 2), fusion=Bilinear(2, 2, 1))
    ps, st = setup(0, with_layer)
    assert list(ps) == ["layer_1", "layer_2", "fusion"]
    parts = [Linear(3, 2)(x, ps[k], {})[0] for k in ("layer_1", "layer_2")]
    expected = Bilinear(2, 2, 1)((parts[0], parts[1]), ps["fusion"], {})[0]
    assert torch.equal(with_layer(x, ps, st)[0], expected)
    assert repr(BranchLayer(NoOpLayer(), fusion=torch.add)).splitlines()[1] == "    fusion=add,"


def test_pairwise_fusion_semantics():
    l1, l2 = Linear(3, 3), Linear(3, 3)
    model = PairwiseFusion(torch.mul, l1, l2)
    ps, st = setup(0, model)
    x1, x2, x3 = randn(4, 3), randn(4, 3, seed=2), randn(4, 3, seed=3)

    def f1(v):
        return l1(v, ps["layer_1"], {})[0]

    def f2(v):
        return l2(v, ps["layer_2"], {})[0]

    # Lux: y = x1; y = connection(layer_i(y), x_{i+1})
    assert torch.equal(model((x1, x2, x3), ps, st)[0], f2(f1(x1) * x2) * x3)
    assert torch.equal(model(x1, ps, st)[0], f2(f1(x1) * x1) * x1)
    with pytest.raises(ValueError, match=r"expected a tuple of 3 inputs \(one more than the 2"):
        model((x1, x2), ps, st)
    with pytest.raises(TypeError, match="connection must be a plain function"):
        PairwiseFusion(Linear(3, 3), l1)


def test_maxout_semantics():
    l1, l2, l3 = Linear(3, 2), Linear(3, 2), Linear(3, 2)
    model = Maxout(l1, l2, l3)
    ps, st = setup(0, model)
    x = randn(5, 3)
    ys = [layer(x, ps[k], {})[0] for layer, k in zip((l1, l2, l3), ps, strict=True)]
    assert torch.equal(model(x, ps, st)[0], torch.stack(ys).amax(0))
    assert param_count(model) == 3 * 8


def test_repeated_layer_semantics():
    inner = Linear(3, 3, activation=torch.tanh)
    model = RepeatedLayer(inner, repeats=3)
    ps, st = setup(0, model)
    assert list(ps) == ["layer"] and param_count(model) == param_count(inner)
    x = randn(4, 3)
    expected = x
    for _ in range(3):
        expected = inner(expected, ps["layer"], {})[0]
    assert torch.equal(model(x, ps, st)[0], expected)
    injected = RepeatedLayer(Parallel(torch.add, inner, NoOpLayer()), 2, input_injection=True)
    ps, st = setup(0, injected)
    y = x
    for _ in range(2):
        y = inner(y, ps["layer"]["layer_1"], {})[0] + x
    assert torch.equal(injected(x, ps, st)[0], y)
    assert RepeatedLayer(inner).repeats == 10  # Lux's default
    assert repr(model).splitlines()[1] == "    repeats=3,"
    with pytest.raises(ValueError, match="RepeatedLayer: repeats must be >= 1, got 0"):
        RepeatedLayer(inner, 0)
    with pytest.raises(TypeError, match="input_injection must be a bool"):
        RepeatedLayer(inner, 2, input_injection=1)  # type: ignore[arg-type]
