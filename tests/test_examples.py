"""The examples run and learn (short versions, so the suite stays fast)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_learns(capsys: pytest.CaptureFixture[str]) -> None:
    final = _load("quickstart").main(steps=400)
    out = capsys.readouterr().out
    first = float(out.split("step     1   loss ")[1].split()[0])
    assert final < first / 10, (first, final)
    assert "# Total:" in out and "output shape" in out
