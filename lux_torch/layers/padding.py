"""Padding layers: ``ZeroPad``, ``ConstantPad``, ``ReflectionPad``, ``ReplicationPad`` and
``CircularPad``, each in 1, 2 and 3 dimensions (``torch.nn``'s names, arguments and printout).

Every layer is :func:`torch.nn.functional.pad` with a fixed mode on the last ``n``
dimensions; none has parameters or state. ``padding`` is an int (the same on every side) or
a tuple of ``2 n`` ints ordered from the last dimension backwards, as :func:`F.pad` takes
it: ``(left, right)``, ``(left, right, top, bottom)``,
``(left, right, top, bottom, front, back)``. Negative values crop. Unlike ``torch.nn``,
which stores a tuple of another length as given and then pads a different number of
dimensions than the class name says, a tuple of the wrong length is rejected.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F

from ..core import Layer, Params, State
from ._common import check_int, not_a_tensor

__all__ = [
    "CircularPad1d",
    "CircularPad2d",
    "CircularPad3d",
    "ConstantPad1d",
    "ConstantPad2d",
    "ConstantPad3d",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReflectionPad3d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "ReplicationPad3d",
    "ZeroPad1d",
    "ZeroPad2d",
    "ZeroPad3d",
]

_SIDES = ("left", "right", "top", "bottom", "front", "back")
_SPATIAL = {1: "W", 2: "H, W", 3: "D, H, W"}


def _padding(owner: str, value: Any, n: int) -> tuple[int, ...]:
    """``value`` (an int, or ``2 n`` ints) as the ``2 n``-tuple that ``F.pad`` takes."""
    sides = ", ".join(_SIDES[: 2 * n])
    if isinstance(value, (tuple, list)):
        if len(value) != 2 * n:
            raise ValueError(
                f"{owner}: padding must be an int or a tuple of {2 * n} ints ({sides}), "
                f"got {tuple(value)!r} ({len(value)} values)"
            )
        return tuple(check_int(owner, "padding", v, minimum=None) for v in value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{owner}: padding must be an int or a tuple of {2 * n} ints ({sides}), "
            f"got {type(value).__name__}"
        )
    return (value,) * (2 * n)


class _Pad(Layer):
    """``F.pad(x, padding, mode)`` on the last ``ndim`` dimensions (the shared machinery).

    Subclasses set ``ndim`` and ``mode``; the constant modes accept any number of leading
    dimensions, the others (as torch's kernels) one or two: ``(C, *spatial)`` or
    ``(N, C, *spatial)``.
    """

    padding: int | tuple[int, ...] | list[int]
    ndim: ClassVar[int]
    mode: ClassVar[str] = "constant"

    def __post_init__(self) -> None:
        self._set_fields(padding=_padding(type(self).__name__, self.padding, self.ndim))

    @property
    def _pad(self) -> tuple[int, ...]:
        return cast(tuple[int, ...], self.padding)  # 2 * ndim ints once __post_init__ has run

    def _value(self) -> float | None:
        return None  # F.pad's default: zeros for the constant mode, unused by the others

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        if self.mode != "constant" and x.dim() not in (self.ndim + 1, self.ndim + 2):
            raise ValueError(f"{type(self).__name__}: {self._rank_problem(x)}")
        return F.pad(x, self._pad, self.mode, self._value()), st

    def extra_repr(self) -> str:
        return str(self.padding)

    def _rank_problem(self, x: torch.Tensor) -> str:
        spatial = _SPATIAL[self.ndim]
        if self.mode == "constant":
            return f"expected input of shape (*, {spatial}), got {tuple(x.shape)}"
        return f"expected input of shape (N, C, {spatial}) or (C, {spatial}), got {tuple(x.shape)}"

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        if x.dim() < self.ndim or (
            self.mode != "constant" and x.dim() not in (self.ndim + 1, self.ndim + 2)
        ):
            return self._rank_problem(x)
        if self.mode == "reflect":
            sizes = tuple(x.shape[-self.ndim :])[::-1]  # last dimension first, as padding
            if any(
                max(self._pad[2 * i], self._pad[2 * i + 1]) >= sizes[i] for i in range(self.ndim)
            ):
                return (
                    f"reflection padding must be smaller than the padded dimension, got "
                    f"padding {self.padding} for an input of shape {tuple(x.shape)}"
                )
        return None


class _ConstantPad(_Pad):
    """Constant padding with a configurable fill ``value``."""

    value: float

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"{type(self).__name__}: value must be a number, got {type(value).__name__}"
            )

    def _value(self) -> float | None:
        return self.value

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


# --------------------------------------------------------------------------- zeros


class ZeroPad1d(_Pad):
    """Pad the last dimension with zeros (``torch.nn.ZeroPad1d``).

    Arguments:
        padding: an int, or ``(left, right)``; negative values crop.

    Input:
        ``x`` of shape ``(*, W)``.

    Returns:
        ``y`` of shape ``(*, W + left + right)`` and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ZeroPad1d((1, 2))(torch.ones(2, 3, 4), {}, {})[0].shape
        torch.Size([2, 3, 7])
    """

    ndim = 1


class ZeroPad2d(_Pad):
    """Pad the last two dimensions with zeros (``torch.nn.ZeroPad2d``).

    Arguments:
        padding: an int, or ``(left, right, top, bottom)``; negative values crop.

    Input:
        ``x`` of shape ``(*, H, W)``.

    Returns:
        ``y`` of shape ``(*, H + top + bottom, W + left + right)`` and the unchanged
        (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ZeroPad2d(1)(torch.ones(2, 3, 4, 4), {}, {})[0].shape
        torch.Size([2, 3, 6, 6])
    """

    ndim = 2


class ZeroPad3d(_Pad):
    """Pad the last three dimensions with zeros (``torch.nn.ZeroPad3d``).

    Arguments:
        padding: an int, or ``(left, right, top, bottom, front, back)``; negative values crop.

    Input:
        ``x`` of shape ``(*, D, H, W)``.

    Returns:
        ``y`` of shape ``(*, D + front + back, H + top + bottom, W + left + right)`` and the
        unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ZeroPad3d(1)(torch.ones(1, 2, 3, 3, 3), {}, {})[0].shape
        torch.Size([1, 2, 5, 5, 5])
    """

    ndim = 3


# --------------------------------------------------------------------------- a constant


class ConstantPad1d(_ConstantPad):
    """Pad the last dimension with a constant (``torch.nn.ConstantPad1d``).

    Arguments:
        padding: an int, or ``(left, right)``; negative values crop.
        value: the fill value.

    Input:
        ``x`` of shape ``(*, W)``.

    Returns:
        ``y`` of shape ``(*, W + left + right)`` and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ConstantPad1d(2, 3.5)(torch.ones(1, 2), {}, {})[0]
        tensor([[3.5000, 3.5000, 1.0000, 1.0000, 3.5000, 3.5000]])
    """

    ndim = 1


class ConstantPad2d(_ConstantPad):
    """Pad the last two dimensions with a constant (``torch.nn.ConstantPad2d``).

    Arguments:
        padding: an int, or ``(left, right, top, bottom)``; negative values crop.
        value: the fill value.

    Input:
        ``x`` of shape ``(*, H, W)``.

    Returns:
        ``y`` of shape ``(*, H + top + bottom, W + left + right)`` and the unchanged
        (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ConstantPad2d((1, 0, 2, 0), -1.0)(torch.ones(1, 3, 3), {}, {})[0].shape
        torch.Size([1, 5, 4])
    """

    ndim = 2


class ConstantPad3d(_ConstantPad):
    """Pad the last three dimensions with a constant (``torch.nn.ConstantPad3d``).

    Arguments:
        padding: an int, or ``(left, right, top, bottom, front, back)``; negative values crop.
        value: the fill value.

    Input:
        ``x`` of shape ``(*, D, H, W)``.

    Returns:
        ``y`` of shape ``(*, D + front + back, H + top + bottom, W + left + right)`` and the
        unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ConstantPad3d(1, 0.5)(torch.ones(1, 2, 2, 2), {}, {})[0].shape
        torch.Size([1, 4, 4, 4])
    """

    ndim = 3


# --------------------------------------------------------------------------- reflection


class ReflectionPad1d(_Pad):
    """Pad the last dimension with its reflection, edge excluded (``torch.nn.ReflectionPad1d``).

    Arguments:
        padding: an int, or ``(left, right)``; each smaller than the input's ``W``
            (negative values crop).

    Input:
        ``x`` of shape ``(N, C, W)`` or ``(C, W)``.

    Returns:
        ``y`` of shape ``(N, C, W + left + right)`` (or unbatched) and the unchanged state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ReflectionPad1d(2)(torch.arange(4.0).reshape(1, 4), {}, {})[0]
        tensor([[2., 1., 0., 1., 2., 3., 2., 1.]])
    """

    ndim = 1
    mode = "reflect"


class ReflectionPad2d(_Pad):
    """Pad the last two dimensions with their reflection (``torch.nn.ReflectionPad2d``).

    Arguments:
        padding: an int, or ``(left, right, top, bottom)``; each smaller than the size of
            the dimension it pads (negative values crop).

    Input:
        ``x`` of shape ``(N, C, H, W)`` or ``(C, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, H + top + bottom, W + left + right)`` (or unbatched) and
        the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ReflectionPad2d(1)(torch.ones(1, 2, 3, 3), {}, {})[0].shape
        torch.Size([1, 2, 5, 5])
    """

    ndim = 2
    mode = "reflect"


class ReflectionPad3d(_Pad):
    """Pad the last three dimensions with their reflection (``torch.nn.ReflectionPad3d``).

    Arguments:
        padding: an int, or ``(left, right, top, bottom, front, back)``; each smaller than
            the size of the dimension it pads (negative values crop).

    Input:
        ``x`` of shape ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, D + front + back, H + top + bottom, W + left + right)`` (or
        unbatched) and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ReflectionPad3d(1)(torch.ones(1, 1, 2, 2, 2), {}, {})[0].shape
        torch.Size([1, 1, 4, 4, 4])
    """

    ndim = 3
    mode = "reflect"


# --------------------------------------------------------------------------- replication


class ReplicationPad1d(_Pad):
    """Pad the last dimension by repeating its edge values (``torch.nn.ReplicationPad1d``).

    Arguments:
        padding: an int, or ``(left, right)``; negative values crop.

    Input:
        ``x`` of shape ``(N, C, W)`` or ``(C, W)``.

    Returns:
        ``y`` of shape ``(N, C, W + left + right)`` (or unbatched) and the unchanged state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ReplicationPad1d((1, 2))(torch.arange(3.0).reshape(1, 3), {}, {})[0]
        tensor([[0., 0., 1., 2., 2., 2.]])
    """

    ndim = 1
    mode = "replicate"


class ReplicationPad2d(_Pad):
    """Pad the last two dimensions by repeating their edges (``torch.nn.ReplicationPad2d``).

    Arguments:
        padding: an int, or ``(left, right, top, bottom)``; negative values crop.

    Input:
        ``x`` of shape ``(N, C, H, W)`` or ``(C, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, H + top + bottom, W + left + right)`` (or unbatched) and
        the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ReplicationPad2d((1, 1, 2, 0))(torch.ones(1, 2, 3, 3), {}, {})[0].shape
        torch.Size([1, 2, 5, 5])
    """

    ndim = 2
    mode = "replicate"


class ReplicationPad3d(_Pad):
    """Pad the last three dimensions by repeating their edges (``torch.nn.ReplicationPad3d``).

    Arguments:
        padding: an int, or ``(left, right, top, bottom, front, back)``; negative values crop.

    Input:
        ``x`` of shape ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, D + front + back, H + top + bottom, W + left + right)`` (or
        unbatched) and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ReplicationPad3d(1)(torch.ones(1, 1, 2, 2, 2), {}, {})[0].shape
        torch.Size([1, 1, 4, 4, 4])
    """

    ndim = 3
    mode = "replicate"


# --------------------------------------------------------------------------- circular


class CircularPad1d(_Pad):
    """Pad the last dimension periodically: the end wraps to the start (``torch.nn.CircularPad1d``).

    Arguments:
        padding: an int, or ``(left, right)``; each at most the input's ``W`` (negative
            values crop).

    Input:
        ``x`` of shape ``(N, C, W)`` or ``(C, W)``.

    Returns:
        ``y`` of shape ``(N, C, W + left + right)`` (or unbatched) and the unchanged state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> CircularPad1d((1, 2))(torch.arange(3.0).reshape(1, 3), {}, {})[0]
        tensor([[2., 0., 1., 2., 0., 1.]])
    """

    ndim = 1
    mode = "circular"


class CircularPad2d(_Pad):
    """Pad the last two dimensions periodically (``torch.nn.CircularPad2d``).

    Arguments:
        padding: an int, or ``(left, right, top, bottom)``; each at most the size of the
            dimension it pads (negative values crop).

    Input:
        ``x`` of shape ``(N, C, H, W)`` or ``(C, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, H + top + bottom, W + left + right)`` (or unbatched) and
        the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> CircularPad2d(1)(torch.ones(1, 2, 3, 3), {}, {})[0].shape
        torch.Size([1, 2, 5, 5])
    """

    ndim = 2
    mode = "circular"


class CircularPad3d(_Pad):
    """Pad the last three dimensions periodically (``torch.nn.CircularPad3d``).

    Arguments:
        padding: an int, or ``(left, right, top, bottom, front, back)``; each at most the
            size of the dimension it pads (negative values crop).

    Input:
        ``x`` of shape ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, D + front + back, H + top + bottom, W + left + right)`` (or
        unbatched) and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> CircularPad3d(1)(torch.ones(1, 1, 2, 2, 2), {}, {})[0].shape
        torch.Size([1, 1, 4, 4, 4])
    """

    ndim = 3
    mode = "circular"
