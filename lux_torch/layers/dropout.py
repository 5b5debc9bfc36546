"""Dropout layers: randomness comes only from the keys in ``st``.

``Dropout``, ``AlphaDropout`` and the channel-wise ``Dropout1d/2d/3d`` advance
``st["key"]`` at every training-mode call (a fresh mask each time);
``VariationalHiddenDropout`` keeps its mask, a function of ``st["mask_key"]``, until
:func:`resample_masks` gives it a new key.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, ClassVar

import torch

from .. import random as lrandom
from .. import tree as ltree
from .._graph import assume_constant_result
from ..core import Layer, Params, State
from ..tree import Static
from ._common import TORCH_INPLACE

__all__ = [
    "AlphaDropout",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "VariationalHiddenDropout",
    "resample_masks",
]


# SELU's negative saturation value, -scale * alpha (torch's alpha_dropout uses the same)
_ALPHA_PRIME = -1.7580993408473766


def _check_p(owner: str, p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{owner}: p must be a float, got {type(p).__name__}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: p must be in [0, 1], got {p}")
    return float(p)


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

    constructor_only = TORCH_INPLACE  # torch.nn's arguments, not stored

    p: float = 0.5

    def __post_init__(self) -> None:
        self._set_fields(p=_check_p(type(self).__name__, self.p))

    def init_state(self, key: torch.Tensor) -> State:
        return {"key": key.clone(), "training": Static(True)}

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        if not st["training"] or self.p == 0.0:
            return x, st
        if self.p == 1.0:
            return x * 0.0, st
        return self._drop(x, st)

    def _drop(self, x: torch.Tensor, st: State) -> tuple[torch.Tensor, State]:
        """The training-mode output for ``0 < p < 1`` and the new state (the subclasses'
        hook: :meth:`__call__` has handled test mode, ``p == 0`` and ``p == 1``)."""
        new_key, use_key = lrandom.split(st["key"])
        return lrandom.dropout(use_key, x, self.p), {"key": new_key, "training": st["training"]}

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def describe_input_error(self, x: Any) -> str | None:
        if isinstance(x, torch.Tensor):
            return None
        return f"expected a Tensor, got {type(x).__name__}"


class AlphaDropout(Dropout):
    """Dropout that keeps SELU's self-normalising mean and variance (``torch.nn.AlphaDropout``).

    Dropped elements are set to SELU's negative saturation value ``alpha' = -1.7581`` and the
    result is transformed affinely, ``a * (x * keep + alpha' * (1 - keep)) + b``, with
    ``a = ((1 - p) * (1 + p * alpha'^2))^(-1/2)`` and ``b = -a * alpha' * p``, so that zero
    mean and unit variance inputs keep them. As for :class:`Dropout`, the mask comes from
    ``st["key"]`` (advanced at every training-mode call) and ``p`` is quantised to a
    multiple of ``2**-16`` (``a`` and ``b`` use the quantised value). Identity in test mode.

    Arguments:
        p: drop probability, ``0 <= p <= 1`` (``p = 1`` gives zeros, as torch).

    Input:
        ``x``: a tensor of any shape.

    Returns:
        ``y`` of the same shape and the new state.

    **Parameters**
        None (``{}``).

    **States**
        - ``key``: ``(2,)`` int64, the random key.
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = AlphaDropout(0.2)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 8), ps, st)  # doctest: +SKIP
    """

    def _drop(self, x: torch.Tensor, st: State) -> tuple[torch.Tensor, State]:
        new_key, use_key = lrandom.split(st["key"])
        mask, scale = lrandom.dropout_mask(use_key, tuple(x.shape), self.p, device=x.device)
        drop = 1.0 - 1.0 / scale  # the quantised drop probability
        a = ((1.0 - drop) * (1.0 + drop * _ALPHA_PRIME**2)) ** -0.5
        b = -a * _ALPHA_PRIME * drop
        y = torch.where(mask, x, torch.full_like(x, _ALPHA_PRIME)) * a + b
        return y, {"key": new_key, "training": st["training"]}


class _ChannelDropout(Dropout):
    """Zero whole channels of ``(N, C, *spatial)`` (or unbatched ``(C, *spatial)``) inputs."""

    ndim: ClassVar[int]

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        if x.dim() not in (self.ndim + 1, self.ndim + 2):
            raise ValueError(f"{type(self).__name__}: {self.describe_input_error(x)}")
        if not st["training"] or self.p == 0.0:
            return x, st
        if self.p == 1.0:
            return x * 0.0, st
        new_key, use_key = lrandom.split(st["key"])
        channels = tuple(x.shape[: x.dim() - self.ndim])  # (N, C) or (C,)
        mask, scale = lrandom.dropout_mask(use_key, channels, self.p, device=x.device)
        mask = mask.reshape(*channels, *([1] * self.ndim))
        return x * mask * scale, {"key": new_key, "training": st["training"]}

    def describe_input_error(self, x: Any) -> str | None:
        if not isinstance(x, torch.Tensor):
            return f"expected a Tensor, got {type(x).__name__}"
        if x.dim() in (self.ndim + 1, self.ndim + 2):
            return None
        spatial = ", ".join(("L",) if self.ndim == 1 else ("D", "H", "W")[3 - self.ndim :])
        return f"expected input of shape (N, C, {spatial}) or (C, {spatial}), got {tuple(x.shape)}"


class Dropout1d(_ChannelDropout):
    """Zero whole channels with probability ``p`` and scale the rest by ``1 / (1 - p)``
    (``torch.nn.Dropout1d``).

    Every channel ``x[n, c]`` of an ``(N, C, L)`` input (or ``x[c]`` of an unbatched
    ``(C, L)`` one) is kept or zeroed as a whole, as suits sequences of feature maps whose
    neighbouring elements are strongly correlated. The mask comes from ``st["key"]``, advanced at
    every training-mode call; ``p`` is quantised as for :class:`Dropout`. Identity in test mode.

    Arguments:
        p: drop probability, ``0 <= p <= 1``.

    Input:
        ``x`` of shape ``(N, C, L)`` or ``(C, L)``.

    Returns:
        ``y`` of the same shape and the new state.

    **Parameters**
        None (``{}``).

    **States**
        - ``key``: ``(2,)`` int64, the random key.
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = Dropout1d(0.2)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
    """

    ndim = 1


class Dropout2d(_ChannelDropout):
    """Zero whole channels with probability ``p`` and scale the rest by ``1 / (1 - p)``
    (``torch.nn.Dropout2d``).

    Every channel ``x[n, c]`` of an ``(N, C, H, W)`` input (or ``x[c]`` of an unbatched
    ``(C, H, W)`` one) is kept or zeroed as a whole, as suits convolutional feature maps whose
    neighbouring elements are strongly correlated. The mask comes from ``st["key"]``, advanced at
    every training-mode call; ``p`` is quantised as for :class:`Dropout`. Identity in test mode.

    Arguments:
        p: drop probability, ``0 <= p <= 1``.

    Input:
        ``x`` of shape ``(N, C, H, W)`` or ``(C, H, W)``.

    Returns:
        ``y`` of the same shape and the new state.

    **Parameters**
        None (``{}``).

    **States**
        - ``key``: ``(2,)`` int64, the random key.
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = Dropout2d(0.2)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
    """

    ndim = 2


class Dropout3d(_ChannelDropout):
    """Zero whole channels with probability ``p`` and scale the rest by ``1 / (1 - p)``
    (``torch.nn.Dropout3d``).

    Every channel ``x[n, c]`` of an ``(N, C, D, H, W)`` input (or ``x[c]`` of an unbatched
    ``(C, D, H, W)`` one) is kept or zeroed as a whole, as suits volumetric feature maps whose
    neighbouring elements are strongly correlated. The mask comes from ``st["key"]``, advanced at
    every training-mode call; ``p`` is quantised as for :class:`Dropout`. Identity in test mode.

    Arguments:
        p: drop probability, ``0 <= p <= 1``.

    Input:
        ``x`` of shape ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Returns:
        ``y`` of the same shape and the new state.

    **Parameters**
        None (``{}``).

    **States**
        - ``key``: ``(2,)`` int64, the random key.
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = Dropout3d(0.2)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
    """

    ndim = 3


class VariationalHiddenDropout(Dropout):
    """Dropout with one mask kept across calls until it is resampled (Lux's
    ``VariationalHiddenDropout``; variational dropout of recurrent hidden states).

    The mask is a function of ``st["mask_key"]`` and of the input's shape, and the call
    does not advance that key: every training-mode call with an input of the same shape
    drops the same elements (e.g. the hidden state at every time step of a sequence).
    :func:`resample_masks` draws new masks for every such layer in a state tree (e.g. at
    the start of each sequence). Identity in test mode. ``p`` is quantised as for
    :class:`Dropout`.

    Arguments:
        p: drop probability, ``0 <= p <= 1``.

    Input:
        ``x``: a tensor of any shape.

    Returns:
        ``y`` of the same shape and the state, unchanged.

    **Parameters**
        None (``{}``).

    **States**
        - ``mask_key``: ``(2,)`` int64, the key of the current mask.
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = VariationalHiddenDropout(0.3)
        >>> ps, st = lux_torch.setup(0, layer)                 # doctest: +SKIP
        >>> y1, st = layer(h, ps, st); y2, st = layer(h, ps, st)  # same mask  # doctest: +SKIP
        >>> st = resample_masks(st, lux_torch.random.key(1))  # a new one  # doctest: +SKIP
    """

    def init_state(self, key: torch.Tensor) -> State:
        return {"mask_key": key.clone(), "training": Static(True)}

    def _drop(self, x: torch.Tensor, st: State) -> tuple[torch.Tensor, State]:
        return lrandom.dropout(st["mask_key"], x, self.p), st


@assume_constant_result
def _path_hash(path: str) -> int:
    """``crc32`` of a dotted path. A constant of the trace under ``torch.compile`` (Dynamo
    cannot trace ``zlib``; the paths are part of the tree's structure, so they are fixed)."""
    return zlib.crc32(path.encode())


def resample_masks(st: State, key: torch.Tensor) -> State:
    """A copy of ``st`` in which every ``mask_key`` (of :class:`VariationalHiddenDropout`)
    is replaced by a new key derived from ``key`` and the entry's path, so that each such
    layer draws a new, independent mask from its next call on.

    Arguments:
        st: a state tree (a whole model's, or stacked for an ensemble: every member then
            gets its own new key).
        key: a ``lux_torch.random`` key.

    Returns:
        The new state tree; ``st`` is not modified.

    Example:
        >>> st = resample_masks(st, lux_torch.random.key(step))  # doctest: +SKIP
    """
    leaves, spec = ltree.flatten(st)
    out = []
    for path, leaf in zip(ltree.paths(st), leaves, strict=True):
        if path.split(".")[-1] == "mask_key":
            new = lrandom.fold_in(key, _path_hash(path))
            if leaf.dim() > 1:  # stacked members: one key each
                new = lrandom.split(new, math.prod(leaf.shape[:-1])).reshape(leaf.shape)
            leaf = new.to(leaf.device)
        out.append(leaf)
    new_st: State = ltree.unflatten(spec, out)
    return new_st
