"""The hypernetwork example (examples/hypernet.py) learns both tasks and writes its figure."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from typing import Any

import pytest
from helpers import assert_png

import lux_torch as lux

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "hypernet.py"


def _load(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("hypernet", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses (lux.Layer subclasses) resolve string annotations through sys.modules
    monkeypatch.setitem(sys.modules, "hypernet", module)
    spec.loader.exec_module(module)
    return module


def test_hypernet_learns_both_tasks_and_writes_png(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _load(monkeypatch)
    out = tmp_path / "hypernet.png"
    accuracies = module.main(steps=120, out=out, progress=False)
    assert min(accuracies) > 0.8, accuracies  # chance is 0.1 (0.96 / 0.97 after 400 steps)
    assert_png(out)
    # ps holds only the generator's tensors: the CNN's are generated, per task, each call
    model = module.make_model()
    ps, _ = lux.setup(0, model)
    assert set(ps) == {"weight_generator"}
    assert lux.param_count(model) == sum(p.numel() for p in lux.tree.leaves(ps))
