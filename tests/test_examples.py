"""The examples run and learn (short versions, so the suite stays fast)."""

from __future__ import annotations

import pathlib

import pytest
from helpers import assert_example_classifies
from helpers import assert_png as _assert_png
from helpers import load_example as _load


def _initial_test_loss(out: str) -> float:
    return float(out.split("initial test loss ")[1].split()[0])


def test_quickstart_learns(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "quickstart.png"
    final = _load("quickstart").main(steps=400, out=str(png), progress=False)
    out = capsys.readouterr().out
    first = float(out.split("step     1   loss ")[1].split()[0])
    assert final < first / 10, (first, final)
    assert "# Total:" in out and "output shape" in out
    _assert_png(png)


def test_mlp_regression_learns(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "regression.png"
    final = _load("mlp_regression").main(steps=300, out=str(png), progress=False)
    out = capsys.readouterr().out
    initial = _initial_test_loss(out)
    assert final < initial / 10, (initial, final)
    assert final < 0.05  # the noise floor is 0.01
    assert "Chain(" in out and "final test loss" in out
    _assert_png(png)


def test_mlp_regression_compiled_learns_like_eager(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = _load("mlp_regression")
    eager = example.main(steps=100, out=str(tmp_path / "eager.png"), progress=False)
    png = tmp_path / "compiled.png"
    compiled = example.main(steps=100, compile=True, out=str(png), progress=False)
    initial = _initial_test_loss(capsys.readouterr().out)
    assert compiled < initial / 5, (initial, compiled)
    assert compiled == pytest.approx(eager, rel=0.05)
    _assert_png(png)


def test_digits_classifier_learns(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shows = ("Dropout(p=0.2)", "final test accuracy")
    assert_example_classifies(
        "digits_classifier", tmp_path, capsys, epochs=4, accuracy=0.9, shows=shows
    )


def test_cnn_digits_reaches_95_percent(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shows = ("BatchNorm2d(16, relu)", "MaxPool2d", "wrong")
    assert_example_classifies("cnn_digits", tmp_path, capsys, epochs=5, accuracy=0.95, shows=shows)
