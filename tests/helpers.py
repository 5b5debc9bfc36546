"""Shared test helpers (importable from test modules: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import importlib.util
import pathlib
import types
from types import ModuleType
from typing import Any

import pytest
import torch

import lux_torch as lux
from lux_torch import random as lrandom
from lux_torch.core import Layer, setup
from lux_torch.testing import check_layer

DTYPES = [torch.float32, torch.float64]


def bn_mlp(dropout: float) -> lux.Chain:
    """A small model with parameters, running statistics and a random key:
    ``Linear(3 => 8, tanh)``, ``BatchNorm1d(8)``, ``Dropout(dropout)``, ``Linear(8 => 2)``."""
    return lux.Chain(
        lux.Linear(3, 8, activation=torch.tanh),
        lux.BatchNorm1d(8),
        lux.Dropout(dropout),
        lux.Linear(8, 2),
    )


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    """Standard normal input drawn from an explicit key (never torch's global RNG)."""
    return lrandom.normal(lrandom.key(seed), shape, dtype=dtype)


def check(layer: Layer, x: Any, dtype: torch.dtype, **kw: Any) -> dict[str, str]:
    """check_layer with ps/st created in ``dtype``.

    Compilation is checked in float32 only: graph capture does not depend on the dtype, and
    inductor compiles C++ per graph (seconds each on CI's 2 cores), so float64 runs cover
    parity, gradcheck, purity, determinism and vmap while float32 runs add compile.
    """
    ps, st = setup(0, layer, dtype=dtype)
    kw.setdefault("compile", dtype == torch.float32)
    return check_layer(layer, x, ps=ps, st=st, **kw)


EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_stateless_passed(report: dict[str, str], dtype: torch.dtype) -> None:
    """The harness's checks of a layer without parameters or state passed (compile only in
    float32, as :func:`check` runs it)."""
    for name in ("parity", "gradcheck", "purity", "determinism", "counts", "repr"):
        assert report[name] == "passed", name
    assert report["compile"] == ("passed" if dtype == torch.float32 else "skipped: disabled")


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module (its ``main`` runs short versions in tests)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_png(path: pathlib.Path) -> None:
    """``path`` is a PNG larger than 100x100 with real content (not a blank canvas)."""
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, data[:8]
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 100 and height > 100, (width, height)
    assert len(data) > 10_000


def assert_example_classifies(
    name: str,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    *,
    epochs: int,
    accuracy: float,
    shows: tuple[str, ...],
) -> None:
    """The classifier example ``name``, trained for ``epochs`` epochs, reaches ``accuracy`` on
    its test set, prints every text in ``shows`` and draws a PNG."""
    png = tmp_path / f"{name}.png"
    reached = load_example(name).main(epochs=epochs, out=str(png), progress=False)
    out = capsys.readouterr().out
    assert reached >= accuracy, reached
    for text in shows:
        assert text in out, text
    assert_png(png)


def fresh_call(layer: Layer) -> Any:
    """``layer``'s call as a function with its own code object, to compile in a test.

    Dynamo keeps its cache and recompile limit (8) per code object, and every instance of
    a layer class shares its ``__call__``'s: tests that compile many instances in one
    pytest-xdist worker would otherwise exhaust the limit.
    """
    fn = type(layer).__call__
    code = fn.__code__.replace()
    fresh = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return types.MethodType(fresh, layer)


def layer_case_id(case: tuple[Any, ...]) -> str:
    """``Conv2d(3,4,3)[stride=2]x(2,3,8,8)``: the test id of a ``(name, args, kw, shape,
    backend)`` conformance case."""
    name, args, kw, shape, _ = case
    options = ",".join(f"{k}={v}" for k, v in kw.items())
    return f"{name}{args}[{options}]x{shape}".replace(" ", "")


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: ``max |F_a(x) - F_b(x)|`` over all x (the
    largest distance between the two empirical CDFs)."""
    a, b = a.flatten().double().sort().values, b.flatten().double().sort().values
    at = torch.cat([a, b])  # the sup is attained at a sample point
    f_a = torch.searchsorted(a, at, right=True) / a.numel()
    f_b = torch.searchsorted(b, at, right=True) / b.numel()
    return float((f_a - f_b).abs().max())


def assert_updates_are_pure(
    opt: Any, ps: Any, grads_at: Any, steps: int, *, new_state: bool = False
) -> None:
    """Run ``steps`` updates of the optimizer ``opt`` from ``ps`` (gradients
    ``grads_at(ps, i)``) and assert that no input (``ps``, grads, state) changes in value
    or version; with ``new_state``, also that every update returns a new state object."""
    state = opt.init(ps)
    for i in range(steps):
        grads = grads_at(ps, i)
        inputs = lux.tree.leaves((ps, grads, state))
        snapshot = [t.clone() for t in inputs]
        versions = [t._version for t in inputs]
        updates, after = opt.update(grads, state, ps)
        new_ps = lux.optim.apply_updates(ps, updates)
        for before, now in zip(snapshot, inputs, strict=True):
            assert torch.equal(before, now)
        assert versions == [t._version for t in inputs]
        assert not new_state or after is not state
        ps, state = new_ps, after
