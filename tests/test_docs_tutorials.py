"""The tutorials under docs/tutorials/ execute: each jupytext "percent" script, converted to a
notebook and run cell by cell in a Jupyter kernel, finishes without an error and writes nothing
to stderr (a warning would show on the published page).

``mkdocs build`` executes them too (mkdocs-jupyter); this test runs them in parallel across
pytest-xdist workers, one test per file, so a failing tutorial is named on its own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbconvert.preprocessors import ExecutePreprocessor

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
CELL_TIMEOUT_S = 600  # per cell; the tutorials take well under a minute each on 2 cores


def _tutorials() -> list[Path]:
    return sorted(TUTORIALS.glob("[0-9]*.py"))


def _stderr(nb: nbformat.NotebookNode) -> list[str]:
    """The stderr text of every code cell, prefixed with the cell's first line."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                first = cell.source.splitlines()[0] if cell.source else ""
                found.append(f"cell {first!r}: {out['text']}")
    return found


def execute(path: Path) -> nbformat.NotebookNode:
    """``path`` as a notebook, executed in a python3 kernel started in its folder."""
    nb: nbformat.NotebookNode = jupytext.read(path)
    ExecutePreprocessor(timeout=CELL_TIMEOUT_S, kernel_name="python3").preprocess(
        nb, {"metadata": {"path": str(path.parent)}}
    )
    return nb


def test_the_tutorial_folder_holds_the_general_tutorials() -> None:
    names = {p.name for p in _tutorials()}
    expected = {
        "01_quickstart.py",
        "02_train_mlp.py",
        "03_ensembles_per_sample_grads.py",
        "04_cnn_batchnorm.py",
        "05_lstm.py",
        "06_transformer.py",
        "07_interop_checkpoints.py",
        "08_custom_layers.py",
        "09_language_model_lora.py",
    }
    assert expected <= names, sorted(expected - names)


def test_stderr_output_is_reported(tmp_path: Path) -> None:
    """The check below sees a warning printed by a cell (and the cell's error fails it)."""
    script = tmp_path / "00_probe.py"
    script.write_text(
        '# %%\nimport sys\nprint("fine")\nprint("UserWarning: shown", file=sys.stderr)\n'
        "# %%\nraise RuntimeError('a failing cell')\n"
    )
    nb = jupytext.read(script)
    nb.cells = nb.cells[:1]
    ExecutePreprocessor(timeout=60, kernel_name="python3").preprocess(
        nb, {"metadata": {"path": str(tmp_path)}}
    )
    assert _stderr(nb) == ["cell 'import sys': UserWarning: shown\n"]
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="a failing cell"):
        execute(script)


@pytest.mark.slow
@pytest.mark.parametrize("path", _tutorials(), ids=lambda p: p.name)
def test_tutorial_executes(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel is a child process: give it this worker's share of the cores (conftest sets
    # torch's threads for the worker itself), so parallel workers do not oversubscribe.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    monkeypatch.setenv("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    start = time.perf_counter()
    nb = execute(path)
    elapsed = time.perf_counter() - start
    print(f"{path.name}: executed in {elapsed:.1f} s")
    assert not _stderr(nb), "\n".join(_stderr(nb))
    assert any(cell.get("outputs") for cell in nb.cells), f"{path.name} printed nothing"
