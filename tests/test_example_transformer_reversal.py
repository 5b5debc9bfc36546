"""The transformer reversal example runs and learns (a short version, so the suite stays fast)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_png(path: pathlib.Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, data[:8]
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 100 and height > 100, (width, height)
    assert len(data) > 10_000  # two panels with curves, not a blank canvas


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
