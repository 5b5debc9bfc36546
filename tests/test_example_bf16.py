"""examples/bf16_autocast.py runs and learns with bfloat16 compute and float32 parameters."""

from __future__ import annotations

import pathlib

import pytest
from helpers import assert_png, load_example


def test_bf16_autocast_example_learns(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "bf16_autocast.png"
    final = load_example("bf16_autocast").main(steps=60, out=str(png), progress=False)
    out = capsys.readouterr().out
    assert "forward output torch.bfloat16, gradients torch.float32, parameters torch.float32" in out
    first = float(out.split("step    1   loss ")[1].split()[0])
    assert final < first / 5, (first, final)
    assert "bfloat16 parameters (torch.bfloat16)" in out
    assert "float64 parameters (torch.float64)" in out
    assert_png(png)
