"""Upsample, PixelShuffle, PixelUnshuffle: torch.nn parity through check_layer, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import DTYPES, check, randn
from torch import nn

from lux_torch.layers.upsample import PixelShuffle, PixelUnshuffle, Upsample

UPSAMPLE = [
    ({"scale_factor": 2}, (2, 3, 4)),  # nearest, 1-d
    ({"scale_factor": 2, "mode": "nearest"}, (2, 3, 3, 4)),
    ({"size": (5, 7), "mode": "nearest-exact"}, (2, 2, 3, 4)),
    ({"scale_factor": 1.5, "mode": "linear"}, (2, 3, 4)),
    ({"scale_factor": 2, "mode": "bilinear", "align_corners": True}, (1, 2, 3, 4)),
    ({"size": 6, "mode": "bicubic"}, (1, 2, 3, 4)),
    ({"scale_factor": (2, 1, 2), "mode": "trilinear"}, (1, 2, 2, 3, 2)),
    ({"size": (2, 2), "mode": "area"}, (1, 2, 4, 6)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kwargs", "shape"), UPSAMPLE)
def test_upsample_matches_torch(kwargs: dict[str, Any], shape: tuple[int, ...], dtype: Any) -> None:
    fast = kwargs.get("mode") != "bilinear"  # one inductor case; graph capture for the rest
    report = check(
        Upsample(**kwargs),
        randn(*shape, dtype=dtype),
        dtype,
        reference=nn.Upsample(**kwargs),
        compile_backend="aot_eager" if fast else "inductor",
    )
    assert report["parity"] == report["gradcheck"] == "passed"


@pytest.mark.parametrize("dtype", DTYPES)
def test_pixel_shuffle_and_unshuffle_match_torch_and_invert_each_other(dtype: Any) -> None:
    x = randn(2, 8, 3, 5, dtype=dtype)
    report = check(PixelShuffle(2), x, dtype, reference=nn.PixelShuffle(2))
    assert report["parity"] == report["gradcheck"] == "passed"
    y = randn(2, 2, 6, 4, dtype=dtype)
    report = check(
        PixelUnshuffle(2), y, dtype, reference=nn.PixelUnshuffle(2), compile_backend="aot_eager"
    )
    assert report["parity"] == "passed"
    shuffled, _ = PixelShuffle(2)(x, {}, {})
    assert torch.equal(PixelUnshuffle(2)(shuffled, {}, {})[0], x)


def test_reprs() -> None:
    assert (
        repr(Upsample(scale_factor=2)) == "Upsample(scale_factor=2, mode='nearest')  # 0 parameters"
    )
    assert repr(Upsample(size=(4, 4), mode="bilinear", align_corners=False)) == (
        "Upsample(size=(4, 4), mode='bilinear', align_corners=False)  # 0 parameters"
    )
    assert repr(PixelShuffle(3)) == "PixelShuffle(3)  # 0 parameters"


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Upsample(), ValueError, "exactly one of size and scale_factor"),
        (lambda: Upsample(size=2, scale_factor=2), ValueError, "exactly one of"),
        (lambda: Upsample(scale_factor=2, mode="cubic"), ValueError, "mode must be one of"),
        (lambda: Upsample(scale_factor=0), ValueError, r"scale_factor must be > 0"),
        (lambda: Upsample(size=(2, 0)), ValueError, r"size must be > 0"),
        (lambda: Upsample(size=2.5), TypeError, "size must be a int"),  # type: ignore[arg-type]
        (lambda: Upsample(scale_factor=2, align_corners=True), ValueError, "linear modes"),
        (lambda: Upsample(scale_factor=(2, 2), mode="trilinear"), ValueError, "interpolates 3"),
        (lambda: PixelShuffle(0), ValueError, "upscale_factor must be >= 1"),
        (lambda: PixelUnshuffle(2.0), TypeError, "downscale_factor must be an int"),  # type: ignore[arg-type]
    ],
)
def test_invalid_configurations(make: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make()


def test_wrong_inputs_are_named() -> None:
    with pytest.raises(ValueError, match=r"expected a 4-d input .* mode='bilinear'.*\(2, 3, 4\)"):
        Upsample(scale_factor=2, mode="bilinear")(torch.ones(2, 3, 4), {}, {})
    with pytest.raises(ValueError, match=r"expected a 5-d input"):
        Upsample(size=(2, 2, 2))(torch.ones(1, 1, 4, 4), {}, {})
    with pytest.raises(Exception, match=r"expected input of shape \(\*, C \* 4, H, W\)"):
        PixelShuffle(2)(torch.ones(1, 6, 3, 3), {}, {})
