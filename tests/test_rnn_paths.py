"""RNN/LSTM/GRU stacks: the fused-kernel and unrolled paths, variable lengths, projections.

The eager call runs torch's fused kernels; ``vmap``, ``jvp`` and compilation run the
unrolled cells. Both must give torch.nn's numbers, with the same dropout masks.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import check, randn
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lux_torch as lux
from lux_torch import tree as ltree
from lux_torch.core import setup
from lux_torch.layers.rnn import GRU, LSTM, RNN, fused_kernels_usable

LUX = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
TORCH = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}
F64 = torch.float64


def unrolled(layer: Any, x: Any, ps: Any, st: Any) -> Any:
    """The layer's result through the unrolled path (vmap over a one-member ensemble)."""

    def one(p: Any, s: Any) -> Any:
        return layer(x, p, s)

    stacked = torch.func.vmap(one, in_dims=(0, None))(ltree.stack([ps]), st)
    return ltree.map(lambda t: t[0], stacked)


def test_fused_kernels_usable_tracks_the_transform_stack() -> None:
    assert fused_kernels_usable()
    seen: list[bool] = []

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen.append(fused_kernels_usable())
        seen.append(fused_kernels_usable(packed=True))
        return x.sin().sum()

    x = torch.ones(3)
    probe(x)
    torch.func.grad(probe)(x)
    torch.func.vmap(probe)(x)
    torch.func.jvp(probe, (x,), (x,))
    torch.compile(probe, fullgraph=True, backend="eager")(x)
    # packed sequences: the fused kernel reads storage, which grad's wrapped tensors lack
    assert seen == [True, True, True, False] + [False] * 6


def test_grad_with_lengths_matches_autograd() -> None:
    """torch.func.grad through a packed (lengths) LSTM: the unrolled path, same gradient."""
    layer = LSTM(3, 4, batch_first=True)
    ps, st = setup(0, layer, dtype=F64)
    x, lengths = randn(2, 5, 3, dtype=F64), torch.tensor([5, 3])

    def loss(x: torch.Tensor) -> Any:
        return layer((x, None, lengths), ps, st)[0][0].sin().sum()

    leaf = x.clone().requires_grad_()
    loss(leaf).backward()
    assert leaf.grad is not None
    torch.testing.assert_close(torch.func.grad(loss)(x), leaf.grad, rtol=1e-10, atol=1e-12)


def _twins(name: str) -> tuple[Any, nn.Module, Any, Any, torch.Tensor]:
    """A 2-layer bidirectional batch-first ``name`` (3 => 5), its float64 torch twin holding
    the same weights, our ``ps`` and ``st``, and an input of shape ``(4, 6, 3)``."""
    kw: dict[str, Any] = {"num_layers": 2, "bidirectional": True, "batch_first": True}
    layer, module = LUX[name](3, 5, **kw), TORCH[name](3, 5, **kw).double()
    ps, st = lux.load_state_dict(layer, module.state_dict())
    return layer, module, ps, st, randn(4, 6, 3, dtype=F64)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_fused_and_unrolled_paths_agree_with_torch(name: str) -> None:
    """Output, final state and parameter gradients, float64, 2 layers, bidirectional, h0."""
    layer, module, ps, st, x = _twins(name)
    h0 = 0.5 * randn(4, 4, 5, dtype=F64, seed=2)
    hx: Any = (h0, 0.3 * h0.flip(0)) if name == "LSTM" else h0
    w = randn(4, 6, 10, dtype=F64, seed=4)

    def loss(fn: Any, p: Any) -> torch.Tensor:
        (out, last), _ = fn(layer, (x, hx), p, st)
        parts = last if isinstance(last, tuple) else (last,)
        result: torch.Tensor = (out * w).sum() + sum(q.square().sum() for q in parts)
        return result

    ref_out, ref_last = module(x, hx)
    ref_loss = (ref_out * w).sum() + sum(
        q.square().sum() for q in (ref_last if isinstance(ref_last, tuple) else (ref_last,))
    )
    ref_grads = dict(
        zip(
            dict(module.named_parameters()),
            torch.autograd.grad(ref_loss, list(module.parameters())),
            strict=True,
        )
    )
    eager = lambda m, a, p, s: m(a, p, s)  # noqa: E731
    for fn in (eager, unrolled):
        grads, value = torch.func.grad_and_value(lambda p, fn=fn: loss(fn, p))(ps)
        torch.testing.assert_close(value, ref_loss)
        for n, g in grads.items():
            torch.testing.assert_close(g, ref_grads[n], msg=f"{name} {fn} {n}")


