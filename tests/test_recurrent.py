"""Recurrent layers: RNNCell/LSTMCell/GRUCell, Recurrence, StatefulRecurrentCell.

Cells go through the conformance harness against the ``torch.nn`` cells (called functionally
on our tensors), in both input forms of the carry convention (bare ``x``: zero carry; tuple
``(x, carry)``). ``Recurrence(LSTMCell)`` is compared with ``torch.nn.LSTM``. One case per
class compiles with inductor, the others with ``aot_eager`` (graph capture only).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import DTYPES, check, randn
from torch import nn

import lux_torch as lux
from lux_torch import tree as ltree
from lux_torch.core import setup
from lux_torch.layers.recurrent import (
    GRUCell,
    LSTMCell,
    Recurrence,
    RNNCell,
    StatefulRecurrentCell,
)
from lux_torch.testing import check_layer

TORCH_CELLS = {"RNNCell": nn.RNNCell, "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell}
LUX_CELLS = {"RNNCell": RNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}


def cell_reference(module: nn.Module, is_lstm: bool) -> Any:
    """A callable reference: the torch cell on our tensors, in the carry convention."""

    def reference(tensors: dict[str, torch.Tensor], x: torch.Tensor, carry: Any = None) -> Any:
        args = (x,) if carry is None else (x, carry)
        out = torch.func.functional_call(module, tensors, args)
        return (out[0], out) if is_lstm else (out, out)

    return reference


# (class, kwargs, tuple input, backend)
CELL_CASES = [
    ("RNNCell", {}, False, "inductor"),
    ("RNNCell", {"nonlinearity": "relu"}, True, None),
    ("RNNCell", {"bias": False}, True, None),
    ("LSTMCell", {}, True, "inductor"),
    ("LSTMCell", {}, False, None),
    ("LSTMCell", {"bias": False}, True, None),
    ("GRUCell", {}, True, "inductor"),
    ("GRUCell", {"bias": False}, False, None),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "kwargs", "with_carry", "backend"), CELL_CASES)
def test_cell_conformance(
    name: str, kwargs: dict[str, Any], with_carry: bool, backend: str | None, dtype: torch.dtype
) -> None:
    layer = LUX_CELLS[name](3, 4, **kwargs)
    module = TORCH_CELLS[name](3, 4, **kwargs).to(dtype)
    is_lstm = name == "LSTMCell"
    x: Any = randn(2, 3, dtype=dtype)
    if with_carry:
        h = 0.5 * randn(2, 4, dtype=dtype, seed=2)
        x = (x, (h, 0.5 * randn(2, 4, dtype=dtype, seed=3)) if is_lstm else h)
    report = check(
        layer,
        x,
        dtype,
        reference=cell_reference(module, is_lstm),
        compile_backend=backend or "aot_eager",
    )
    assert report["parity"] == "passed"
    assert report["gradcheck"] == "passed"
    assert report["vmap"] == "passed"


def test_cell_unbatched_and_structure() -> None:
    cell = LSTMCell(3, 5)
    ps, st = setup(0, cell)
    assert {k: tuple(v.shape) for k, v in ps.items()} == {
        "weight_ih": (20, 3),
        "weight_hh": (20, 5),
        "bias_ih": (20,),
        "bias_hh": (20,),
    }
    assert st == {}
    (y, (h, c)), _ = cell(randn(3), ps, st)
    assert y.shape == h.shape == c.shape == (5,)
    assert y is h


def test_init_bounds() -> None:
    for cls in (RNNCell, LSTMCell, GRUCell):
        ps, _ = setup(0, cls(2, 16))
        for t in ps.values():
            assert t.abs().max() <= 0.25  # 1 / sqrt(16)
            assert t.abs().max() > 0.2


def test_cell_in_chain() -> None:
    model = lux.Chain(GRUCell(3, 4), lambda out: out[0])
    ps, st = setup(0, model)
    y, _ = model(randn(2, 3), ps, st)
    (expected, _), _ = GRUCell(3, 4)(randn(2, 3), ps["layer_1"], {})
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


# --------------------------------------------------------------------------- Recurrence


def lstm_reference(module: nn.LSTM, return_sequence: bool, batch_first: bool) -> Any:
    def reference(tensors: dict[str, torch.Tensor], x: torch.Tensor, carry: Any = None) -> Any:
        weights = {n.replace("cell.", "") + "_l0": t for n, t in tensors.items()}
        args: tuple[Any, ...] = (x,)
        if carry is not None:
            args = (x, (carry[0].unsqueeze(0), carry[1].unsqueeze(0)))
        out, _ = torch.func.functional_call(module, weights, args)
        if return_sequence:
            return out
        return out[:, -1] if batch_first else out[-1]

    return reference


# (return_sequence, batch_first, initial carry, backend)
RECURRENCE_CASES = [
    (False, True, False, "inductor"),
    (True, True, True, None),
    (True, False, False, None),
    (False, False, True, None),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("seq", "batch_first", "with_carry", "backend"), RECURRENCE_CASES)
def test_recurrence_lstm_parity(
    seq: bool, batch_first: bool, with_carry: bool, backend: str | None, dtype: torch.dtype
) -> None:
    layer = Recurrence(LSTMCell(3, 4), return_sequence=seq, batch_first=batch_first)
    module = nn.LSTM(3, 4, num_layers=1, batch_first=batch_first).to(dtype)
    x: Any = randn(2, 5, 3, dtype=dtype)
    if with_carry:
        n = 2 if batch_first else 5
        h, c = (0.5 * randn(n, 4, dtype=dtype, seed=s) for s in (2, 3))
        x = (x, (h, c))
    report = check(
        layer,
        x,
        dtype,
        reference=lstm_reference(module, seq, batch_first),
        compile_backend=backend or "aot_eager",
    )
    assert report["parity"] == "passed"
    y, _ = layer(x, *setup(0, layer, dtype=dtype))
    # batch_first: (N, T) = (2, 5); otherwise (T, N) = (2, 5)
    expected = (2, 5, 4) if seq else (2, 4) if batch_first else (5, 4)
    assert tuple(y.shape) == expected


@pytest.mark.parametrize("name", ["RNNCell", "GRUCell"])
def test_recurrence_matches_torch_rnn(name: str) -> None:
    layer = Recurrence(LUX_CELLS[name](3, 4), return_sequence=True)
    module = (nn.RNN if name == "RNNCell" else nn.GRU)(3, 4, batch_first=True)

    def reference(tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        weights = {n.replace("cell.", "") + "_l0": t for n, t in tensors.items()}
        result: torch.Tensor = torch.func.functional_call(module, weights, (x,))[0]
        return result

    report = check(layer, randn(2, 4, 3), torch.float32, reference=reference, compile=False)
    assert report["parity"] == "passed"


def test_recurrence_unbatched_and_last_equals_sequence_end() -> None:
    ps, st = setup(0, Recurrence(GRUCell(3, 4)))
    x = randn(6, 3)
    last, _ = Recurrence(GRUCell(3, 4))(x, ps, st)
    seq, _ = Recurrence(GRUCell(3, 4), return_sequence=True)(x, ps, st)
    assert last.shape == (4,) and seq.shape == (6, 4)
    torch.testing.assert_close(seq[-1], last, rtol=0, atol=0)


def test_vmap_ensemble_of_lstm_recurrences() -> None:
    layer = Recurrence(LSTMCell(3, 4), return_sequence=True)
    members = [setup(k, layer) for k in lux.random.split(lux.random.key(7), 4)]
    x = randn(2, 5, 3)
    looped = torch.stack([layer(x, ps, st)[0] for ps, st in members])
    stacked_ps = ltree.stack([ps for ps, _ in members])
    stacked_st = ltree.stack([st for _, st in members])
    got, _ = torch.func.vmap(lambda p, s: layer(x, p, s))(stacked_ps, stacked_st)
    torch.testing.assert_close(got, looped)
    # also over the batch of inputs, one per member
    xs = randn(4, 2, 5, 3, seed=3)
    got2, _ = torch.func.vmap(lambda xx, p, s: layer(xx, p, s))(xs, stacked_ps, stacked_st)
    looped2 = torch.stack([layer(xs[i], *members[i])[0] for i in range(4)])
    torch.testing.assert_close(got2, looped2)


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_stateful_streaming_equals_recurrence(name: str) -> None:
    cell = LUX_CELLS[name](3, 4)
    stream = StatefulRecurrentCell(cell, batch_shape=(2,))
    rec = Recurrence(cell, return_sequence=True)
    ps, st = setup(0, stream)
    x = randn(2, 6, 3)
    before = ltree.map(lambda t: t.clone(), st)
    ys = []
    st_t = st
    for t in range(6):
        y, st_t = stream(x[:, t], ps, st_t)
        ys.append(y)
    expected, _ = rec(x, ps, {"cell": {}})
    torch.testing.assert_close(torch.stack(ys, 1), expected, rtol=0, atol=0)
    # the given state is never mutated
    for a, b in zip(ltree.leaves(before), ltree.leaves(st), strict=True):
        assert torch.equal(a, b)
    # the state keeps its structure and shapes
    assert [t.shape for t in ltree.leaves(st_t)] == [t.shape for t in ltree.leaves(st)]


def test_stateful_conformance() -> None:
    stream = StatefulRecurrentCell(LSTMCell(3, 4), batch_shape=(2,))

    def reference(tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        module = nn.LSTMCell(3, 4)
        weights = {n.replace("cell.", ""): t for n, t in tensors.items() if n.startswith("cell.")}
        h, c = torch.func.functional_call(
            module, weights, (x, (tensors["carry.0"].clone(), tensors["carry.1"].clone()))
        )
        tensors["carry.0"].copy_(h.detach())  # the state update, as a module's buffers
        tensors["carry.1"].copy_(c.detach())
        result: torch.Tensor = h
        return result

    ps, st = setup(0, stream)
    # a non-zero carry: as after some steps
    st = {"cell": {}, "carry": (0.5 * randn(2, 4, seed=2), 0.5 * randn(2, 4, seed=3))}
    report = check_layer(
        stream, randn(2, 3), ps=ps, st=st, reference=reference, compile_backend="inductor"
    )
    assert report["parity"] == "passed"
    assert report["compile"] == "passed"


# --------------------------------------------------------------------------- errors


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match=r"RNNCell: nonlinearity must be 'tanh' or 'relu'"):
        RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"LSTMCell: hidden_size must be >= 1, got 0"):
        LSTMCell(3, 0)
    with pytest.raises(ValueError, match=r"GRUCell: input_size must be >= 1, got -1"):
        GRUCell(-1, 4)
    with pytest.raises(TypeError, match=r"RNNCell: input_size must be an int"):
        RNNCell(3.0, 4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Recurrence: cell must be a Layer"):
        Recurrence(nn.LSTMCell(3, 4))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"StatefulRecurrentCell: cell must be"):
        StatefulRecurrentCell(Recurrence(LSTMCell(3, 4)))
    with pytest.raises(ValueError, match=r"StatefulRecurrentCell: batch_shape entries"):
        StatefulRecurrentCell(LSTMCell(3, 4), batch_shape=(0,))


def test_call_errors() -> None:
    cell = LSTMCell(3, 4)
    ps, st = setup(0, cell)
    with pytest.raises(ValueError, match=r"LSTMCell: expected input of shape \(\*, 3\), got") as e:
        cell(randn(2, 5), ps, st)
    assert "LSTMCell(3 => 4)" in "".join(e.value.__notes__)
    with pytest.raises(ValueError, match=r"LSTMCell: expected carry c of shape \(2, 4\)"):
        cell((randn(2, 3), (randn(2, 4), randn(3, 4))), ps, st)
    with pytest.raises(TypeError, match=r"LSTMCell: expected the carry \(h, c\)"):
        cell((randn(2, 3), randn(2, 4)), ps, st)
    gru = GRUCell(3, 4)
    gps, gst = setup(0, gru)
    with pytest.raises(ValueError, match=r"GRUCell: expected carry h of shape \(2, 4\)"):
        gru((randn(2, 3), randn(4)), gps, gst)
    rec = Recurrence(GRUCell(3, 4))
    rps, rst = setup(0, rec)
    with pytest.raises(ValueError, match=r"Recurrence: expected a sequence of shape \(N, T, F\)"):
        rec(randn(3), rps, rst)
    with pytest.raises(ValueError, match=r"GRUCell: expected input of shape \(\*, 3\)") as e:
        rec(randn(2, 5, 2), rps, rst)
    assert "cell (GRUCell(3 => 4))" in "".join(e.value.__notes__)
    stream = StatefulRecurrentCell(GRUCell(3, 4), batch_shape=(2,))
    sps, sst = setup(0, stream)
    with pytest.raises(ValueError, match=r"StatefulRecurrentCell: expected a step of shape"):
        stream(randn(3, 3), sps, sst)
