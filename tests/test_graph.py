"""Tests for lux_torch._graph (the traced, Inductor-compiled functions behind
``train_step(compile=True)``) and the trace semantics of compiled training steps."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

import lux_torch as lux
from lux_torch._graph import Traced, python_reads, tracing
from lux_torch.tree import allclose


def _affine(tree: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
    return {"y": torch.tanh(x @ tree["w"] + tree["b"]), "n": tree["w"].shape[0]}


def _tree(d: int = 3, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"w": torch.randn(d, 2, generator=gen, dtype=dtype), "b": torch.zeros(2, dtype=dtype)}


def test_traced_equals_eager_and_keeps_non_tensor_outputs() -> None:
    fn = Traced(_affine, name="affine")
    tree, x = _tree(), torch.randn(5, 3)
    out = fn(tree, x)
    assert out["n"] == 3  # a Python output leaf comes back as traced
    torch.testing.assert_close(out["y"], _affine(tree, x)["y"])
    assert len(fn.entries) == 1
    x2 = torch.randn(5, 3)
    torch.testing.assert_close(fn(tree, x2)["y"], _affine(tree, x2)["y"])
    assert len(fn.entries) == 1  # same signature: no new trace


@pytest.mark.parametrize(
    "change",
    ["shape", "dtype", "strides", "requires_grad"],
)
def test_a_new_signature_traces_again(change: str) -> None:
    fn = Traced(_affine, name="affine")
    tree, x = _tree(), torch.randn(5, 3)
    fn(tree, x)
    if change == "shape":
        x = torch.randn(7, 3)
    elif change == "dtype":
        tree, x = _tree(dtype=torch.float64), x.double()
    elif change == "strides":
        x = torch.randn(3, 5).t()
    else:
        tree = {k: v.clone().requires_grad_() for k, v in tree.items()}
    out = fn(tree, x)
    assert len(fn.entries) == 2
    expected = _affine({k: v.detach() for k, v in tree.items()}, x)["y"]
    torch.testing.assert_close(out["y"], expected)
    assert not out["y"].requires_grad  # traced functions are not differentiated through


def test_alternating_signatures_reuse_their_graphs() -> None:
    fn = Traced(_affine, name="affine")
    tree = _tree()
    for n in (5, 7, 5, 7, 5):  # each call's signature differs from the previous one's
        x = torch.randn(n, 3)
        out = fn(tree, x)
        torch.testing.assert_close(out["y"], _affine(tree, x)["y"])
        assert out["y"].shape == (n, 2)
    assert len(fn.entries) == 2


def test_a_leaf_that_turns_from_a_number_into_a_tensor_traces_again() -> None:
    fn = Traced(lambda x, k: x * k, name="scale")
    x = torch.ones(2)
    assert fn(x, 2.0).tolist() == [2.0, 2.0]
    assert fn(x, torch.tensor(3.0)).tolist() == [3.0, 3.0]  # same tree, a tensor leaf now
    assert fn(x, torch.tensor(4.0)).tolist() == [4.0, 4.0]  # a tensor input, not a constant
    assert fn(x, 2.0).tolist() == [2.0, 2.0]
    assert len(fn.entries) == 2


def test_another_tree_structure_with_the_same_tensors_traces_again() -> None:
    fn = Traced(lambda d: {k: v + 1 for k, v in d.items()}, name="inc")
    a, b = torch.zeros(2), torch.ones(2)
    assert sorted(fn({"a": a, "b": b})) == ["a", "b"]
    out = fn({"a": a, "c": b})
    assert sorted(out) == ["a", "c"]
    assert out["c"].tolist() == [2.0, 2.0]
    assert len(fn.entries) == 2


def test_tensors_of_another_kind_with_the_same_signature_use_the_same_graph() -> None:
    fn = Traced(_affine, name="affine")
    tree, x = _tree(), torch.randn(5, 3)
    fn(tree, x)
    with torch.inference_mode():  # other dispatch keys: the quick check says no
        x_inference = torch.randn(5, 3)
    torch.testing.assert_close(fn(tree, x_inference)["y"], _affine(tree, x_inference)["y"])
    x2 = torch.randn(5, 3)
    torch.testing.assert_close(fn(tree, x2)["y"], _affine(tree, x2)["y"])
    assert len(fn.entries) == 1


@pytest.mark.slow
def test_a_graph_compiled_before_is_loaded_from_inductors_caches() -> None:
    from torch._dynamo.utils import counters

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * 3 + 1

    x = torch.randn(4, 3)
    first = Traced(fn, name="first")(x)
    hits = (
        counters["aot_autograd"]["autograd_cache_hit"] + counters["inductor"]["fxgraph_cache_hit"]
    )
    second = Traced(fn, name="second")(x)  # a new trace of the same graph
    after = (
        counters["aot_autograd"]["autograd_cache_hit"] + counters["inductor"]["fxgraph_cache_hit"]
    )
    assert after > hits  # loaded, not compiled again ("No shape env" bypassed both caches)
    assert torch.equal(second, first)  # the same code
    torch.testing.assert_close(second, fn(x))


def test_non_tensor_leaves_are_static_and_unhashable_ones_rejected() -> None:
    fn = Traced(lambda x, k: x * k, name="scale")
    x = torch.ones(2)
    assert fn(x, 2.0).tolist() == [2.0, 2.0]
    assert fn(x, 3.0).tolist() == [3.0, 3.0]
    assert len(fn.entries) == 2
    with pytest.raises(TypeError, match="scale: a traced argument holds a ndarray leaf"):
        fn(x, np.ones(2))


def test_python_scalars_read_by_the_function_are_guarded() -> None:
    scale = 2.0

    def fn(x: torch.Tensor) -> torch.Tensor:
        return x * scale + OFFSET

    traced = Traced(fn, name="fn", guard=python_reads(fn))
    x = torch.ones(2)
    assert traced(x).tolist() == [3.0, 3.0]
    scale = 5.0
    assert traced(x).tolist() == [6.0, 6.0]
    globals()["OFFSET"] = 2.0
    assert traced(x).tolist() == [7.0, 7.0]
    assert len(traced.entries) == 3
    assert python_reads(lux.losses.MSELoss())() == ()  # objects are not inspected


OFFSET = 1.0


def test_too_many_signatures_warn_once_and_evict_the_oldest() -> None:
    fn = Traced(lambda x: x + 1, name="inc", max_entries=2)
    with pytest.warns(RuntimeWarning, match="inc: traced for more than 2 input signatures"):
        for n in (1, 2, 3):
            fn(torch.zeros(n))
    assert len(fn.entries) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fn(torch.zeros(4)).tolist() == [1.0] * 4  # evicts again, without a warning


def test_untraceable_function_falls_back_with_a_warning() -> None:
    def numpy_tanh(x: torch.Tensor) -> torch.Tensor:  # .numpy() has no fake-tensor support
        return torch.from_numpy(np.tanh(x.numpy()))

    fn = Traced(numpy_tanh, name="np", fallback=lambda: torch.compile(numpy_tanh))
    x = torch.randn(3)
    with pytest.warns(RuntimeWarning, match=r"np: could not trace it into one graph \("):
        torch.testing.assert_close(fn(x), torch.tanh(x))
    assert fn.fallback is not None
    torch.testing.assert_close(fn(2 * x), torch.tanh(2 * x))


def test_data_dependent_control_flow_raises_when_the_fallback_fails_too() -> None:
    def branchy(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x

    options: dict[str, Any] = {"fullgraph": True}
    fn = Traced(branchy, name="b", fallback=lambda: torch.compile(branchy, **options))
    with (
        pytest.warns(RuntimeWarning, match=r"b: could not trace it .*GuardOnDataDependentSymNode"),
        pytest.raises(torch._dynamo.exc.Unsupported, match="Data-dependent branching") as raised,
    ):
        fn(torch.ones(2))
    assert "data-dependent" in str(raised.value.__cause__)  # the tracing error, chained
    no_fallback = Traced(branchy, name="b")
    with pytest.raises(RuntimeError, match=r"data-dependent|DataDependent"):
        no_fallback(torch.ones(2))


def test_tracing_is_true_only_while_tracing() -> None:
    seen: list[bool] = []

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen.append(tracing())
        return x + 1

    Traced(probe, name="probe")(torch.zeros(1))
    probe(torch.zeros(1))
    assert seen == [True, False]


# ---------------------------------------------------------------- compiled train steps


def _train_state(optimizer: Any) -> lux.TrainState:
    model = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Linear(16, 1))
    ps, st = lux.setup(0, model)
    return lux.TrainState(model, ps, st, optimizer)


def _batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = lux.random.uniform(lux.random.key(n), (n, 2), low=-1.0, high=1.0)
    return x, torch.sin(3 * x[:, :1])


@pytest.mark.parametrize(
    "make",
    [
        lambda: lux.optim.adam(lux.optim.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 10)),
        lambda: lux.optim.adagrad(1e-2, lr_decay=0.1),
        lambda: lux.optim.sgd(lux.optim.exponential_decay(1e-1, 2, 0.5), momentum=0.9),
    ],
)
def test_compiled_steps_with_count_dependent_factors_equal_eager(make: Any) -> None:
    mse = lux.losses.MSELoss()
    eager = compiled = _train_state(make())
    for n in (32, 32, 48, 32, 48):  # two batch shapes: two traces
        eager, loss_e, _ = lux.train_step(mse, _batch(n), eager)
        compiled, loss_c, _ = lux.train_step(mse, _batch(n), compiled, compile=True)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    assert allclose(compiled.params, eager.params, rtol=1e-4, atol=1e-6)
    assert compiled.step == 5


def test_compiled_step_sees_a_changed_closure_scalar() -> None:
    weight = 1.0

    def loss_fn(model: Any, ps: Any, st: Any, data: Any) -> Any:
        x, y = data
        pred, st = model(x, ps, st)
        return weight * torch.mean((pred - y) ** 2), st, {}

    ts, data = _train_state(lux.optim.sgd(1e-2)), _batch(16)
    _, loss1, _ = lux.train_step(loss_fn, data, ts, compile=True)
    weight = 10.0
    _, loss10, _ = lux.train_step(loss_fn, data, ts, compile=True)
    torch.testing.assert_close(loss10, 10 * loss1)


# ------------------------------------------------- channels-last convolutions (joint graphs)


def _conv_grad_graph(view: bool = False, dims: int = 2) -> tuple[Any, list[torch.Tensor], Any]:
    """The traced gradients of a small convolutional loss (a 3x3 and a 1x1 convolution,
    2-D or 3-D): ``(graph, inputs, eager flat function)``."""
    import torch.nn.functional as F

    from lux_torch._graph import _trace

    conv = F.conv2d if dims == 2 else F.conv3d

    def loss(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = conv(torch.relu(conv(x, w1, padding=1)), w2)
        if view:  # a view that needs the contiguous layout of the convolution's output
            h = h.view(h.shape[0], -1)
        return h.square().mean()

    def flat(*ts: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.func.grad(loss, argnums=(0, 1))(*ts))

    gen = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(8, 3, *(3,) * dims, generator=gen),
        torch.randn(6, 8, *(1,) * dims, generator=gen),
        torch.randn(4, 3, *(10,) * dims, generator=gen),
    ]
    return _trace(flat, inputs), inputs, flat


def _outputs(graph: Any) -> list[Any]:
    (outs,) = [n.args[0] for n in graph.graph.nodes if n.op == "output"]
    return [o.meta["val"] for o in outs]


@pytest.mark.parametrize("dims", [2, 3])
def test_joint_graphs_are_traced_with_channels_last_convolution_inputs(dims: int) -> None:
    from lux_torch._graph import _channels_last_convolutions, _compile

    graph, inputs, flat = _conv_grad_graph(dims=dims)
    new = _channels_last_convolutions(graph, inputs)
    convs = [n for n in new.graph.nodes if n.target is torch.ops.aten.convolution.default]
    assert len(convs) == 2
    layout = torch.channels_last if dims == 2 else torch.channels_last_3d
    for node in convs:  # what Inductor lays out channels-last on CPU anyway
        for arg in node.args[:2]:  # the input and the weight
            assert arg.meta["val"].is_contiguous(memory_format=layout)
    # each backward reads the forward's channels-last input and weight: one copy of each
    shared = {arg for node in convs for arg in node.args[:2]}
    every_backward = [
        n for n in new.graph.nodes if n.target is torch.ops.aten.convolution_backward.default
    ]
    assert len(every_backward) == 2
    assert all(set(n.args[1:3]) <= shared for n in every_backward)
    backward = [
        n
        for n in new.graph.nodes
        if n.target is torch.ops.aten.convolution_backward.default and n.args[1].op != "placeholder"
    ]
    assert backward  # the second convolution's backward reads the activation as it is
    for node in backward:
        assert node.args[1].meta["val"].is_contiguous(memory_format=layout)
    # the outputs keep the first trace's strides (the 1x1 weight's gradient comes out of
    # the channels-last trace with other strides on its size-1 dimensions)
    assert [v.stride() for v in _outputs(new)] == [v.stride() for v in _outputs(graph)]
    got, expected = _compile(new, inputs)(*inputs), flat(*inputs)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
        assert g.stride() == e.stride()


def test_channels_last_tracing_keeps_the_first_trace_where_it_cannot_apply() -> None:
    import torch._inductor.config as config

    from lux_torch._graph import _channels_last_convolutions, _compile, _trace

    graph, inputs, _ = _conv_grad_graph(view=True)  # view() fails on channels-last
    assert _channels_last_convolutions(graph, inputs) is graph
    graph, inputs, _ = _conv_grad_graph()
    with config.patch(layout_optimization=False):  # Inductor keeps the traced layout
        assert _channels_last_convolutions(graph, inputs) is graph

    def transposed(w: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        # an output whose strides in the channels-last trace are another non-contiguous
        # layout: no view can give it back, so the first trace is kept
        return [torch.nn.functional.conv2d(x, w).transpose(1, 3)]

    inputs = inputs[:1] + inputs[2:]
    graph = _trace(transposed, inputs)
    assert _channels_last_convolutions(graph, inputs) is graph
    torch.testing.assert_close(_compile(graph, inputs)(*inputs)[0], transposed(*inputs)[0])


def test_compiled_conv_net_steps_trace_once_and_equal_eager(monkeypatch: Any) -> None:
    import lux_torch._graph as graph_module

    traces: list[int] = []
    trace = graph_module._trace

    def counted(*args: Any) -> Any:
        traces.append(1)
        return trace(*args)

    monkeypatch.setattr(graph_module, "_trace", counted)
    model = lux.Chain(
        lux.Conv2d(3, 8, 3, padding=1),
        lux.BatchNorm2d(8, activation=torch.relu),
        lux.Conv2d(8, 6, 1),
        lux.GlobalAvgPool(),
        lux.Flatten(),
        lux.Linear(6, 3),
    )
    ps, st = lux.setup(0, model)
    eager = compiled = lux.TrainState(model, ps, st, lux.optim.sgd(0.1, momentum=0.9))
    key_x, key_y = lux.random.split(lux.random.key(1))
    data = (lux.random.normal(key_x, (8, 3, 6, 6)), lux.random.randint(key_y, (8,), 0, 3))
    loss = lux.losses.CrossEntropyLoss()
    for _ in range(3):
        eager, loss_e, _ = lux.train_step(loss, data, eager)
        compiled, loss_c, _ = lux.train_step(loss, data, compiled, compile=True)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    assert len(traces) == 1  # the new parameters keep their strides: no second trace
    assert allclose(compiled.params, eager.params, rtol=1e-4, atol=1e-6)
    assert allclose(compiled.states, eager.states, rtol=1e-4, atol=1e-6)
    strides = lux.tree.map(lambda p: p.stride(), ps)
    assert lux.tree.map(lambda p: p.stride(), compiled.params) == strides


def test_small_cpu_graphs_get_the_cpp_wrapper_and_single_threaded_kernels(
    monkeypatch: Any,
) -> None:
    import lux_torch._graph as graph_module

    chosen: list[dict[str, Any]] = []
    options = graph_module._inductor_options

    def recorded(small_cpu: bool) -> Any:
        chosen.append(options(small_cpu))
        return chosen[-1]

    monkeypatch.setattr(graph_module, "_inductor_options", recorded)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * 2

    for n in (64, graph_module._CPP_WRAPPER_MAX + 1):
        x = torch.randn(n)
        torch.testing.assert_close(Traced(fn, name="fn")(x), fn(x))
    small, large = chosen
    assert small["cpp_wrapper"] is True and small["cpp.threads"] == 1
    assert "cpp_wrapper" not in large and "cpp.threads" not in large
    assert small["size_asserts"] is False and large["size_asserts"] is False
