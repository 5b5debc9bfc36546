"""torch.nn-style recurrent stacks (RNN, LSTM, GRU) and Bidirectional.

The stacks go through the conformance harness with the ``torch.nn`` module itself as the
reference (same flat parameter names; the module is called as ``module(x, h0)``), for two
layers, both directions, both layouts and with or without an initial state. One case
compiles with inductor, the others with ``aot_eager``.
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
from lux_torch.layers.recurrent import Bidirectional, LSTMCell, Recurrence
from lux_torch.layers.rnn import GRU, LSTM, RNN
from lux_torch.testing import check_layer

LUX = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
TORCH = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}

# (name, bidirectional, batch_first, with h0, backend)
CASES = [
    ("LSTM", True, False, True, "inductor"),
    ("LSTM", False, True, False, None),
    ("LSTM", True, True, False, None),
    ("GRU", True, False, False, None),
    ("GRU", False, True, True, None),
    ("RNN", True, True, True, None),
    ("RNN", False, False, False, None),
]


def make_input(name: str, bidirectional: bool, batch_first: bool, with_h0: bool, dtype: Any) -> Any:
    n, length = 2, 5
    x = randn(*((n, length, 3) if batch_first else (length, n, 3)), dtype=dtype)
    if not with_h0:
        return x
    count = 2 * (2 if bidirectional else 1)
    h0 = 0.5 * randn(count, n, 4, dtype=dtype, seed=2)
    if name == "LSTM":
        return (x, (h0, 0.5 * randn(count, n, 4, dtype=dtype, seed=3)))
    return (x, h0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "bidirectional", "batch_first", "with_h0", "backend"), CASES)
def test_stack_conformance(
    name: str,
    bidirectional: bool,
    batch_first: bool,
    with_h0: bool,
    backend: str | None,
    dtype: torch.dtype,
) -> None:
    kw = {"num_layers": 2, "bidirectional": bidirectional, "batch_first": batch_first}
    layer = LUX[name](3, 4, **kw)
    module = TORCH[name](3, 4, **kw).to(dtype)
    x = make_input(name, bidirectional, batch_first, with_h0, dtype)
    report = check(layer, x, dtype, reference=module, compile_backend=backend or "aot_eager")
    assert report["parity"] == "passed"
    assert report["vmap"] == "passed"
    if dtype == torch.float64:
        assert report["gradcheck"] == "passed"
    else:
        assert report["compile"] == "passed"


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_options_parity(name: str) -> None:
    """bias=False, relu, unbatched input (with an unbatched h0), against torch."""
    extra = {"nonlinearity": "relu"} if name == "RNN" else {}
    layer = LUX[name](3, 4, num_layers=2, bias=False, bidirectional=True, **extra)
    module = TORCH[name](3, 4, num_layers=2, bias=False, bidirectional=True, **extra)
    x = randn(5, 3, dtype=torch.float64)
    h0 = 0.5 * randn(4, 4, dtype=torch.float64, seed=2)
    inp: Any = (x, (h0, h0.flip(0))) if name == "LSTM" else (x, h0)
    for given in (x, inp):
        report = check(layer, given, torch.float64, reference=module.double(), vmap=False)
        assert report["parity"] == "passed"


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_load_state_dict_from_torch_and_round_trip(name: str) -> None:
    module = TORCH[name](3, 4, num_layers=2, bidirectional=True, batch_first=True)
    layer = LUX[name](3, 4, num_layers=2, bidirectional=True, batch_first=True)
    ps, st = lux.load_state_dict(layer, module.state_dict())
    assert st == {}
    x = randn(2, 5, 3)
    (out, hn), _ = layer(x, ps, st)
    ref_out, ref_hn = module(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(hn, ref_hn)
    # our own state_dict has torch's names and shapes, and loads into the module
    ps0, st0 = setup(0, layer)
    sd = lux.state_dict(ps0, st0)
    assert {k: v.shape for k, v in sd.items()} == {
        k: v.shape for k, v in module.state_dict().items()
    }
    module.load_state_dict(sd)
    (out0, _), _ = layer(x, ps0, st0)
    torch.testing.assert_close(out0, module(x)[0])


def test_init_bounds_and_shapes() -> None:
    ps, st = setup(0, LSTM(3, 16, num_layers=2, bidirectional=True))
    assert st == {}
    assert tuple(ps["weight_ih_l0"].shape) == (64, 3)
    assert tuple(ps["weight_ih_l1_reverse"].shape) == (64, 32)
    for t in ps.values():
        assert 0.2 < t.abs().max() <= 0.25  # U(-1/sqrt(16), 1/sqrt(16))


# --------------------------------------------------------------------------- dropout


def test_dropout_training_determinism_and_key_advance() -> None:
    layer = LSTM(3, 4, num_layers=3, dropout=0.5)
    ps, st = setup(0, layer)
    assert set(st) == {"key", "training"} and bool(st["training"])
    x = randn(5, 2, 3)
    key_before = st["key"].clone()
    (y1, _), st1 = layer(x, ps, st)
    (y2, _), st2 = layer(x, ps, st)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)  # same key -> same masks
    assert torch.equal(st1["key"], st2["key"])
    assert torch.equal(st["key"], key_before)  # st not mutated
    assert not torch.equal(st1["key"], st["key"])  # key advanced
    (y3, _), _ = layer(x, ps, st1)
    assert not torch.equal(y1, y3)  # fresh masks
    # dropout changes the result in training mode but not in test mode
    (y_test, _), st_test = layer(x, ps, lux.test_mode(st))
    assert torch.equal(st_test["key"], st["key"])
    ref = nn.LSTM(3, 4, num_layers=3, dropout=0.5).eval()
    ref.load_state_dict(lux.state_dict(ps, {}))
    torch.testing.assert_close(y_test, ref(x)[0])
    assert not torch.allclose(y1, y_test)


def test_dropout_conformance_test_mode_parity() -> None:
    layer = GRU(3, 4, num_layers=2, dropout=0.25, bidirectional=True)
    module = nn.GRU(3, 4, num_layers=2, dropout=0.25, bidirectional=True).double()
    report = check(
        layer, randn(5, 2, 3, dtype=torch.float64), torch.float64, reference=module, gradcheck=False
    )
    assert report["parity[test]"] == "passed"
    assert report["determinism[train]"] == "passed"
    assert report["vmap[train]"] == "passed"


def test_dropout_single_layer_is_identity_on_output() -> None:
    layer = RNN(3, 4, dropout=0.5)  # as torch: no dropout after the last layer
    ps, st = setup(0, layer)
    x = randn(5, 2, 3)
    (y_train, _), st1 = layer(x, ps, st)
    (y_test, _), _ = layer(x, ps, lux.test_mode(st))
    torch.testing.assert_close(y_train, y_test, rtol=0, atol=0)
    assert not torch.equal(st1["key"], st["key"])


# --------------------------------------------------------------------------- vmap ensemble


def test_vmap_ensemble_of_lstms_equals_loop() -> None:
    layer = LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    members = [setup(k, layer) for k in lux.random.split(lux.random.key(7), 4)]
    x = randn(2, 5, 3)
    looped = [layer(x, ps, st)[0] for ps, st in members]
    stacked_ps = ltree.stack([ps for ps, _ in members])
    stacked_st = ltree.stack([st for _, st in members])
    (out, (hn, cn)), _ = torch.func.vmap(lambda p, s: layer(x, p, s))(stacked_ps, stacked_st)
    torch.testing.assert_close(out, torch.stack([o for o, _ in looped]))
    torch.testing.assert_close(hn, torch.stack([h for _, (h, _) in looped]))
    torch.testing.assert_close(cn, torch.stack([c for _, (_, c) in looped]))


# --------------------------------------------------------------------------- Bidirectional


def test_bidirectional_matches_torch_one_layer() -> None:
    bi = Bidirectional(Recurrence(LSTMCell(3, 4), return_sequence=True, batch_first=True))
    module = nn.LSTM(3, 4, bidirectional=True, batch_first=True).double()

    def reference(tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        weights = {}
        for n, t in tensors.items():
            direction, _, base = n.split(".")
            weights[base + "_l0" + ("_reverse" if direction == "backward" else "")] = t
        result: torch.Tensor = torch.func.functional_call(module, weights, (x,))[0]
        return result

    report = check(bi, randn(2, 5, 3, dtype=torch.float64), torch.float64, reference=reference)
    assert report["parity"] == "passed"
    ps, _ = setup(0, bi)
    assert set(ps) == {"forward", "backward"}
    assert not torch.equal(ps["forward"]["cell"]["weight_ih"], ps["backward"]["cell"]["weight_ih"])


def test_bidirectional_compiles_and_carries() -> None:
    bi = Bidirectional(Recurrence(LSTMCell(3, 4), return_sequence=True, batch_first=False))
    x = randn(5, 2, 3)
    carry = (0.5 * randn(2, 4, seed=2), 0.5 * randn(2, 4, seed=3))
    report = check_layer(bi, (x, (carry, carry)), reference=None, compile_backend="aot_eager")
    assert report["compile"] == "passed"
    y, _ = bi(x, *setup(0, bi))
    assert tuple(y.shape) == (5, 2, 8)


# --------------------------------------------------------------------------- errors


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match=r"LSTM: num_layers must be >= 1, got 0"):
        LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"GRU: dropout must be in \[0, 1\), got 1.0"):
        GRU(3, 4, dropout=1.0)
    with pytest.raises(ValueError, match=r"RNN: dropout must be in \[0, 1\), got -0.1"):
        RNN(3, 4, dropout=-0.1)
    with pytest.raises(ValueError, match=r"RNN: nonlinearity must be 'tanh' or 'relu'"):
        RNN(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"LSTM: proj_size must be smaller than hidden_size \(4\)"):
        LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match=r"LSTM: proj_size must be >= 0, got -1"):
        LSTM(3, 4, proj_size=-1)
    with pytest.raises(TypeError, match=r"GRU: bidirectional must be a bool"):
        GRU(3, 4, bidirectional=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Bidirectional: forward must be a Recurrence"):
        Bidirectional(Recurrence(LSTMCell(3, 4)))


def test_call_errors() -> None:
    lstm = LSTM(3, 4, num_layers=2)
    ps, st = setup(0, lstm)
    with pytest.raises(ValueError, match=r"LSTM: expected input of shape \(L, N, 3\)") as e:
        lstm(randn(5, 2, 2), ps, st)
    assert "LSTM(3 => 4, num_layers=2)" in "".join(e.value.__notes__)
    h = randn(2, 2, 4)
    with pytest.raises(ValueError, match=r"LSTM: expected c0 of shape \(2, 2, 4\)"):
        lstm((randn(5, 2, 3), (h, randn(1, 2, 4))), ps, st)
    with pytest.raises(TypeError, match=r"LSTM: expected the initial state as a tuple \(h0, c0\)"):
        lstm((randn(5, 2, 3), h), ps, st)
    gru = GRU(3, 4, bidirectional=True, batch_first=True)
    gps, gst = setup(0, gru)
    with pytest.raises(ValueError, match=r"GRU: expected h0 of shape \(2, 2, 4\)"):
        gru((randn(2, 5, 3), randn(1, 2, 4)), gps, gst)
    with pytest.raises(ValueError, match=r"GRU: expected input of shape \(N, L, 3\)"):
        gru(randn(3), gps, gst)
