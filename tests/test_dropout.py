"""Dropout: torch.nn.Dropout semantics, randomness only from st["key"]."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers import DTYPES, check, randn
from torch import nn

from lux_torch import tree as ltree
from lux_torch.core import setup, test_mode, train_mode
from lux_torch.layers import Dropout


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_conformance(dtype):
    # parity with nn.Dropout in test mode (identity); training mode: determinism, an advanced
    # key, bitwise-equal compiled masks, per-member masks under vmap. The float64 run skips
    # compile: the float32 run already captured the same graph.
    report = check(
        Dropout(0.3),
        randn(4, 5, dtype=dtype),
        dtype,
        reference=nn.Dropout(0.3),
        expected_repr="Dropout(p=0.3)  # 0 parameters, plus 2 states",
    )
    assert report["parity[test]"] == "passed"
    assert report["determinism[train]"] == "passed" and report["vmap[train]"] == "passed"
    if dtype == torch.float32:
        assert report["compile[train]"] == "passed"


def test_state_layout_and_key_advance():
    layer = Dropout(0.5)
    ps, st = setup(3, layer)
    assert ps == {} and set(st) == {"key", "training"}
    assert st["key"].shape == (2,) and st["key"].dtype == torch.int64
    assert st["training"] == ltree.Static(True)
    x = torch.ones(64)
    y1, st1 = layer(x, ps, st)
    y2, st2 = layer(x, ps, st1)
    assert not torch.equal(st1["key"], st["key"]) and not torch.equal(st2["key"], st1["key"])
    assert not torch.equal(y1, y2)  # a fresh mask per call
    y1_again, st1_again = layer(x, ps, st)
    assert torch.equal(y1, y1_again) and torch.equal(st1["key"], st1_again["key"])
    assert st1["training"] == ltree.Static(True)


def test_test_mode_and_p_zero_are_the_identity():
    x = randn(8, 3)
    layer = Dropout(0.5)
    ps, st = setup(0, layer)
    y, new_st = layer(x, ps, test_mode(st))
    assert y is x and torch.equal(new_st["key"], st["key"])
    assert new_st["training"] == ltree.Static(False)
    y, new_st = Dropout(0.0)(x, ps, train_mode(st))
    assert y is x and torch.equal(new_st["key"], st["key"])


def test_p_one_drops_everything_like_torch():
    x = randn(8, 3)
    layer = Dropout(1.0)
    y, _ = layer(x, *setup(0, layer))
    assert torch.equal(y, torch.zeros_like(x))
    grad = torch.func.grad(lambda v: layer(v, {}, setup(0, layer)[1])[0].sum())(x)
    assert torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropped_fraction_and_mean_match_p(p):
    n = 200_000
    layer = Dropout(p)
    ps, st = setup(11, layer)
    y, _ = layer(torch.ones(n), ps, st)
    dropped = float((y == 0).double().mean())
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma
    # survivors are scaled by 1 / (1 - p) as in torch, with p quantised to a multiple of
    # 2**-16 (lux_torch.random.dropout), which keeps the mean exactly unbiased
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-4, atol=0)
    assert abs(float(y.double().mean()) - 1) < 5 * math.sqrt(p / (1 - p) / n)


def test_gradient_is_the_scaled_mask():
    layer = Dropout(0.25)
    ps, st = setup(0, layer)
    x = randn(50, 4, dtype=torch.float64)
    y, _ = layer(x, ps, st)
    grad = torch.func.grad(lambda v: layer(v, ps, st)[0].sum())(x)
    mask = (y != 0).double()
    torch.testing.assert_close(grad, mask / 0.75, rtol=0, atol=0)


def test_each_vmapped_ensemble_member_gets_its_own_mask():
    layer = Dropout(0.5)
    members = [setup(k, layer)[1] for k in range(4)]
    stacked = ltree.stack(members)
    x = torch.ones(256)
    ys, new_st = torch.func.vmap(lambda s: layer(x, {}, s), randomness="error")(stacked)
    assert ys.shape == (4, 256) and new_st["key"].shape == (4, 2)
    for i, st in enumerate(members):
        y, member_st = layer(x, {}, st)
        assert torch.equal(ys[i], y) and torch.equal(new_st["key"][i], member_st["key"])
    masks = ys != 0
    assert all(not torch.equal(masks[i], masks[j]) for i in range(4) for j in range(i))
    # and batched inputs with one key: one mask per sample (elementwise, like torch)
    y, _ = layer(torch.ones(2, 256), {}, members[0])
    assert not torch.equal(y[0], y[1])


def test_compiled_masks_are_bitwise_equal_to_eager():
    layer = Dropout(0.4)
    ps, st = setup(5, layer)
    x = randn(3, 7)
    compiled = torch.compile(lambda v, s: layer(v, ps, s), fullgraph=True, backend="aot_eager")
    y_eager, st_eager = layer(x, ps, st)
    y_comp, st_comp = compiled(x, st)
    assert torch.equal(y_eager, y_comp) and torch.equal(st_eager["key"], st_comp["key"])


@pytest.mark.parametrize(
    ("p", "error", "message"),
    [
        (1.5, ValueError, r"Dropout: p must be in \[0, 1\], got 1.5"),
        (-0.1, ValueError, r"Dropout: p must be in \[0, 1\], got -0.1"),
        ("0.5", TypeError, r"Dropout: p must be a float, got str"),
        (True, TypeError, r"Dropout: p must be a float, got bool"),
    ],
)
def test_out_of_range_p_is_rejected(p, error, message):
    with pytest.raises(error, match=message):
        Dropout(p)


def test_dropout_is_immutable_and_compares_by_configuration():
    layer = Dropout(0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.p = 0.1  # type: ignore[misc]
    assert layer == Dropout(0.5) == Dropout() and hash(layer) == hash(Dropout(1 / 2))
    assert Dropout(1) == Dropout(1.0) and isinstance(Dropout(1).p, float)
    assert layer != Dropout(0.3)
    assert repr(Dropout()) == "Dropout(p=0.5)  # 0 parameters, plus 2 states"


def test_non_tensor_input_is_explained():
    layer = Dropout(0.5)
    with pytest.raises(Exception, match=r"in Dropout\(p=0.5\): expected a Tensor, got list"):
        layer([1.0, 2.0], *setup(0, layer))  # type: ignore[arg-type]
