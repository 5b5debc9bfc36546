"""Data-parallel training on ``torch.distributed`` (to be implemented)."""

from __future__ import annotations

__all__: list[str] = []
