"""What the solver-wrapping families of :mod:`lux_torch.sciml` share: importing their
optional solver library on first use, keeping a solve out of ``torch.compile``'s graphs,
and reading the call options that follow the input."""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import torch

from ..display import short_repr
from ..layers._common import options_problem

_F = TypeVar("_F", bound=Callable[..., Any])


def import_extra(module: str, extra: str, owner: str) -> types.ModuleType:
    """``import module``, or an ``ImportError`` naming the optional extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{owner} needs {module}, the optional extra {extra!r}: "
            f"pip install lux-torch[{extra}]  (or: pip install {module})"
        ) from err


def never_compiled(reason: str) -> Callable[[_F], _F]:
    """``torch.compiler.disable(fn, reason=reason)`` as a decorator that keeps ``fn``'s
    signature for type checkers (torch leaves ``disable`` unannotated)."""

    def decorate(fn: _F) -> _F:
        return cast(_F, torch.compiler.disable(fn, reason=reason))

    return decorate


def split_options(
    layer: Any, x: Any, accepted: tuple[str, ...], what: str = "the input"
) -> tuple[Any, dict[str, Any]]:
    """``x`` or ``(x, {...})`` (DESIGN's call options): the input and its checked options.

    The dict must end the tuple and hold only ``accepted`` names; the items before it are
    the input (one item: itself; more: a tuple of them).
    """
    if not (isinstance(x, (tuple, list)) and x and isinstance(x[-1], Mapping)):
        return x, {}
    options = dict(x[-1])
    problem = options_problem(options, accepted, ())
    if problem is not None:
        raise ValueError(f"{short_repr(layer)}: {problem}")
    items = tuple(x[:-1])
    if not items:
        raise TypeError(f"{short_repr(layer)}: the options dict must follow {what}")
    return (items[0] if len(items) == 1 else items), options
