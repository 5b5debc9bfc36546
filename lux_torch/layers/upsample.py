"""Resampling layers of the convolution family: ``Upsample`` (``F.interpolate``),
``PixelShuffle`` and ``PixelUnshuffle`` (sub-pixel convolution's rearrangements), and
``ChannelShuffle`` (ShuffleNet's rearrangement of channel groups).

None has parameters or state; names and arguments follow ``torch.nn``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core import Layer, Params, State
from ._common import check_int, not_a_tensor

__all__ = ["ChannelShuffle", "PixelShuffle", "PixelUnshuffle", "Upsample"]

# mode -> the number of spatial dimensions it interpolates (None: any)
_MODES: dict[str, int | None] = {
    "nearest": None,
    "nearest-exact": None,
    "linear": 1,
    "bilinear": 2,
    "bicubic": 2,
    "trilinear": 3,
    "area": None,
}
_ALIGNABLE = ("linear", "bilinear", "bicubic", "trilinear")


def _positive_tuple(owner: str, name: str, value: Any, kind: type) -> Any:
    """``value``: a positive number of ``kind`` or a non-empty tuple of them (stored as is)."""
    items = value if isinstance(value, tuple) else (value,)
    if isinstance(value, list):
        items = tuple(value)
    if not items:
        raise ValueError(f"{owner}: {name} must not be empty")
    for v in items:
        ok = isinstance(v, kind) or (kind is float and isinstance(v, int))
        if isinstance(v, bool) or not ok:
            raise TypeError(
                f"{owner}: {name} must be a {kind.__name__} or a tuple of them, got {v!r}"
            )
        if v <= 0:
            raise ValueError(f"{owner}: {name} must be > 0, got {value!r}")
    return tuple(items) if isinstance(value, (tuple, list)) else value


class Upsample(Layer):
    """Resize ``(N, C, *spatial)`` inputs by interpolation (``torch.nn.Upsample``).

    Arguments:
        size: the output's spatial size (an int, or a tuple with one int per spatial
            dimension); exactly one of ``size`` and ``scale_factor`` is given.
        scale_factor: multiplier of the spatial size (a float, or one per dimension).
        mode: ``"nearest"`` (default), ``"nearest-exact"``, ``"linear"`` (3-d input),
            ``"bilinear"``/``"bicubic"`` (4-d), ``"trilinear"`` (5-d) or ``"area"``.
        align_corners: for the linear modes only, as in torch (``None`` means ``False``).
        recompute_scale_factor: as in :func:`torch.nn.functional.interpolate`.

    Input:
        ``x`` of shape ``(N, C, *spatial)`` with 1 to 3 spatial dimensions (the linear
        modes require their own number).

    Returns:
        The resized tensor and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> layer = Upsample(scale_factor=2, mode="bilinear")
        >>> y, _ = layer(torch.ones(1, 3, 4, 4), {}, {})
        >>> y.shape
        torch.Size([1, 3, 8, 8])
    """

    size: int | tuple[int, ...] | None = None
    scale_factor: float | tuple[float, ...] | None = None
    mode: str = "nearest"
    align_corners: bool | None = None
    recompute_scale_factor: bool | None = None

    def __post_init__(self) -> None:
        if (self.size is None) == (self.scale_factor is None):
            raise ValueError("Upsample: give exactly one of size and scale_factor")
        if self.size is not None:
            self._set_fields(size=_positive_tuple("Upsample", "size", self.size, int))
        else:
            scale = _positive_tuple("Upsample", "scale_factor", self.scale_factor, float)
            self._set_fields(scale_factor=scale)
        if self.mode not in _MODES:
            modes = ", ".join(map(repr, _MODES))
            raise ValueError(f"Upsample: mode must be one of {modes}, got {self.mode!r}")
        for name in ("align_corners", "recompute_scale_factor"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"Upsample: {name} must be a bool or None, got {value!r}")
        if not self._ranks():
            raise ValueError(
                f"Upsample: mode={self.mode!r} interpolates {_MODES[self.mode]} spatial "
                f"dimensions, but {self.size or self.scale_factor!r} gives a different number"
            )
        if self.align_corners is not None and self.mode not in _ALIGNABLE:
            raise ValueError(
                "Upsample: align_corners can only be set for the linear modes "
                f"({', '.join(_ALIGNABLE)}), got mode={self.mode!r}"
            )

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = self.describe_input_error(x)
        if problem:
            raise ValueError(f"Upsample: {problem}")
        y = F.interpolate(
            x,
            size=self.size,
            scale_factor=self.scale_factor,
            mode=self.mode,
            align_corners=self.align_corners,
            recompute_scale_factor=self.recompute_scale_factor,
        )
        return y, st

    def extra_repr(self) -> str:
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        parts = [what, f"mode={self.mode!r}"]
        if self.align_corners is not None:
            parts.append(f"align_corners={self.align_corners}")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        ranks = self._ranks()
        if x.ndim in ranks:
            return None
        dims = " or ".join(f"{r}-d" for r in sorted(ranks))
        return (
            f"expected a {dims} input (N, C, *spatial) for {self.extra_repr()}, got shape "
            f"{tuple(x.shape)}"
        )

    def _ranks(self) -> set[int]:
        """The input ranks this configuration accepts."""
        extent = self.size if self.size is not None else self.scale_factor
        ranks = {len(extent) + 2} if isinstance(extent, tuple) else {3, 4, 5}
        spatial = _MODES[self.mode]
        return ranks & {spatial + 2} if spatial else ranks


class PixelShuffle(Layer):
    """``(*, C * r^2, H, W) -> (*, C, H * r, W * r)`` (``torch.nn.PixelShuffle``).

    Arguments:
        upscale_factor: ``r`` (>= 1).

    Input:
        ``x`` of shape ``(*, C * r^2, H, W)``.

    Returns:
        ``y`` of shape ``(*, C, H * r, W * r)`` and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> PixelShuffle(2)(torch.ones(1, 8, 3, 3), {}, {})[0].shape
        torch.Size([1, 2, 6, 6])
    """

    upscale_factor: int

    def __post_init__(self) -> None:
        check_int("PixelShuffle", "upscale_factor", self.upscale_factor, minimum=1)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return F.pixel_shuffle(x, self.upscale_factor), st

    def extra_repr(self) -> str:
        return str(self.upscale_factor)

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        r2 = self.upscale_factor**2
        if x.ndim < 3 or x.shape[-3] % r2:
            return f"expected input of shape (*, C * {r2}, H, W), got {tuple(x.shape)}"
        return None


class PixelUnshuffle(Layer):
    """``(*, C, H * r, W * r) -> (*, C * r^2, H, W)`` (``torch.nn.PixelUnshuffle``).

    Arguments:
        downscale_factor: ``r`` (>= 1).

    Input:
        ``x`` of shape ``(*, C, H * r, W * r)``.

    Returns:
        ``y`` of shape ``(*, C * r^2, H, W)`` and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> PixelUnshuffle(2)(torch.ones(1, 2, 6, 6), {}, {})[0].shape
        torch.Size([1, 8, 3, 3])
    """

    downscale_factor: int

    def __post_init__(self) -> None:
        check_int("PixelUnshuffle", "downscale_factor", self.downscale_factor, minimum=1)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return F.pixel_unshuffle(x, self.downscale_factor), st

    def extra_repr(self) -> str:
        return str(self.downscale_factor)

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        r = self.downscale_factor
        if x.ndim < 3 or x.shape[-1] % r or x.shape[-2] % r:
            return f"expected input of shape (*, C, H * {r}, W * {r}), got {tuple(x.shape)}"
        return None


class ChannelShuffle(Layer):
    """Interleave ``groups`` groups of channels (``torch.nn.ChannelShuffle``; ShuffleNet).

    The ``C = groups * k`` channels, seen as a ``(groups, k)`` grid, are transposed to
    ``(k, groups)``: output channel ``i * groups + g`` is input channel ``g * k + i``.

    Arguments:
        groups: the number of groups (>= 1, dividing ``C``).

    Input:
        ``x`` of shape ``(N, C, *)`` with at least one dimension after ``C``.

    Returns:
        ``y`` of the same shape and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> ChannelShuffle(2)(torch.arange(4.0).reshape(1, 4, 1), {}, {})[0].flatten()
        tensor([0., 2., 1., 3.])
    """

    groups: int

    def __post_init__(self) -> None:
        check_int("ChannelShuffle", "groups", self.groups, minimum=1)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return F.channel_shuffle(x, self.groups), st

    def extra_repr(self) -> str:
        return f"groups={self.groups}"

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        if x.ndim < 3 or x.shape[1] % self.groups:
            return (
                f"expected input of shape (N, C, *) with C divisible by {self.groups} and at "
                f"least one dimension after C, got {tuple(x.shape)}"
            )
        return None
