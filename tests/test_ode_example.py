"""The neural ODE example (examples/neural_ode_spiral.py) learns and writes its figure."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "neural_ode_spiral.py"


def _load():
    spec = importlib.util.spec_from_file_location("neural_ode_spiral", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spiral_example_learns_and_writes_png(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "spiral.png"
    final = _load().main(iters=100, out=out, progress=False)
    text = capsys.readouterr().out
    before = float(re.search(r"total loss before training ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    assert f"final total loss {final:.4f}" in text
    assert final < 0.8 * before, (before, final)  # 0.91 -> 0.57 with the default seed
    assert "NeuralODE(" in text and "252 parameters" in text
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 300, (width, height)
    assert len(data) > 30_000  # three panels with curves, not a blank canvas
