"""The LSTM spiral example runs and learns (a short version, so the suite stays fast)."""

from __future__ import annotations

import pathlib

import pytest
from helpers import assert_example_classifies
from helpers import load_example as _load


def test_lstm_spirals_learns(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    shows = ("LSTMCell(2 => 32)", "final test accuracy")
    assert_example_classifies("lstm_spirals", tmp_path, capsys, epochs=2, accuracy=0.9, shows=shows)


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
