"""What the solver-wrapping families of :mod:`lux_torch.sciml` share: importing their
optional solver library on first use, and keeping a solve out of ``torch.compile``'s graphs."""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch

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
