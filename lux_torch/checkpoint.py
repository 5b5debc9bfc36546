"""Checkpoints: ``save(path, tree)`` / ``load(path)`` (to be implemented)."""

from __future__ import annotations

from typing import Any

__all__ = ["load", "save"]


def save(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("save: not implemented yet")


def load(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("load: not implemented yet")
