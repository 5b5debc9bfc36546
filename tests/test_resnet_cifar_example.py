"""The ResNet-20 example runs and learns (a short version, so the suite stays fast)."""

from __future__ import annotations

import pathlib

import pytest
import torch
from helpers import assert_png as _assert_png
from helpers import load_example as _load

import lux_torch as lux


@pytest.mark.slow  # 32 training steps of ResNet-20 on 32x32 images, and evaluation
def test_resnet_cifar_like_learns(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "resnet.png"
    # 2 epochs over 512 training images (32 steps of 32): 0.27 measured, chance is 0.1
    accuracy = _load("resnet_cifar_like").main(
        epochs=2, train_limit=512, out=str(png), progress=False
    )
    out = capsys.readouterr().out
    assert accuracy >= 0.2, accuracy
    assert "ResNet-20: 269,722 parameters" in out and "final test accuracy" in out
    _assert_png(png)


def test_resnet_cifar_like_data() -> None:
    example = _load("resnet_cifar_like")
    (x_train, y_train), (x_test, y_test) = example.load_data(lux.random.key(0))
    assert x_train.shape == (1438, 3, 32, 32) and x_test.shape == (359, 3, 32, 32)
    assert y_train.dtype == torch.int64 and set(y_train.tolist()) == set(range(10))
    assert y_test.shape == (359,) and set(y_test.tolist()) <= set(range(10))
    both = torch.cat([x_train, x_test])
    torch.testing.assert_close(both.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(both.std((0, 2, 3)), torch.ones(3), atol=1e-5, rtol=0)
    # the colours vary between images: the channel means differ from image to image
    assert both.mean((2, 3)).std(0).min() > 0.1
    again, _ = example.load_data(lux.random.key(0))
    assert torch.equal(again[0], x_train)
    # augmentation shifts by whole pixels: a shifted image equals the original's crop
    x = x_train[:4]
    shifted = example.augment(lux.random.key(1), x, max_shift=2)
    assert shifted.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for img, orig in zip(shifted, padded, strict=True):
        assert any(
            torch.equal(img, orig[:, r : r + 32, c : c + 32]) for r in range(5) for c in range(5)
        )
