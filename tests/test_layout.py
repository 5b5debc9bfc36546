"""The layout moved modules into subpackages; the old public paths must keep working."""

from __future__ import annotations

import importlib
import pathlib
import pickle

import pytest

import lux_torch as lux

MOVED = {
    "lux_torch.ode": "lux_torch.sciml.ode",
    "lux_torch.checkpoint": "lux_torch.interop.checkpoint",
    "lux_torch.deploy": "lux_torch.interop.export",
    "lux_torch.precision": "lux_torch.interop.precision",
}


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_old_module_path_is_the_new_module(old: str, new: str) -> None:
    # The same object (not a copy): monkeypatching an internal through the old path
    # reaches the code, and a class has one identity whichever path imported it.
    assert importlib.import_module(old) is importlib.import_module(new)
    assert getattr(lux, old.rsplit(".", 1)[1]) is importlib.import_module(new)


@pytest.mark.parametrize(
    ("old_path", "obj"),
    [
        ("lux_torch.ode\nNeuralODE", lux.NeuralODE),
        ("lux_torch.checkpoint\nsave", lux.save),
        ("lux_torch.precision\nbf16", lux.bf16),
        ("lux_torch.deploy\nexport", lux.export),
        ("lux_torch.interop\nTorchModule", lux.TorchModule),
        ("lux_torch.interop\nLuxModule", lux.LuxModule),
    ],
)
def test_pickles_naming_the_old_paths_still_load(old_path: str, obj: object) -> None:
    # A protocol-0 GLOBAL opcode, as a pickle written before the move names it.
    assert pickle.loads(f"c{old_path}\n.".encode()) is obj


def test_public_names_reach_their_new_homes() -> None:
    from lux_torch.interop import torch_nn
    from lux_torch.sciml import ode

    assert lux.NeuralODE.__module__ == ode.__name__
    assert lux.from_torch is torch_nn.from_torch
    assert {"interop", "sciml", "checkpoint", "deploy", "precision"} <= set(lux.__all__)


PACKAGE = pathlib.Path(lux.__file__).parent


def _private_imports(source: str) -> list[str]:
    """Names with one leading underscore that ``source`` imports from a lux_torch module."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level or "lux_torch" in (node.module or "")):
            found += [
                f"line {node.lineno}: {a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    # ARCHITECTURE.md: a helper two modules share gets a package-internal public name in one
    # shared module (layers/_common.py, optim/_base.py, ...), never a borrowed private one.
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if (found := _private_imports(path.read_text()))
    }
    assert offenders == {}


def test_the_private_import_rule_sees_both_spellings() -> None:
    assert _private_imports("from ._base import (\n    Kit,\n    _hoist,\n)") == ["line 1: _hoist"]
    assert _private_imports("from lux_torch.core import _signature") == ["line 1: _signature"]
    assert _private_imports("from . import _paths\nfrom torch import _VF") == ["line 1: _paths"]
