"""Sliding-window rearrangements: ``Unfold`` (im2col) and its adjoint ``Fold`` (col2im),
``torch.nn``'s names, arguments and printouts, on :func:`F.unfold` / :func:`F.fold`.

Neither has parameters or state. As in torch, only 2-d spatial inputs are supported, and
``kernel_size``, ``dilation``, ``padding``, ``stride`` (and ``Fold``'s ``output_size``) are
an int or a pair of ints, stored as given (a list as a tuple) so that the printout is
torch's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..core import Layer, Params, State
from ._common import check_int, not_a_tensor

__all__ = ["Fold", "Unfold"]

Pair = int | tuple[int, int]
#: what the constructors accept: a list becomes a tuple
PairArg = Pair | list[int]


def _pair(owner: str, name: str, value: Any, minimum: int) -> Pair:
    """Validate an int or a pair of ints (each ``>= minimum``); lists become tuples."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"{owner}: {name} must be an int or a tuple of 2 ints, got {tuple(value)!r}"
            )
        first, second = (check_int(owner, name, v, minimum) for v in value)
        return (first, second)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{owner}: {name} must be an int or a tuple of 2 ints, got {type(value).__name__}"
        )
    return check_int(owner, name, value, minimum)


def _both(value: PairArg) -> tuple[int, int]:
    """A window field as a pair (the fields hold an int or a pair once normalised)."""
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _check_window(layer: Layer) -> None:
    """Validate and normalise the window fields that ``Fold`` and ``Unfold`` share."""
    owner = type(layer).__name__
    layer._set_fields(
        **{
            name: _pair(owner, name, getattr(layer, name), minimum)
            for name, minimum in (
                ("kernel_size", 1),
                ("dilation", 1),
                ("padding", 0),
                ("stride", 1),
            )
        }
    )


def _window(layer: Any) -> tuple[tuple[int, int], ...]:
    """``kernel_size, dilation, padding, stride`` as pairs, in the order of ``F.unfold``."""
    return (
        _both(layer.kernel_size),
        _both(layer.dilation),
        _both(layer.padding),
        _both(layer.stride),
    )


def _window_repr(layer: Any) -> str:
    return (
        f"kernel_size={layer.kernel_size}, dilation={layer.dilation}, "
        f"padding={layer.padding}, stride={layer.stride}"
    )


def _blocks(layer: Any, size: tuple[int, int]) -> int:
    """``L``: the number of window positions over a spatial ``size``."""
    k, d, p, s = map(_both, (layer.kernel_size, layer.dilation, layer.padding, layer.stride))
    return math.prod((size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in (0, 1))


class Unfold(Layer):
    """Extract sliding local blocks (im2col; ``torch.nn.Unfold``).

    Arguments:
        kernel_size: the block size (an int or a pair).
        dilation: the spacing between a block's elements (>= 1).
        padding: implicit zero padding on both sides (>= 0).
        stride: the step between blocks (>= 1).

    Input:
        ``x`` of shape ``(N, C, H, W)`` or ``(C, H, W)``.

    Returns:
        ``y`` of shape ``(N, C * prod(kernel_size), L)`` (or unbatched), ``L`` the number
        of blocks, and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> Unfold(2)(torch.ones(1, 3, 4, 5), {}, {})[0].shape
        torch.Size([1, 12, 12])
    """

    kernel_size: PairArg
    dilation: PairArg = 1
    padding: PairArg = 0
    stride: PairArg = 1

    def __post_init__(self) -> None:
        _check_window(self)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return F.unfold(x, *_window(self)), st

    def extra_repr(self) -> str:
        return _window_repr(self)

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem is None and x.dim() not in (3, 4):
            problem = f"expected input of shape (N, C, H, W) or (C, H, W), got {tuple(x.shape)}"
        return problem


class Fold(Layer):
    """Combine sliding local blocks into a tensor, summing overlaps (col2im;
    ``torch.nn.Fold``, the adjoint of :class:`Unfold`).

    Arguments:
        output_size: the spatial size ``(H, W)`` of the output (an int or a pair).
        kernel_size: the block size (an int or a pair).
        dilation: the spacing between a block's elements (>= 1).
        padding: implicit zero padding on both sides (>= 0).
        stride: the step between blocks (>= 1).

    Input:
        ``x`` of shape ``(N, C * prod(kernel_size), L)`` or ``(C * prod(kernel_size), L)``,
        ``L`` the number of blocks that fit ``output_size``.

    Returns:
        ``y`` of shape ``(N, C, H, W)`` (or unbatched) and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> Fold((4, 5), 2)(torch.ones(1, 12, 12), {}, {})[0].shape
        torch.Size([1, 3, 4, 5])
    """

    output_size: PairArg
    kernel_size: PairArg
    dilation: PairArg = 1
    padding: PairArg = 0
    stride: PairArg = 1

    def __post_init__(self) -> None:
        _check_window(self)
        self._set_fields(output_size=_pair("Fold", "output_size", self.output_size, 1))

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return F.fold(x, _both(self.output_size), *_window(self)), st

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, {_window_repr(self)}"

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        k = math.prod(_both(self.kernel_size))
        blocks = _blocks(self, _both(self.output_size))
        if x.dim() not in (2, 3) or x.shape[-2] % k or x.shape[-1] != blocks:
            return (
                f"expected input of shape (N, C * {k}, {blocks}) or (C * {k}, {blocks}), "
                f"got {tuple(x.shape)}"
            )
        return None
