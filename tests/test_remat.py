"""Checkpoint(layer): activation checkpointing. The reference is always the plain layer
(outputs, states and gradients equal), and the memory saved is measured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from functorch.compile import make_boxed_func
from helpers import bn_mlp, randn
from torch import nn
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.partitioners import min_cut_rematerialization_partition

import lux_torch as lux
from lux_torch import tree as ltree
from lux_torch.layers.remat import Checkpoint
from lux_torch.testing import check_layer
from lux_torch.training import _resolve_ad

F64 = torch.float64


def _models(dropout: float = 0.3) -> tuple[lux.Chain, lux.Chain]:
    """The plain model and the same model with its first block checkpointed (BatchNorm
    running statistics, a dropout key and parameters inside the checkpoint)."""
    block = bn_mlp(dropout)
    head = lux.Linear(2, 1)
    return lux.Chain(block, head), lux.Chain(Checkpoint(block), head)


def _train_states(optimizer: Any) -> tuple[lux.TrainState, lux.TrainState]:
    plain, remat = _models()
    ps, st = lux.setup(lux.random.key(0), plain, dtype=F64)
    return lux.TrainState(plain, ps, st, optimizer), lux.TrainState(remat, ps, st, optimizer)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    return randn(6, 3, dtype=F64), randn(6, 1, dtype=F64, seed=2)


def _assert_close(a: Any, b: Any) -> None:
    for x, y in zip(ltree.leaves(a), ltree.leaves(b), strict=True):
        if x.is_floating_point():
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
        else:
            assert torch.equal(x, y)


def test_trees_are_the_wrapped_layers():
    plain, remat = _models()
    assert ltree.allclose(lux.setup(3, plain), lux.setup(3, remat))
    assert lux.param_count(remat) == lux.param_count(plain)
    assert lux.state_count(remat) == lux.state_count(plain)
    with pytest.raises(TypeError, match="Checkpoint: layer must be a lux_torch Layer"):
        Checkpoint(nn.Linear(2, 2))  # type: ignore[arg-type]


def test_complex_outputs_are_differentiated():
    # d/dx sum(|exp(i x)|^2 * x) = 1: a complex intermediate output of the checkpoint
    layer = Checkpoint(lux.WrappedFunction(lambda x: torch.polar(torch.ones_like(x), x)))
    ps, st = lux.setup(0, layer)
    x = randn(5, dtype=F64)
    g = torch.func.grad(lambda x: (layer(x, ps, st)[0].abs().square() * x).sum())(x)
    torch.testing.assert_close(g, torch.ones_like(x), rtol=1e-14, atol=1e-14)
    g = torch.func.grad(lambda x: layer(x, ps, st)[0].imag.sum())(x)
    torch.testing.assert_close(g, torch.cos(x), rtol=1e-14, atol=1e-14)


def test_errors_name_the_path_of_the_wrapped_layer():
    inner = lux.Chain(lux.Linear(3, 2), lux.Linear(2, 2))
    model = lux.Chain(lux.Linear(2, 3), Checkpoint(inner))
    ps, st = lux.setup(0, model)
    ps["layer_2"]["layer_2"]["weight"] = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"expects a tensor of shape \(2, 2\)") as info:
        model(randn(4, 2), ps, st)
    assert info.value.__notes__ == ["in layer_2.layer_2 (Linear(2 => 2))"]


@pytest.mark.parametrize("ad", ["func", "autograd"])
def test_gradients_equal_the_plain_layers(ad):
    # float64, training mode: BatchNorm statistics and dropout masks inside the checkpoint
    plain_ts, remat_ts = _train_states(lux.optim.sgd(0.1))
    loss = lux.losses.MSELoss()
    g0, l0, _, t0 = lux.compute_gradients(loss, _data(), plain_ts, ad=ad)
    g1, l1, _, t1 = lux.compute_gradients(loss, _data(), remat_ts, ad=ad)
    _assert_close(l0, l1)
    _assert_close(g0, g1)
    _assert_close(t0.states, t1.states)  # new running statistics and advanced key
    assert not torch.equal(
        t1.states["layer_1"]["layer_3"]["key"], remat_ts.states["layer_1"]["layer_3"]["key"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("ad", ["func", "autograd"])
def test_compiled_train_step_equals_the_plain_layers(ad):
    plain_ts, remat_ts = _train_states(lux.optim.adam(1e-2))
    loss = lux.losses.MSELoss()
    for _ in range(2):
        plain_ts, l0, _ = lux.train_step(loss, _data(), plain_ts, ad=ad)
        remat_ts, l1, _ = lux.train_step(loss, _data(), remat_ts, ad=ad, compile=True)
        _assert_close(l0, l1)
        _assert_close(plain_ts.params, remat_ts.params)
        _assert_close(plain_ts.states, remat_ts.states)


def test_recomputation_draws_the_forwards_dropout_mask():
    # d sum(y) / dx of dropout is the mask scaled by the keep factor, i.e. exactly y / x:
    # a recomputation with another mask would give another gradient.
    layer = Checkpoint(lux.Dropout(0.5))
    ps, st = lux.setup(4, layer)
    x = randn(64, dtype=F64) + 3.0  # away from 0

    def total(x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = layer(x, ps, st)[0]
        return y.sum()

    y, new_st = layer(x, ps, st)
    assert 0 < int((y == 0).sum()) < 64  # a real mask
    assert not torch.equal(new_st["key"], st["key"])
    torch.testing.assert_close(torch.func.grad(total)(x), y / x, rtol=1e-15, atol=0)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(total(xr), xr)
    torch.testing.assert_close(g, y / x, rtol=1e-15, atol=0)


def test_second_derivatives_and_vmap_equal_the_plain_layers():
    inner = lux.Linear(3, 3, activation=torch.tanh)
    ps, st = lux.setup(1, inner, dtype=F64)
    x = randn(2, 3, dtype=F64)

    def loss(layer: lux.Layer) -> Callable[[Any], torch.Tensor]:
        return lambda p: layer(x, p, st)[0].pow(3).sum()

    h0 = torch.func.hessian(loss(inner))(ps)
    h1 = torch.func.hessian(loss(Checkpoint(inner)))(ps)
    _assert_close(h0, h1)
    stacked = ltree.stack(
        [lux.init_params(k, inner) for k in lux.random.split(lux.random.key(2), 3)]
    )
    stacked = ltree.to(stacked, dtype=F64)
    v0 = torch.func.vmap(torch.func.grad(loss(inner)))(stacked)
    v1 = torch.func.vmap(torch.func.grad(loss(Checkpoint(inner))))(stacked)
    _assert_close(v0, v1)


@pytest.mark.slow
def test_conformance():
    report = check_layer(Checkpoint(lux.Linear(3, 2)), randn(4, 3), reference=nn.Linear(3, 2))
    assert report["parity"] == "passed" and report["gradcheck"] == "passed"
    assert report["compile"] == "passed" and report["vmap"] == "passed"


@pytest.mark.slow
def test_conformance_stochastic_and_stateful():
    # Known gap (issue 18 stays open): forward mode through Checkpoint of a model with
    # BatchNorm in test mode trips a functorch internal assert ("result->level()"); train
    # mode passes. A plain Checkpoint(Linear) passes the jvp check (test above).
    report = check_layer(
        Checkpoint(bn_mlp(0.3)),
        randn(5, 3),
        jvp="forward mode through Checkpoint with running statistics: functorch internal assert",
    )
    for mode in ("train", "test"):
        for check in ("gradcheck", "compile", "vmap", "determinism", "purity"):
            assert report[f"{check}[{mode}]"] == "passed"


# --------------------------------------------------------------------------- memory


def _deep(depth: int, batch: int, width: int) -> tuple[lux.Chain, lux.Chain, Any, Any, Any]:
    """``(plain, checkpointed, x, ps, st)``: ``depth`` blocks ``8 => width => width => 8``
    (tanh), plain and each wrapped in ``Checkpoint``; parameters that require grad."""

    def block(remat: bool) -> lux.Layer:
        inner = lux.Chain(
            lux.Linear(8, width, activation=torch.tanh),
            lux.Linear(width, width, activation=torch.tanh),
            lux.Linear(width, 8),
        )
        return Checkpoint(inner) if remat else inner

    plain = lux.Chain(*[block(False) for _ in range(depth)])
    remat = lux.Chain(*[block(True) for _ in range(depth)])
    ps, st = lux.setup(0, plain)
    return plain, remat, randn(batch, 8), ltree.map(lambda p: p.requires_grad_(True), ps), st


def _saved_bytes(model: lux.Layer, x: torch.Tensor, ps: Any, st: Any) -> int:
    """Bytes of the distinct storages autograd saves for the backward of ``model``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, _ = model(x, ps, st)
    assert y.requires_grad
    return sum(storages.values())


