"""Export for inference through ``torch.export`` (to be implemented)."""

from __future__ import annotations

from typing import Any

__all__ = ["export"]


def export(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("export: not implemented yet")
