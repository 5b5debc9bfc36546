"""Checks shared by the tree-level optimizers of :mod:`lux_torch.optim` (``factored``,
``muon``, ``schedule_free``, ``sophia``, ``lbfgs``), with ``_base``'s hyperparameter
checks, so that they import all their checks from here."""

from __future__ import annotations

from typing import Any

import torch

from ..tree import flatten
from ._base import Tree, check_beta, check_lr, check_nonneg, check_shapes, flatten_checked

__all__ = [
    "check_beta",
    "check_int",
    "check_lr",
    "check_nonneg",
    "check_positive",
    "checked_leaves",
]


def checked_leaves(
    tree: Tree, like: Tree, what: str = "grads"
) -> tuple[list[torch.Tensor], list[torch.Tensor], Any]:
    """``(leaves of tree, leaves of like, spec)`` after checking that ``tree`` has the
    structure of ``like`` and every leaf its shape (a mis-shaped gradient would broadcast)."""
    leaves, spec = flatten_checked(tree, like, what)
    ref = flatten(like)[0]
    check_shapes(what, leaves, ref, spec)
    return leaves, ref, spec


def check_positive(name: str, value: float, fn: str) -> None:
    if not value > 0.0:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be > 0, got {value}")


def check_int(name: str, value: int, fn: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be an int >= {minimum}, got {value!r}")
