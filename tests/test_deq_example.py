"""examples/deq_digits.py: the DEQ learns the digits about as well as the explicit CNN of
the same size (a shortened run) and writes its figure."""

from __future__ import annotations

import pathlib

import pytest
from helpers import assert_png as _assert_png
from helpers import load_example as _load


@pytest.mark.slow  # about 30 s on 2 CPU threads
def test_deq_digits_learns_like_the_explicit_cnn(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "deq.png"
    deq_acc, cnn_acc = _load("deq_digits").main(epochs=4, out=str(png), progress=False)
    out = capsys.readouterr().out
    # full run (12 epochs): DEQ 0.978 >= CNN 0.975; after 4 epochs both are about 0.96
    assert deq_acc >= 0.93 and deq_acc >= cnn_acc - 0.02, (deq_acc, cnn_acc)
    assert "deq = DEQ(" in out and "'anderson'" in out and "5,050 parameters" in out
    assert "residual after 10/30 anderson iterations" in out
    _assert_png(png)
