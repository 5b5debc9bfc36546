"""The CNF and latent ODE examples (examples/cnf.py, latent_ode.py) learn and plot."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name: str, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses (lux.Layer subclasses) resolve string annotations through sys.modules
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def _check_png(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 300, (width, height)
    assert len(data) > 10_000  # panels with content, not a blank canvas


def test_cnf_example_learns_and_writes_png(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cnf.png"
    final = _load("cnf", monkeypatch).main(iters=100, out=out, progress=False)
    text = capsys.readouterr().out
    before = float(re.search(r"mean NLL before training ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    assert f"final mean NLL {final:.4f}" in text
    assert final < before - 0.1, (before, final)  # 3.09 -> 2.61 with the default seed
    assert "CNF(" in text and "NeuralODE(" in text and "CNFField(" in text
    # the density is evaluated by a finer solve than training's: it must stay normalised
    mass = float(re.search(r"mass of the learned density on .*?: ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    assert 0.9 < mass < 1.05, mass
    assert "mean NLL with the training solve (rk4 step 0.1)" in text
    _check_png(out)


def test_latent_ode_example_learns_and_writes_png(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "latent_ode.png"
    final = _load("latent_ode", monkeypatch).main(iters=100, out=out, progress=False)
    text = capsys.readouterr().out
    before = float(re.search(r"loss before training ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    assert f"final loss {final:.4f}" in text
    assert final < 0.25 * before, (before, final)  # 8747 -> 1001 with the default seed
    assert "LatentODE(" in text and "RecognitionRNN(" in text
    _check_png(out)