def packed_reference(
    module: nn.Module, x: torch.Tensor, hx: Any, lengths: torch.Tensor
) -> tuple[torch.Tensor, Any]:
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, last = module(packed, hx)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], last


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_lengths_equal_packed_sequences(name: str) -> None:
    layer, module, ps, st, x = _twins(name)
    lengths = torch.tensor([6, 2, 4, 1])
    h0 = 0.5 * randn(4, 4, 5, dtype=F64, seed=2)
    hx: Any = (h0, 0.3 * h0) if name == "LSTM" else h0
    ref_out, ref_last = packed_reference(module, x, hx, lengths)
    assert ref_out[1, 2:].abs().max() == 0  # padding stays zero
    for fn in (lambda a, p, s: layer(a, p, s), lambda a, p, s: unrolled(layer, a, p, s)):
        (out, last), _ = fn((x, hx, lengths), ps, st)
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(last, ref_last)
    # zeros for h0 by passing None, and lengths as a list
    (out, _), _ = layer((x, None, [6, 2, 4, 1]), ps, st)
    torch.testing.assert_close(out, packed_reference(module, x, None, lengths)[0])


def test_lengths_conformance_and_gradients() -> None:
    """The harness with a lengths input (gradcheck, vmap, compile) against packed torch."""
    layer = LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    module = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    lengths = torch.tensor([5, 3])

    def reference(tensors: dict[str, torch.Tensor], x: Any, hx: Any, lengths: Any) -> Any:
        m = module.to(x.dtype)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, last = torch.func.functional_call(m, tensors, (packed, hx))
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], last

    for dtype in (torch.float32, F64):
        h0 = 0.5 * randn(4, 2, 4, dtype=dtype, seed=2)
        x = (randn(2, 5, 3, dtype=dtype), (h0, h0.flip(0)), lengths)
        report = check(layer, x, dtype, reference=reference, compile_backend="aot_eager")
        assert report["parity"] == "passed"
        assert report["vmap"] == "passed"


@pytest.mark.parametrize("bidirectional", [False, True])
def test_proj_size_matches_torch(bidirectional: bool) -> None:
    kw: dict[str, Any] = {"num_layers": 2, "bidirectional": bidirectional, "proj_size": 3}
    layer, module = LSTM(4, 6, **kw), nn.LSTM(4, 6, **kw)
    ps0, st0 = setup(0, layer)
    assert {k: v.shape for k, v in lux.state_dict(ps0, st0).items()} == {
        k: v.shape for k, v in module.state_dict().items()
    }
    assert tuple(ps0["weight_hr_l0"].shape) == (3, 6)
    assert lux.param_count(layer) == sum(p.numel() for p in module.parameters())
    d = 2 if bidirectional else 1
    h0 = 0.5 * randn(2 * d, 2, 3, dtype=F64, seed=2)
    c0 = 0.5 * randn(2 * d, 2, 6, dtype=F64, seed=3)
    for x in (randn(5, 2, 4, dtype=F64), (randn(5, 2, 4, dtype=F64), (h0, c0))):
        report = check(layer, x, F64, reference=module.double())
        assert report["parity"] == "passed"
        assert report["gradcheck"] == "passed"
        assert report["vmap"] == "passed"
    ps, st = lux.load_state_dict(layer, module.state_dict())
    lengths = torch.tensor([5, 2])
    x = randn(2, 5, 4, dtype=F64)
    ref = packed_reference(nn.LSTM(4, 6, batch_first=True, **kw).double(), x, None, lengths)
    layer_bf = LSTM(4, 6, batch_first=True, **kw)
    ps_bf, _ = lux.load_state_dict(
        layer_bf, nn.LSTM(4, 6, batch_first=True, **kw).double().state_dict()
    )
    assert ps.keys() == ps_bf.keys()
    (out, _), _ = layer_bf((x, None, lengths), ps_bf, st)
    assert out.shape == ref[0].shape == (2, 5, 3 * d)


def test_proj_size_compiles() -> None:
    layer = LSTM(4, 6, proj_size=3, batch_first=True)
    report = check(layer, randn(2, 5, 4), torch.float32, compile_backend="aot_eager")
    assert report["compile"] == "passed"
    count = sum(p.numel() for p in nn.LSTM(4, 6, proj_size=3).parameters())
    assert repr(layer) == f"LSTM(4 => 6, batch_first=True, proj_size=3)  # {count} parameters"


def test_dropout_masks_are_the_same_on_both_paths() -> None:
    layer = GRU(3, 5, num_layers=3, dropout=0.5, bidirectional=True)
    ps, st = setup(0, layer)
    x = randn(6, 2, 3)
    lengths = torch.tensor([6, 3])
    for given in (x, (x, None, lengths)):
        (out, hn), st_eager = layer(given, ps, st)
        (out_u, hn_u), st_u = unrolled(layer, given, ps, st)
        torch.testing.assert_close(out, out_u)
        torch.testing.assert_close(hn, hn_u)
        assert torch.equal(st_eager["key"], st_u["key"])
        assert not torch.equal(st_eager["key"], st["key"])
    # and dropout is really on: test mode differs
    (out_test, _), _ = layer(x, ps, lux.test_mode(st))
    assert not torch.allclose(layer(x, ps, st)[0][0], out_test)


def test_fused_path_never_touches_the_global_rng() -> None:
    layer = LSTM(3, 5, num_layers=2, dropout=0.3)
    ps, st = setup(0, layer)
    state = torch.random.get_rng_state()
    layer(randn(4, 2, 3), ps, st)
    assert torch.equal(state, torch.random.get_rng_state())


