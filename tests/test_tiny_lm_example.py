"""The tiny LM example runs and learns (a short version, so the suite stays fast)."""

from __future__ import annotations

import pathlib

import pytest
import torch
from helpers import assert_png as _assert_png
from helpers import load_example as _load

import lux_torch as lux


def test_tiny_lm_learns_addition_and_lora_runs(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "tiny_lm.png"
    result = _load("tiny_lm").main(steps=250, lora_steps=40, out=str(png), progress=False)
    out = capsys.readouterr().out
    assert result["addition"] >= 0.5, result  # 0.96 after 300 steps
    assert result["subtraction_before"] < 0.1, result
    assert "uncached decoding gives the same tokens: True" in out
    assert "LoRA:" in out and "trainable parameters" in out
    _assert_png(png)


def test_tiny_lm_corpus() -> None:
    example = _load("tiny_lm")
    tokens = example.encode(torch.tensor([27, 99]), torch.tensor([85, 1]), example.PLUS)
    # 27 + 85 = 112 and 99 + 1 = 100, digits least-significant first
    assert tokens.tolist() == [[2, 7, 10, 8, 5, 12, 2, 1, 1], [9, 9, 10, 0, 1, 12, 0, 0, 1]]
    train, test = example.pairs(example.MINUS, 0)
    assert bool((train[:, 0] >= train[:, 1]).all()) and test.shape[0] == 5050 // 10
    seen = {tuple(p) for p in train.tolist()}
    assert not any(tuple(p) in seen for p in test.tolist())
    a = example.batch(train, lux.random.key(3), 5, example.MINUS)
    assert torch.equal(a, example.batch(train, lux.random.key(3), 5, example.MINUS))