def test_train_step_takes_the_autograd_path_that_saves_memory():
    # torch.func.grad keeps the backward's intermediates (create_graph=True): no saving there
    _, remat = _models()
    assert Checkpoint(lux.Linear(2, 2)).requires_autograd
    assert _resolve_ad("auto", remat, compiled=True) == "autograd"


def test_checkpoint_saves_only_its_inputs():
    depth, batch, width = 4, 512, 256
    plain, remat, x, ps, st = _deep(depth, batch, width)
    plain_bytes, remat_bytes = _saved_bytes(plain, x, ps, st), _saved_bytes(remat, x, ps, st)
    # each checkpoint saves its input (batch x 8) and the block's parameters, nothing else
    assert remat_bytes == depth * batch * 8 * 4 + ltree.count(ps) * 4
    # the plain blocks keep their two (batch x width) tanh outputs: 4.2 MB of the 5.4 MB
    assert plain_bytes >= depth * 2 * batch * width * 4
    assert remat_bytes < plain_bytes / 4  # 1.19 MB


def _compiled_saved_shapes(model: lux.Layer, x: torch.Tensor, ps: Any, st: Any) -> list[Any]:
    """Shapes of the tensors that the forward graph of ``torch.compile`` keeps for the
    backward (its outputs beyond the loss), read from AOTAutograd's partitioned graph."""
    shapes: list[Any] = []

    def forward_compiler(gm: torch.fx.GraphModule, _: Any) -> Any:
        (output,) = [n for n in gm.graph.nodes if n.op == "output"]
        values = [a.meta["val"] for a in output.args[0][1:] if isinstance(a, torch.fx.Node)]
        shapes.extend(tuple(v.shape) for v in values if isinstance(v, torch.Tensor))
        return make_boxed_func(gm)

    backend = aot_autograd(
        fw_compiler=forward_compiler,
        bw_compiler=lambda gm, _: make_boxed_func(gm),
        partition_fn=min_cut_rematerialization_partition,
    )
    compiled = torch.compile(lambda x, ps: model(x, ps, st)[0].square().sum(), backend=backend)
    compiled(x, ps).backward()
    return shapes


@pytest.mark.slow
def test_compiled_checkpoint_saves_no_activation():
    # under Dynamo the call goes through torch.utils.checkpoint's operator, which the
    # partitioner recomputes (an autograd.Function would be merged with the forward)
    depth, batch, width = 2, 128, 256
    plain, remat, x, ps, st = _deep(depth, batch, width)
    # the plain graph keeps both (batch x width) activations of each block (1.09 MB in all),
    # the checkpointed one none (0.57 MB: inputs and parameters)
    assert _compiled_saved_shapes(plain, x, ps, st).count((batch, width)) == 2 * depth
    assert (batch, width) not in _compiled_saved_shapes(remat, x, ps, st)
