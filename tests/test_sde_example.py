"""The neural SDE example (examples/neural_sde.py) learns and writes its figure."""

from __future__ import annotations

import pathlib
import re

import pytest
from helpers import assert_png, load_example


def test_neural_sde_example_learns_and_writes_png(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "neural_sde.png"
    final = load_example("neural_sde").main(iters=40, out=out, progress=False)
    text = capsys.readouterr().out
    before = float(re.search(r"moment loss before training ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    assert f"final moment loss {final:.4f}" in text
    assert final < 0.1 * before, (before, final)  # 0.158 -> 0.0008 with the default seed
    assert "NeuralSDE(" in text and "98 parameters" in text
    assert_png(out)
    assert out.stat().st_size > 30_000  # three panels with curves, not a blank canvas
