"""Rules of the test suite itself, enforced by tests/conftest.py: only "needs CUDA" skips.

Runs pytest in a subprocess on a scratch folder that holds a copy of our conftest.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

CONFTEST = pathlib.Path(__file__).with_name("conftest.py")

SKIPS = """
import pytest

def test_missing_dependency():
    pytest.importorskip("lux_torch_no_such_module")

@pytest.mark.skip(reason="slow")
def test_skipped_for_another_reason():
    pass

@pytest.mark.skipif(True, reason="needs CUDA")
def test_needs_cuda():
    pass

def test_runs():
    pass
"""

MODULE_LEVEL = """
import pytest

pytest.importorskip("lux_torch_no_such_module")

def test_hidden():
    pass
"""


def _pytest(folder: pathlib.Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-rA",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--continue-on-collection-errors",
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout + result.stderr


def test_only_cuda_skips_are_allowed(tmp_path: pathlib.Path) -> None:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(SKIPS)
    (tmp_path / "test_module.py").write_text(MODULE_LEVEL)
    out = _pytest(tmp_path)
    summary = out[out.index("short test summary info") :]
    assert "PASSED test_skips.py::test_runs" in summary
    assert "SKIPPED [1] test_skips.py:" in summary and "needs CUDA" in summary
    assert "FAILED test_skips.py::test_missing_dependency" in summary
    assert "ERROR test_skips.py::test_skipped_for_another_reason" in summary
    assert "ERROR test_module.py" in summary  # a module-level importorskip fails collection
    assert "test_hidden" not in summary
    assert "could not import 'lux_torch_no_such_module'" in out
    assert out.count("the only allowed skip is a test that needs CUDA") >= 3


def test_mypy_relaxes_annotations_for_every_test_module() -> None:
    """pyproject.toml's [[tool.mypy.overrides]] for the suite names each module in tests/ (mypy
    sees them as top-level modules, and its module patterns have no "test_*" glob)."""
    text = CONFTEST.parent.with_name("pyproject.toml").read_text()
    section = text[text.index("[[tool.mypy.overrides]]") :]
    start = section.index("module = [")
    listed = section[start : section.index("]", start)]
    names = set(re.findall(r'"([^"]+)"', listed))
    assert names == {p.stem for p in CONFTEST.parent.glob("*.py")}
