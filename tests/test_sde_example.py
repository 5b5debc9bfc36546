"""The neural SDE example (examples/neural_sde.py) learns and writes its figure."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "neural_sde.py"


def _load():
    spec = importlib.util.spec_from_file_location("neural_sde_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_neural_sde_example_learns_and_writes_png(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "neural_sde.png"
    final = _load().main(iters=40, out=out, progress=False)
    text = capsys.readouterr().out
    before = float(re.search(r"moment loss before training ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    assert f"final moment loss {final:.4f}" in text
    assert final < 0.1 * before, (before, final)  # 0.158 -> 0.0008 with the default seed
    assert "NeuralSDE(" in text and "98 parameters" in text
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 300, (width, height)
    assert len(data) > 30_000  # three panels with curves, not a blank canvas
