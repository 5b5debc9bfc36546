"""Parameter manipulation: freeze, share_parameters, layer_map, debug (to be implemented)."""

from __future__ import annotations

from typing import Any

__all__ = ["debug", "freeze", "layer_map", "share_parameters", "unfreeze"]


def debug(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("debug: not implemented yet")


def freeze(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("freeze: not implemented yet")


def layer_map(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("layer_map: not implemented yet")


def share_parameters(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("share_parameters: not implemented yet")


def unfreeze(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("unfreeze: not implemented yet")
