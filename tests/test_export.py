"""``lux.export``: inference export through ``torch.export``.

The exported program takes only the input (parameters and buffers are stored in it), runs
the model in test mode (running statistics, no dropout) and equals lux's test-mode output.
The issue's "must show": the saved program is loaded and run in a subprocess in which
lux_torch cannot be imported (isolated mode ``-I`` without ``site`` ``-S``, so no
``.pth`` file installs the editable-install finder, run from a temporary directory without
``PYTHONPATH``; only the directory that holds torch is put on ``sys.path``); the child
proves that ``import lux_torch`` fails and that no ``lux_torch`` module was loaded, and its
outputs are compared with lux's in the parent.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import torch
from helpers import randn

import lux_torch as lux
from lux_torch import tree as ltree


def _trained_state(model: lux.Layer, x: torch.Tensor) -> tuple[Any, Any]:
    """``(ps, st)`` after three training-mode calls: non-trivial running statistics."""
    ps, st = lux.setup(0, model)
    for _ in range(3):
        _, st = model(x, ps, st)
    return ps, st


def _mlp() -> lux.Chain:
    return lux.Chain(
        lux.Linear(3, 8),
        lux.BatchNorm1d(8, activation=torch.tanh),
        lux.Dropout(0.5),
        lux.Linear(8, 2),
    )


def _convnet() -> lux.Chain:
    return lux.Chain(
        lux.Conv2d(2, 4, 3, padding=1),
        lux.BatchNorm2d(4, activation=torch.relu),
        lux.GlobalAvgPool(),
        lux.Flatten(),
        lux.Linear(4, 3),
    )


def test_export_runs_in_test_mode_with_only_the_input() -> None:
    model = _mlp()
    ps, st = _trained_state(model, randn(6, 3))
    snapshot = ltree.map(torch.clone, (ps, st))
    ep = lux.export(model, ps, st, randn(6, 3))
    assert isinstance(ep, torch.export.ExportedProgram)
    assert len(ep.graph_signature.user_inputs) == 1
    stored = ep.state_dict | ep.constants
    assert sorted(stored) == sorted(lux.state_dict(ps, st))
    x = randn(6, 3, seed=5)
    expected, _ = model(x, ps, lux.test_mode(st))
    torch.testing.assert_close(ep.module()(x), expected, rtol=1e-6, atol=1e-6)
    assert ltree.allclose((ps, st), snapshot, rtol=0, atol=0)  # nothing was modified
    # the program holds copies: changing ps afterwards does not change it
    with torch.no_grad():
        ps["layer_1"]["weight"].add_(1.0)
    torch.testing.assert_close(ep.module()(x), expected, rtol=1e-6, atol=1e-6)
    # the batch size is fixed unless made dynamic
    with pytest.raises((RuntimeError, AssertionError)):
        ep.module()(randn(5, 3))


def test_export_dynamic_batch() -> None:
    model = _mlp()
    ps, st = _trained_state(model, randn(6, 3))
    ep = lux.export(model, ps, st, randn(4, 3), dynamic_batch=True)
    for n in (2, 7, 33):
        x = randn(n, 3, seed=n)
        expected, _ = model(x, ps, lux.test_mode(st))
        torch.testing.assert_close(ep.module()(x), expected, rtol=1e-6, atol=1e-6)
    ep2 = lux.export(
        model, ps, st, randn(4, 3), dynamic_shapes=[{0: torch.export.Dim("n", max=16)}]
    )
    torch.testing.assert_close(ep2.module()(randn(9, 3)), ep.module()(randn(9, 3)))
    # torch.export keyword arguments pass through (Dynamo capture with strict=True)
    ep3 = lux.export(model, ps, st, randn(4, 3), strict=True)
    torch.testing.assert_close(ep3.module()(randn(4, 3)), ep.module()(randn(4, 3)))


def test_export_errors() -> None:
    model = _mlp()
    ps, st = lux.setup(0, model)
    with pytest.raises(TypeError, match="expected a lux_torch Layer, got Linear"):
        lux.export(torch.nn.Linear(3, 2), ps, st, randn(4, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="either dynamic_batch=True or dynamic_shapes"):
        lux.export(model, ps, st, randn(4, 3), dynamic_batch=True, dynamic_shapes=[None])
    with pytest.raises(ValueError, match=r"missing keys: layer_4\.bias"):
        lux.export(model, {**ps, "layer_4": {"weight": ps["layer_4"]["weight"]}}, st, randn(4, 3))


_CHILD = r"""
import importlib.util
import os
import sys

site_dir, out, *names = sys.argv[1:]
sys.path.append(site_dir)
# lux_torch must not be importable: no finder, no path entry
assert importlib.util.find_spec("lux_torch") is None, "lux_torch has an import spec"
try:
    import lux_torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("lux_torch could be imported in the child")
assert not any(os.path.isdir(os.path.join(p or ".", "lux_torch")) for p in sys.path)

import torch

results = {}
for name in names:
    program = torch.export.load(f"{name}.pt2")
    x = torch.load(f"{name}.x.pt", weights_only=True)
    results[name] = program.module()(x)
assert not [m for m in sys.modules if m.split(".")[0] == "lux_torch"]
torch.save(results, out)
print("child ran", sorted(results))
"""


def test_saved_program_runs_without_lux_torch(tmp_path: pathlib.Path) -> None:
    """Must show: the exported program loads and runs where lux_torch is not importable."""
    cases = {
        "mlp": (_mlp(), randn(6, 3), randn(5, 3, seed=3), True),
        "conv": (_convnet(), randn(3, 2, 5, 5), randn(3, 2, 5, 5, seed=3), False),
    }
    expected = {}
    for name, (model, example, x, dynamic) in cases.items():
        ps, st = _trained_state(model, example)
        ep = lux.export(model, ps, st, example, dynamic_batch=dynamic)
        torch.export.save(ep, tmp_path / f"{name}.pt2")
        torch.save(x, tmp_path / f"{name}.x.pt")
        expected[name] = model(x, ps, lux.test_mode(st))[0]

    site_dir = str(pathlib.Path(torch.__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "out.pt"
    child = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _CHILD, site_dir, str(out), *cases],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert "child ran ['conv', 'mlp']" in child.stdout
    results = torch.load(out, weights_only=True)
    for name, y in expected.items():
        torch.testing.assert_close(results[name], y, rtol=1e-6, atol=1e-6)


def test_child_check_detects_an_importable_lux_torch(tmp_path: pathlib.Path) -> None:
    """The child's check is real: with the repository on its path it refuses to run."""
    repo = str(pathlib.Path(lux.__file__).resolve().parent.parent)
    child = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _CHILD, repo, str(tmp_path / "out.pt")],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode != 0
    assert "lux_torch has an import spec" in child.stderr
