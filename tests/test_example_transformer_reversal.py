"""The transformer reversal example runs and learns (a short version, so the suite stays fast)."""

from __future__ import annotations

import pathlib

import pytest
from helpers import assert_png as _assert_png
from helpers import load_example as _load


def test_transformer_reversal_learns(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "reversal.png"
    accuracy = _load("transformer_reversal").main(
        steps=300, out=str(png), progress=False, n_test=500
    )
    out = capsys.readouterr().out
    assert accuracy >= 0.9, accuracy
    assert "TransformerEncoderLayer" in out and "SinusoidalPositionalEmbedding" in out
    assert "final test token accuracy" in out and "whole-sequence accuracy" in out
    _assert_png(png)


def test_transformer_reversal_data_is_reversed() -> None:
    example = _load("transformer_reversal")
    import lux_torch as lux

    x, y = example.make_data(lux.random.key(1), 4)
    assert x.shape == (4, example.SEQ_LEN) and x.dtype.is_floating_point is False
    assert int(x.min()) >= 0 and int(x.max()) < example.VOCAB
    assert (y == x.flip(1)).all()
    x2, _ = example.make_data(lux.random.key(1), 4)
    assert (x == x2).all()  # explicit keys: reproducible
