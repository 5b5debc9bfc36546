"""AlphaDropout, Dropout1d/2d/3d and VariationalHiddenDropout (with resample_masks)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import DTYPES, check, randn
from torch import nn

import lux_torch as lux
from lux_torch.layers.dropout import (
    AlphaDropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    VariationalHiddenDropout,
    resample_masks,
)
from lux_torch.testing import check_layer

CHANNEL = [(Dropout1d, nn.Dropout1d, (3, 4, 5)), (Dropout2d, nn.Dropout2d, (2, 3, 4, 4))]
CHANNEL += [(Dropout3d, nn.Dropout3d, (2, 3, 2, 3, 2))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("ours", "theirs", "shape"), CHANNEL)
def test_channel_dropout_conformance(ours: Any, theirs: Any, shape: Any, dtype: Any) -> None:
    report = check(
        ours(0.4),
        randn(*shape, dtype=dtype),
        dtype,
        reference=theirs(0.4),
        compile_backend="aot_eager" if ours is not Dropout2d else "inductor",
        expected_repr=f"{ours.__name__}(p=0.4)  # 0 parameters, plus 2 states",
    )
    assert report["parity[test]"] == "passed"
    assert report["determinism[train]"] == report["vmap[train]"] == "passed"


@pytest.mark.parametrize("dtype", DTYPES)
def test_alpha_dropout_conformance(dtype: torch.dtype) -> None:
    report = check(
        AlphaDropout(0.2),
        randn(4, 6, dtype=dtype),
        dtype,
        reference=nn.AlphaDropout(0.2),
        expected_repr="AlphaDropout(p=0.2)  # 0 parameters, plus 2 states",
    )
    assert report["parity[test]"] == report["determinism[train]"] == "passed"
    assert report["vmap[train]"] == "passed"


@pytest.mark.parametrize("layer_type", [Dropout1d, Dropout2d, Dropout3d])
def test_channel_dropout_zeroes_whole_channels_at_rate_p(layer_type: Any) -> None:
    n = layer_type.ndim
    layer = layer_type(0.25)
    ps, st = lux.setup(0, layer)
    x = torch.ones(64, 32, *([3] * n))
    y, new_st = layer(x, ps, st)
    flat = y.reshape(64, 32, -1)
    assert torch.equal(flat, flat[:, :, :1].expand_as(flat))  # constant within a channel
    kept = flat[:, :, 0] != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    torch.testing.assert_close(flat[:, :, 0][kept], torch.full_like(flat[:, :, 0][kept], 4 / 3))
    assert not torch.equal(new_st["key"], st["key"])
    unbatched, _ = layer(x[0], ps, st)  # (C, *spatial): one mask per channel
    assert unbatched.shape == x[0].shape
    with pytest.raises(ValueError, match=rf"{layer_type.__name__}.*expected input of shape"):
        layer(torch.ones(*([2] * (n + 3))), ps, st)


def test_alpha_dropout_keeps_zero_mean_unit_variance_like_torch() -> None:
    layer = AlphaDropout(0.3)
    ps, st = lux.setup(0, layer)
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    y, _ = layer(x, ps, st)
    assert abs(y.mean().item()) < 0.01 and abs(y.std().item() - 1.0) < 0.01
    # the dropped elements all take the same value a * alpha' + b (torch's formula)
    values, counts = torch.unique(y, return_counts=True)
    top = values[counts.argmax()]
    assert abs(counts.max().item() / x.numel() - 0.3) < 0.01
    a = ((1 - 0.3) * (1 + 0.3 * 1.7580993408473766**2)) ** -0.5
    assert abs(top.item() - (a * -1.7580993408473766 + a * 1.7580993408473766 * 0.3)) < 1e-4
    y_test, _ = layer(x, ps, lux.test_mode(st))
    assert torch.equal(y_test, x)


def test_variational_dropout_keeps_its_mask_until_resampled() -> None:
    model = lux.Chain(lux.Linear(4, 16), VariationalHiddenDropout(0.5), lux.Linear(16, 2))
    ps, st = lux.setup(0, model)
    x = torch.randn(3, 4)
    hidden = model.layers["layer_2"]
    h = torch.ones(3, 16)
    y1, st1 = hidden(h, {}, st["layer_2"])
    y2, st2 = hidden(h, {}, st1)
    assert torch.equal(y1, y2) and torch.equal(st2["mask_key"], st1["mask_key"])
    assert 0 < (y1 == 0).float().mean().item() < 1
    out1, st_a = model(x, ps, st)
    out2, _ = model(x, ps, st_a)
    torch.testing.assert_close(out1, out2)  # same mask on both calls
    new = resample_masks(st_a, lux.random.key(7))
    assert lux.tree.structure(new) == lux.tree.structure(st)
    assert not torch.equal(new["layer_2"]["mask_key"], st_a["layer_2"]["mask_key"])
    assert torch.equal(st_a["layer_2"]["mask_key"], st["layer_2"]["mask_key"])  # untouched
    y3, _ = hidden(h, {}, new["layer_2"])
    assert not torch.equal(y3, y1)
    assert torch.equal(hidden(h, {}, lux.test_mode(st["layer_2"]))[0], h)


def test_variational_dropout_conformance_and_ensemble_resampling() -> None:
    layer = VariationalHiddenDropout(0.3)
    report = check_layer(
        layer,
        randn(4, 6),
        stochastic=False,  # the mask key is kept, by design
        expected_repr="VariationalHiddenDropout(p=0.3)  # 0 parameters, plus 2 states",
    )
    assert report["determinism[train]"] == report["vmap[train]"] == "passed"
    members = lux.Ensemble(layer, 3, in_dim=None)
    _, st = lux.setup(0, members)
    new = resample_masks(st, lux.random.key(1))["member"]["mask_key"]
    assert new.shape == (3, 2) and len({tuple(k.tolist()) for k in new}) == 3


def test_invalid_probabilities_are_rejected() -> None:
    for layer_type in (AlphaDropout, Dropout1d, Dropout2d, Dropout3d, VariationalHiddenDropout):
        with pytest.raises(ValueError, match=rf"{layer_type.__name__}: p must be in \[0, 1\]"):
            layer_type(1.5)
        with pytest.raises(TypeError, match=rf"{layer_type.__name__}: p must be a float"):
            layer_type("0.1")  # type: ignore[arg-type]
