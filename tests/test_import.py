"""``import lux_torch`` stays light: heavy modules load at first use (PEP 562), every public
name still resolves to its module's object, and ``dir``/``__all__``/type checkers see them all.

Behaviour, not timing (``benchmarks/import_time.py`` measures the time): a fresh process
reports which modules an import brought in.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch

import lux_torch as lux
from lux_torch._graph import assume_constant_result

ROOT = pathlib.Path(lux.__file__).parent
# What import lux_torch must not bring in: Dynamo and Inductor (seconds), the optional
# solver and file-format libraries, and lux's own heavier modules.
HEAVY = (
    "torch._dynamo",
    "torch._inductor",
    "sympy",
    "torchdiffeq",
    "torchsde",
    "safetensors",
    "tabulate",
    "lux_torch.layers",
    "lux_torch.training",
    "lux_torch.distributed",
    "lux_torch.sciml",
    "lux_torch.interop",
    "lux_torch.experimental.debugging",
)


def _fresh(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter after ``import torch``: the modules it added
    (``new``) and the value it left in ``out`` (``out``, through json)."""
    script = "\n".join(
        [
            "import json, sys",
            "import torch",
            "before = set(sys.modules)",
            "out = None",
            textwrap.dedent(code),
            'print(json.dumps({"new": sorted(set(sys.modules) - before), "out": out}))',
        ]
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _heavy(new: list[str]) -> list[str]:
    return [m for m in new if any(m == h or m.startswith(h + ".") for h in HEAVY)]


@pytest.mark.slow
def test_import_lux_torch_adds_only_its_core_and_optree() -> None:
    new = _fresh("import lux_torch")["new"]
    assert _heavy(new) == []
    # beyond lux_torch's own core modules, only optree (a runtime dependency it needs)
    assert [m for m in new if not m.startswith(("lux_torch", "optree"))] == []
    assert "lux_torch.core" in new  # the test sees imports at all


@pytest.mark.slow
def test_first_use_of_layers_and_an_eager_train_step_does_not_import_dynamo() -> None:
    code = """
    import lux_torch as lux
    model = lux.Chain(lux.Linear(2, 8, activation=torch.tanh), lux.Dropout(0.1), lux.Linear(8, 1))
    ps, st = lux.setup(0, model)
    ts = lux.TrainState(model, ps, st, lux.optim.adam(1e-3))
    data = (torch.randn(4, 2), torch.randn(4, 1))
    ts, loss, _ = lux.train_step(lux.losses.MSELoss(), data, ts)
    out = [ts.step]
    """
    result = _fresh(code)
    assert result["out"] == [1]
    assert "lux_torch.layers" in result["new"] and "lux_torch.training" in result["new"]
    assert [m for m in result["new"] if m.startswith(("torch._dynamo", "torch._inductor"))] == []


@pytest.mark.slow
def test_a_debug_model_loads_on_first_access() -> None:
    result = _fresh("import lux_torch as lux\nout = [lux.debug.__module__]")
    assert result["out"] == ["lux_torch.experimental.debugging"]
    assert "lux_torch.experimental.debugging" in result["new"]


def _type_checking_imports(path: pathlib.Path) -> dict[str, str]:
    """``{name: module}`` of the ``from .module import name`` statements of ``path``'s
    ``if TYPE_CHECKING:`` block (``from . import sub``: ``{sub: ""}``)."""
    found: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.level == 1
                found.update({a.name: stmt.module or "" for a in stmt.names})
    return found


@pytest.mark.parametrize("package", ["lux_torch", "lux_torch.experimental"])
def test_every_public_name_is_its_modules_object(package: str) -> None:
    module = importlib.import_module(package)
    path = pathlib.Path(module.__file__ or "")
    typed = _type_checking_imports(path)
    assert typed, "the type checkers' imports are missing"
    for name, home in typed.items():
        if home:  # a name: the object of the module the type checkers are told
            expected = getattr(importlib.import_module(f"{package}.{home}"), name)
        else:  # a submodule (an alias module resolves to the module holding the code)
            expected = importlib.import_module(f"{package}.{name}")
        assert getattr(module, name) is expected, name
    assert set(module.__all__) <= set(dir(module))
    # every public name is either imported eagerly or known to the type checkers
    eager = {n for n in module.__all__ if n in vars(module)}
    assert set(module.__all__) - eager <= set(typed)


def test_star_import_gives_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from lux_torch import *", namespace)
    assert set(lux.__all__) <= set(namespace)
    assert namespace["Linear"] is importlib.import_module("lux_torch.layers").Linear


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'lux_torch' has no attribute 'Linearr'"):
        lux.Linearr  # noqa: B018
    with pytest.raises(AttributeError, match=r"'lux_torch\.experimental' has no attribute 'dbug'"):
        lux.experimental.dbug  # noqa: B018
    assert not hasattr(lux, "Linearr")


def test_assume_constant_result_marks_like_torch() -> None:
    # lux sets the marker itself (torch's decorator imports torch._dynamo): both must
    # leave the same attributes on the function
    def ours() -> int:
        return 0

    def theirs() -> int:
        return 0

    assert assume_constant_result(ours) is ours
    torch.compiler.assume_constant_result(theirs)
    assert vars(ours) == vars(theirs) != {}


@pytest.mark.slow
def test_a_first_access_inside_a_compiled_function_imports_there() -> None:
    code = """
    import lux_torch as lux

    @torch.compile(fullgraph=True, backend="eager")
    def f(x):
        return lux.f64({"a": x})["a"] * 2  # lux.f64: not imported before this trace

    y = f(torch.ones(3))
    out = [str(y.dtype), y.tolist()]
    """
    result = _fresh(code)
    assert result["out"] == ["torch.float64", [2.0, 2.0, 2.0]]
    assert "lux_torch.interop.precision" in result["new"]
