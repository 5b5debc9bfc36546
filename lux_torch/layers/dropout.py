"""Dropout layers: randomness comes only from the key in ``st``, which each call advances."""

from __future__ import annotations

from typing import Any

import torch

from .. import random as lrandom
from ..core import Layer
from ..tree import Static

__all__ = ["Dropout"]

State = dict[str, Any]


class Dropout(Layer):
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    ``torch.nn.Dropout`` semantics, made pure: the mask is a function of ``st["key"]``
    (counter-based bits from :func:`lux_torch.random.dropout`), and every training-mode call
    returns the advanced key, so the same ``(x, ps, st)`` always gives the same output while
    successive calls draw fresh masks. Under ``torch.func.vmap`` over stacked states every
    ensemble member uses its own key, hence its own mask. In test mode
    (:func:`lux_torch.test_mode`) the layer is the identity.

    As in :func:`lux_torch.random.dropout`, ``p`` is quantised to a multiple of ``2**-16``
    and survivors are scaled by the inverse of the quantised keep probability (within
    ``1e-4`` relative of torch's ``1 / (1 - p)``), so the output mean is exactly unbiased.

    Arguments:
        p: drop probability, ``0 <= p <= 1``. ``p = 0`` is the identity; ``p = 1`` outputs
            zeros (``x * 0``, as torch) in training mode.

    Input:
        ``x``: a tensor of any shape.

    Returns:
        ``y`` of the same shape and the new state (the key advanced in training mode when
        ``0 < p < 1``; otherwise the state is returned unchanged).

    **Parameters**
        None (``{}``).

    **States**
        - ``key``: ``(2,)`` int64, the random key (see :mod:`lux_torch.random`).
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = Dropout(0.1)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.ones(4, 8), ps, st)  # doctest: +SKIP
    """

    p: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)):
            raise TypeError(f"Dropout: p must be a float, got {type(self.p).__name__}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {self.p}")
        self._set_fields(p=float(self.p))

    def init_state(self, key: torch.Tensor) -> State:
        return {"key": key.clone(), "training": Static(True)}

    def __call__(self, x: torch.Tensor, ps: dict, st: State) -> tuple[torch.Tensor, State]:
        if not st["training"] or self.p == 0.0:
            return x, st
        if self.p == 1.0:
            return x * 0.0, st
        new_key, use_key = lrandom.split(st["key"])
        return lrandom.dropout(use_key, x, self.p), {"key": new_key, "training": st["training"]}

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def describe_input_error(self, x: Any) -> str | None:
        if isinstance(x, torch.Tensor):
            return None
        return f"expected a Tensor, got {type(x).__name__}"
