"""The LSTM spiral example runs and learns (a short version, so the suite stays fast)."""

from __future__ import annotations

import pathlib

import pytest
from helpers import assert_png as _assert_png
from helpers import load_example as _load


def test_lstm_spirals_learns(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "spirals.png"
    accuracy = _load("lstm_spirals").main(epochs=2, out=str(png), progress=False)
    out = capsys.readouterr().out
    assert accuracy >= 0.9, accuracy
    assert "LSTMCell(2 => 32)" in out and "final test accuracy" in out
    _assert_png(png)


def test_spirals_are_reproducible_and_labelled_by_direction() -> None:
    example = _load("lstm_spirals")
    key = example.lux.random.key(3)
    x, y = example.make_spirals(key, 64)
    x2, y2 = example.make_spirals(key, 64)
    assert x.shape == (64, example.SEQ_LEN, 2) and y.shape == (64,)
    assert x.equal(x2) and y.equal(y2)
    assert 0 < int(y.sum()) < 64
    # The sign of the summed cross product of successive points is the turning direction
    # (positive: anticlockwise, label 1); the noise is small enough not to flip it.
    cross = x[:, :-1, 0] * x[:, 1:, 1] - x[:, :-1, 1] * x[:, 1:, 0]
    assert ((cross.sum(1) > 0).long() == y).all()
