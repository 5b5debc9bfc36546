"""Tests for StackedChain (stacked parameters, one traced block under torch.compile) and the
scan path of RepeatedLayer and TransformerLM(scan_layers=True)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch

import lux_torch as lux
from lux_torch.layers.lm import drop_cache, init_cache
from lux_torch.layers.stacked import StackedChain
from lux_torch.models.transformer_lm import TransformerLM, generate
from lux_torch.testing import check_layer

F64 = torch.float64


def _block() -> lux.Chain:
    return lux.Chain(lux.Linear(3, 8, activation=torch.tanh), lux.Linear(8, 3))


def _unrolled(model: StackedChain) -> lux.Chain:
    return lux.Chain(*[model.layer] * model.n)


def _unstacked(model: StackedChain, tree: dict[str, Any]) -> dict[str, Any]:
    """The Chain's ``ps``/``st`` holding block ``i`` of the stacked tree as ``layer_{i+1}``."""
    return {
        f"layer_{i + 1}": lux.tree.map(lambda t, i=i: t[i], tree["layer"]) for i in range(model.n)
    }


def _chain_reference(model: StackedChain) -> Any:
    """check_layer's reference: the unrolled lux Chain fed the stacked tensors, block by block."""
    chain = _unrolled(model)

    def reference(tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        ps = {
            f"layer_{i + 1}": {
                "layer_1": {k: tensors[f"layer.layer_1.{k}"][i] for k in ("weight", "bias")},
                "layer_2": {k: tensors[f"layer.layer_2.{k}"][i] for k in ("weight", "bias")},
            }
            for i in range(model.n)
        }
        st: dict[str, Any] = {
            f"layer_{i + 1}": {"layer_1": {}, "layer_2": {}} for i in range(model.n)
        }
        y: torch.Tensor = chain(x, ps, st)[0]
        return y

    return reference


class _Graphs:
    """A torch.compile backend that keeps the graphs Dynamo hands over."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, inputs: Any) -> Any:
        self.graphs.append(gm)
        return gm.forward

    def count(self, name: str) -> int:
        """Calls of functions whose name contains ``name``, in every graph and subgraph."""
        return sum(
            name in str(node.target)
            for gm in self.graphs
            for module in gm.modules()
            if isinstance(module, torch.fx.GraphModule)
            for node in module.graph.nodes
            if node.op == "call_function"
        )


def _traced(model: lux.Layer, x: torch.Tensor, ps: Any, st: Any) -> _Graphs:
    backend = _Graphs()
    torch.compile(lambda x, ps, st: model(x, ps, st)[0], backend=backend, fullgraph=True)(x, ps, st)
    return backend


# --------------------------------------------------------------------------- StackedChain


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_stacked_chain_passes_the_conformance_harness(dtype: torch.dtype) -> None:
    model = StackedChain(_block(), 3)
    x = torch.randn(4, 3, dtype=dtype)
    ps, st = lux.setup(0, model, dtype=dtype)
    report = check_layer(model, x, ps=ps, st=st, reference=_chain_reference(model))
    assert report["parity"] == "passed" and report["compile"] == "passed"
    assert report["vmap"] == "passed" and report["gradcheck"] == "passed"


def test_init_gives_every_block_its_own_key() -> None:
    model = StackedChain(_block(), 4)
    ps, _ = lux.setup(0, model)
    keys = lux.random.split(lux.random.key(0), 4)
    for i, k in enumerate(keys):  # block i is layer.init_params(split(key, n)[i])
        block = lux.tree.map(lambda t, i=i: t[i], ps["layer"])
        assert lux.tree.allclose(block, model.layer.init_params(k))
    w = ps["layer"]["layer_1"]["weight"]
    assert w.shape == (4, 8, 3) and not torch.equal(w[0], w[1])
    assert lux.param_count(model) == 4 * lux.param_count(model.layer) == lux.tree.count(ps)


def test_eager_is_bitwise_the_unrolled_chain_outputs_and_gradients() -> None:
    model = StackedChain(_block(), 5)
    ps, st = lux.setup(1, model, dtype=F64)
    chain = _unrolled(model)
    x = torch.randn(6, 3, dtype=F64)
    y, new_st = model(x, ps, st)
    y_ref, _ = chain(x, _unstacked(model, ps), _unstacked(model, st))
    assert torch.equal(y, y_ref)
    assert new_st == {"layer": {"layer_1": {}, "layer_2": {}}}

    def loss(ps: Any) -> Any:
        return model(x, ps, st)[0].square().sum()

    def loss_ref(ps: Any) -> Any:
        return chain(x, ps, _unstacked(model, st))[0].square().sum()

    grads = torch.func.grad(loss)(ps)
    grads_ref = torch.func.grad(loss_ref)(_unstacked(model, ps))
    for i in range(model.n):
        got = lux.tree.leaves(lux.tree.map(lambda t, i=i: t[i], grads["layer"]))
        assert all(
            torch.equal(a, b)
            for a, b in zip(got, lux.tree.leaves(grads_ref[f"layer_{i + 1}"]), strict=True)
        )


def test_stateful_blocks_each_advance_their_own_key() -> None:
    model = StackedChain(lux.Chain(lux.Linear(3, 3), lux.Dropout(0.5)), 3)
    ps, st = lux.setup(2, model, dtype=F64)
    x = torch.randn(4, 3, dtype=F64)
    y, new_st = model(x, ps, st)
    y_ref, st_ref = _unrolled(model)(x, _unstacked(model, ps), _unstacked(model, st))
    assert torch.equal(y, y_ref)
    keys = new_st["layer"]["layer_2"]["key"]
    assert keys.shape[0] == 3
    for i in range(3):
        assert torch.equal(keys[i], st_ref[f"layer_{i + 1}"]["layer_2"]["key"])


def test_compile_traces_the_block_once_whatever_n() -> None:
    counts = []
    for n in (2, 7):
        model = StackedChain(_block(), n)
        ps, st = lux.setup(0, model)
        graphs = _traced(model, torch.randn(2, 3), ps, st)
        assert graphs.count("scan") == 1
        counts.append(graphs.count("linear"))
    assert counts == [2, 2]  # the block's two Linear layers, once


def test_compiled_matches_the_unrolled_chain_to_rounding_float64() -> None:
    # the scan's traced block goes through AOTAutograd's decompositions (linear as addmm in
    # another association): equal to float64 rounding, not bitwise
    model = StackedChain(_block(), 4)
    ps, st = lux.setup(3, model, dtype=F64)
    x = torch.randn(5, 3, dtype=F64, requires_grad=True)
    compiled = torch.compile(lambda x, ps: model(x, ps, st)[0], backend="aot_eager", fullgraph=True)
    ps_req = lux.tree.map(lambda t: t.detach().requires_grad_(), ps)
    y = compiled(x, ps_req)
    y.square().sum().backward()
    chain = _unrolled(model)
    x_ref = x.detach().requires_grad_()
    ps_ref = lux.tree.map(lambda t: t.detach().requires_grad_(), _unstacked(model, ps))
    y_ref, _ = chain(x_ref, ps_ref, _unstacked(model, st))
    y_ref.square().sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-13, atol=1e-15)
    for i in range(model.n):
        got = lux.tree.leaves(lux.tree.map(lambda t, i=i: t.grad[i], ps_req["layer"]))
        want = [t.grad for t in lux.tree.leaves(ps_ref[f"layer_{i + 1}"])]
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_transforms_inside_compile_fall_back_to_the_unrolled_loop() -> None:
    # torch.func.grad / vmap under torch.compile cannot hold the scan operator (torch 2.13)
    model = StackedChain(_block(), 3)
    ps, st = lux.setup(0, model, dtype=F64)
    x = torch.randn(4, 3, dtype=F64)

    def loss(ps: Any) -> Any:
        return model(x, ps, st)[0].square().sum()

    grads = torch.compile(torch.func.grad(loss), backend="aot_eager", fullgraph=True)(ps)
    assert lux.tree.allclose(grads, torch.func.grad(loss)(ps), rtol=0, atol=0)
    batched = torch.func.vmap(lambda x: model(x, ps, st)[0])
    xs = torch.randn(2, 4, 3, dtype=F64)
    got = torch.compile(batched, backend="aot_eager", fullgraph=True)(xs)
    assert torch.equal(got, batched(xs))


def test_wrong_leading_dimension_names_the_entry() -> None:
    model = StackedChain(_block(), 3)
    ps, st = lux.setup(0, model)
    ps["layer"]["layer_2"]["bias"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"layer_2\.bias should have a leading dimension of 3"):
        model(torch.randn(2, 3), ps, st)


def test_construction_checks_and_repr_and_pickle() -> None:
    with pytest.raises(ValueError, match="n"):
        StackedChain(_block(), 0)
    model = StackedChain(lux.Linear(2, 2), 4)
    assert repr(model).startswith("StackedChain(\n    n=4,\n    layer = Linear(2 => 2)")
    assert pickle.loads(pickle.dumps(model)) == model
    assert model == StackedChain(lux.Linear(2, 2), 4) != StackedChain(lux.Linear(2, 2), 3)


# --------------------------------------------------------------------------- RepeatedLayer


@pytest.mark.parametrize("injection", [False, True])
def test_repeated_layer_compiles_the_layer_once_with_unchanged_numerics(injection: bool) -> None:
    inner = lux.Parallel(torch.add, lux.Linear(3, 3, activation=torch.tanh), lux.Scale(3))
    layer = inner if injection else lux.Linear(3, 3, activation=torch.tanh)
    counts = []
    for repeats in (2, 5):
        model = lux.RepeatedLayer(layer, repeats=repeats, input_injection=injection)
        ps, st = lux.setup(0, model, dtype=F64)
        x = torch.randn(4, 3, dtype=F64)
        graphs = _traced(model, x, ps, st)
        assert graphs.count("scan") == 1
        counts.append(graphs.count("linear"))
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        assert torch.equal(compiled(x, ps, st)[0], model(x, ps, st)[0])
    assert counts == [1, 1]


# --------------------------------------------------------------------------- TransformerLM


def _lms() -> tuple[TransformerLM, TransformerLM, Any, Any, Any, Any]:
    kw: dict[str, Any] = {"num_kv_heads": 2, "max_len": 16}
    unrolled = TransformerLM(11, 16, 3, 4, **kw)
    scanned = TransformerLM(11, 16, 3, 4, scan_layers=True, **kw)
    ps, st = lux.setup(0, unrolled, dtype=F64)
    blocks = [f"blocks_{i}" for i in range(1, 4)]
    ps_s = {"embed": ps["embed"], "blocks": {"layer": lux.tree.stack([ps[b] for b in blocks])}}
    ps_s.update(norm=ps["norm"], lm_head=ps["lm_head"])
    st_s = {"embed": st["embed"], "blocks": {"layer": st["blocks_1"]}}
    st_s.update(norm=st["norm"], lm_head=st["lm_head"])
    return unrolled, scanned, ps, st, ps_s, st_s


def test_transformer_lm_scan_layers_is_bitwise_the_unrolled_model() -> None:
    unrolled, scanned, ps, st, ps_s, st_s = _lms()
    assert lux.tree.paths(lux.setup(0, scanned)[0]) == lux.tree.paths(ps_s)
    assert lux.interop.state_dict(ps_s, st_s)["blocks.layer.norm1.weight"].shape == (3, 16)
    assert "scan_layers=True" in repr(scanned)
    tokens = torch.randint(0, 11, (2, 7))
    assert torch.equal(scanned(tokens, ps_s, st_s)[0], unrolled(tokens, ps, st)[0])


def test_transformer_lm_scan_layers_cached_generation_is_exact() -> None:
    unrolled, scanned, ps, st, ps_s, st_s = _lms()
    prompt = torch.randint(0, 11, (2, 3))
    want = generate(unrolled, ps, st, prompt, 6)
    got = generate(scanned, ps_s, st_s, prompt, 6)
    assert torch.equal(got.tokens, want.tokens) and torch.equal(got.logits, want.logits)
    cached = init_cache(scanned, ps_s, st_s, 2)
    assert cached["blocks"]["layer"]["attn"]["cache"]["k"].shape == (3, 2, 2, 16, 4)
    assert drop_cache(scanned, cached) == st_s


@pytest.mark.slow
def test_transformer_lm_scan_layers_compiles_with_inductor() -> None:
    unrolled, scanned, ps, st, ps_s, st_s = _lms()
    tokens = torch.randint(0, 11, (2, 7))
    compiled = torch.compile(lambda t, ps, st: scanned(t, ps, st)[0], fullgraph=True)
    ps_req = lux.tree.map(lambda t: t.detach().requires_grad_(), ps_s)
    got = compiled(tokens, ps_req, st_s)
    torch.testing.assert_close(got, unrolled(tokens, ps, st)[0], rtol=1e-12, atol=1e-12)
    got.square().mean().backward()  # the backward of the scan, compiled by Inductor too
    want = torch.func.grad(lambda ps: unrolled(tokens, ps, st)[0].square().mean())(ps)
    for i in range(3):
        block = lux.tree.map(lambda t, i=i: t.grad[i], ps_req["blocks"]["layer"])
        for a, b in zip(
            lux.tree.leaves(block), lux.tree.leaves(want[f"blocks_{i + 1}"]), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # cached decoding step, compiled: the stacked caches go through the scan
    cached = init_cache(scanned, ps_s, st_s, 2)
    step = torch.compile(scanned, fullgraph=True)
    logits, new_st = step(tokens, ps_s, cached)
    want, want_st = unrolled(tokens, ps, init_cache(unrolled, ps, st, 2))
    torch.testing.assert_close(logits, want, rtol=1e-12, atol=1e-12)
    k = new_st["blocks"]["layer"]["attn"]["cache"]["k"]
    torch.testing.assert_close(
        k[1], want_st["blocks_2"]["attn"]["cache"]["k"], rtol=1e-12, atol=1e-12
    )


class _AddsState(lux.Layer):
    """Returns a state with an entry its initial state lacks (fine in a Chain)."""

    def __call__(self, x: torch.Tensor, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        return x * 2, {**st, "extra": x.sum()}


def test_scan_refuses_a_block_whose_state_changes_structure() -> None:
    model = StackedChain(_AddsState(), 3)
    ps, st = lux.setup(0, model)
    x = torch.randn(2, 3)
    y, new_st = model(x, ps, st)  # eager: the unrolled loop, as a Chain
    assert torch.equal(y, x * 8) and new_st["layer"]["extra"].shape == (3,)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with pytest.raises(Exception, match="a state shaped like its state"):
        compiled(x, ps, st)


@pytest.mark.slow
def test_inductor_backward_of_a_block_ending_in_tanh() -> None:
    # the backward saves tanh's output, which is also the carry: the scan copies the carry
    # (without the copy Inductor fails with "scan might be aliasing the input or the output")
    model = StackedChain(lux.Linear(8, 8, activation=torch.tanh), 3)
    ps, st = lux.setup(0, model, dtype=F64)
    ps = lux.tree.map(lambda t: t.requires_grad_(), ps)
    x = torch.randn(4, 8, dtype=F64)
    compiled = torch.compile(lambda ps: model(x, ps, st)[0].square().mean(), fullgraph=True)
    compiled(ps).backward()
    want = torch.func.grad(lambda ps: model(x, ps, st)[0].square().mean())(ps)
    for a, b in zip(lux.tree.leaves(ps), lux.tree.leaves(want), strict=True):
        torch.testing.assert_close(a.grad, b, rtol=1e-10, atol=1e-12)


def test_repeated_layer_scan_false_keeps_the_unrolled_graph() -> None:
    """``scan=False`` unrolls under compile (fusion across repetitions: faster compiled
    steps for small layers, compile time growing with ``repeats``)."""
    layer = lux.Linear(3, 3, activation=torch.tanh)
    model = lux.RepeatedLayer(layer, repeats=4, scan=False)
    ps, st = lux.setup(0, model, dtype=F64)
    x = torch.randn(4, 3, dtype=F64)
    graphs = _traced(model, x, ps, st)
    assert graphs.count("scan") == 0
    assert graphs.count("linear") == 4
    assert "scan=False" in repr(model) and "scan" not in repr(lux.RepeatedLayer(layer, 4))
    with pytest.raises(TypeError, match="scan must be a bool"):
        lux.RepeatedLayer(layer, 4, scan=1)  # type: ignore[arg-type]
