"""Precision conversion of trees: ``f16``, ``bf16``, ``f32``, ``f64`` (to be implemented)."""

from __future__ import annotations

from typing import Any

__all__ = ["bf16", "f16", "f32", "f64"]


def bf16(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("bf16: not implemented yet")


def f16(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("f16: not implemented yet")


def f32(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("f32: not implemented yet")


def f64(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("f64: not implemented yet")