def test_lengths_errors() -> None:
    lstm = LSTM(3, 4, batch_first=True)
    ps, st = setup(0, lstm)
    x = randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"LSTM: every length must be in \[1, 5\].*\[6, 2\]"):
        lstm((x, None, torch.tensor([6, 2])), ps, st)
    with pytest.raises(ValueError, match=r"LSTM: every length must be in \[1, 5\]"):
        lstm((x, None, torch.tensor([0, 2])), ps, st)
    with pytest.raises(ValueError, match=r"LSTM: expected lengths as an integer tensor of shape"):
        lstm((x, None, torch.tensor([2, 3, 4])), ps, st)
    with pytest.raises(ValueError, match=r"of dtype torch.float32"):
        lstm((x, None, torch.tensor([2.0, 3.0])), ps, st)
    with pytest.raises(ValueError, match=r"LSTM: lengths needs a batched input"):
        lstm((randn(5, 3), None, torch.tensor([5])), ps, st)
    with pytest.raises(TypeError, match=r"LSTM: expected x, \(x, initial state\) or"):
        lstm((x, None, None, None), ps, st)
    proj = LSTM(3, 4, proj_size=2)
    pps, pst = setup(0, proj)
    with pytest.raises(ValueError, match=r"expected h0 of shape \(1, 2, 2\) .*proj_size"):
        proj((randn(5, 2, 3), (randn(1, 2, 4), randn(1, 2, 4))), pps, pst)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_compiled_lstm_gradients_equal_torch(bidirectional: bool) -> None:
    """The compiled path's hand-written BPTT (outputs, h_n, c_n; grads of every parameter
    and of x, h0, c0) against nn.LSTM in float64."""
    kw: dict[str, Any] = {"num_layers": 2, "bidirectional": bidirectional}
    layer, module = LSTM(3, 5, **kw), nn.LSTM(3, 5, **kw).double()
    ps, st = lux.load_state_dict(layer, module.state_dict())
    d = 2 if bidirectional else 1
    x = randn(6, 4, 3, dtype=F64)
    h0 = 0.5 * randn(2 * d, 4, 5, dtype=F64, seed=2)
    c0 = 0.5 * randn(2 * d, 4, 5, dtype=F64, seed=3)
    w = randn(6, 4, 5 * d, dtype=F64, seed=4)

    def loss(p: Any, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        (out, (h_n, c_n)), _ = layer((x, (h0, c0)), p, st)
        result: torch.Tensor = (out * w).sum() + (h_n * c_n).sum() + c_n.square().sum()
        return result

    def ref_loss(p: Any, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        out, (h_n, c_n) = torch.func.functional_call(module, p, (x, (h0, c0)))
        result: torch.Tensor = (out * w).sum() + (h_n * c_n).sum() + c_n.square().sum()
        return result

    args = (ps, x, h0, c0)
    grad = torch.func.grad_and_value(loss, argnums=(0, 1, 2, 3))
    compiled = torch.compile(grad, fullgraph=True, backend="aot_eager")
    (g, value), (g_ref, value_ref) = (
        compiled(*args),
        torch.func.grad_and_value(ref_loss, argnums=(0, 1, 2, 3))(*args),
    )
    torch.testing.assert_close(value, value_ref)
    torch.testing.assert_close(g, g_ref)


def test_compiled_lstm_in_a_compiled_train_step_matches_eager() -> None:
    model = lux.Chain(
        lux.WrappedFunction(lambda x: x),
        LSTM(3, 8, num_layers=2, batch_first=True),
        lux.WrappedFunction(lambda out: out[0][:, -1]),
        lux.Linear(8, 1),
    )
    ps, st = setup(0, model)
    x, y = randn(4, 7, 3), randn(4, 1, seed=5)
    states = [lux.TrainState(model, ps, st, lux.optim.adam(1e-2)) for _ in range(2)]
    for _ in range(3):
        states[0], loss_e, _ = lux.train_step(lux.losses.MSELoss(), (x, y), states[0])
        states[1], loss_c, _ = lux.train_step(lux.losses.MSELoss(), (x, y), states[1], compile=True)
        torch.testing.assert_close(loss_c, loss_e)
    assert lux.tree.allclose(states[0].params, states[1].params, rtol=1e-4, atol=1e-5)


def test_bptt_function_refuses_second_derivatives() -> None:
    """The hand-written BPTT (used only while compiling) is first-order: differentiating
    its gradient raises rather than returning a wrong second derivative."""
    from lux_torch.layers.rnn import _LSTMSequence

    gi = randn(3, 2, 8, dtype=F64).requires_grad_()
    z = torch.zeros(2, 2, dtype=F64)
    w = randn(8, 2, dtype=F64, seed=2).requires_grad_()
    ys = _LSTMSequence.apply(gi, z, z.clone(), w, None)[0]
    (g,) = torch.autograd.grad(ys.sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match=r"does not require grad|once_differentiable"):
        torch.autograd.grad(g.sum(), gi)
