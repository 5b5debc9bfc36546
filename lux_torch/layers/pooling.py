"""Pooling: ``MaxPool1d/2d/3d``, ``AvgPool1d/2d/3d``, ``LPPool1d/2d/3d``,
``AdaptiveAvgPool1d/2d/3d``, ``AdaptiveMaxPool1d/2d/3d``, the partial inverse of max
pooling ``MaxUnpool1d/2d/3d`` (``torch.nn``'s) and Lux's ``GlobalAvgPool`` /
``GlobalMaxPool``.

One implementation per family: :class:`_PoolNd` holds what every fixed-rank pooling layer
shares (the number of spatial dimensions in the class variable ``ndim``, validation and
normalisation of the window arguments, the printout, the input-shape errors); each family
adds its fields (``torch.nn``'s arguments, in ``torch.nn``'s order, so positional calls
read the same) and a ``__call__`` that calls ``torch.nn.functional`` directly. The public
classes only fix ``ndim``.

Pooling layers have no parameters and no state (``ps == st == {}``). ``stride=None`` (the
default) is kept as given and means "the kernel size", as in torch, so that
``dataclasses.replace(layer, kernel_size=...)`` keeps meaning it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F

from ..core import Layer, State
from ._common import (
    SPATIAL,
    as_ints,
    check_bool,
    check_int,
    compact,
    not_a_tensor,
    ntuple,
    options_problem,
    spatial_shapes,
)
from .basic import Params

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "MaxUnpool1d",
    "MaxUnpool2d",
    "MaxUnpool3d",
]

#: an int or ``n`` ints (``None``: keep that size), as a tuple or a list (stored as a tuple)
IntOrTuple = int | tuple[int, ...] | list[int]
OptIntOrTuple = int | tuple[int | None, ...] | list[int | None]
_Fn = Callable[..., Any]

_MAX: dict[int, _Fn] = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG: dict[int, _Fn] = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_UNPOOL: dict[int, _Fn] = {1: F.max_unpool1d, 2: F.max_unpool2d, 3: F.max_unpool3d}
_LP: dict[int, _Fn] = {1: F.lp_pool1d, 2: F.lp_pool2d, 3: F.lp_pool3d}
_ADAPTIVE_AVG: dict[int, _Fn] = {
    1: F.adaptive_avg_pool1d,
    2: F.adaptive_avg_pool2d,
    3: F.adaptive_avg_pool3d,
}
_ADAPTIVE_MAX: dict[int, _Fn] = {
    1: F.adaptive_max_pool1d,
    2: F.adaptive_max_pool2d,
    3: F.adaptive_max_pool3d,
}


# --------------------------------------------------------------------------- helpers


def _window(
    owner: str,
    n: int,
    kernel_size: Any,
    stride: Any,
    ceil_mode: Any,
    padding: Any = None,
    dilation: Any = None,
) -> dict[str, Any]:
    """Validate the window arguments (``padding``/``dilation`` only for the families that
    have them: not ``None``); return them normalised to ``n``-tuples, ``stride=None`` kept.
    Torch's rule ``padding <= kernel_size / 2`` (the kernel size, not the dilated extent)."""
    kernel = ntuple(owner, "kernel_size", kernel_size, n, 1)
    fields: dict[str, Any] = {
        "kernel_size": kernel,
        "stride": None if stride is None else ntuple(owner, "stride", stride, n, 1),
        "ceil_mode": check_bool(owner, "ceil_mode", ceil_mode),
    }
    if padding is not None:
        pad = ntuple(owner, "padding", padding, n, 0)
        if any(2 * p > k for p, k in zip(pad, kernel, strict=True)):
            raise ValueError(
                f"{owner}: padding must be at most half of kernel_size in each dimension "
                f"(as torch), got padding={compact(pad)} and kernel_size={compact(kernel)}"
            )
        fields["padding"] = pad
    if dilation is not None:
        fields["dilation"] = ntuple(owner, "dilation", dilation, n, 1)
    return fields


def _stride_or_kernel(stride: Any, kernel_size: Any) -> tuple[int, ...]:
    """The stride in effect: the kernel size when ``stride=None`` (as torch)."""
    return as_ints(kernel_size if stride is None else stride)


def _min_size(kernel_size: Any, padding: Any = None, dilation: Any = None) -> tuple[int, ...]:
    """Per spatial dimension, the smallest input size that gives a non-empty output
    (``padding``/``dilation`` ``None``: none)."""
    kernel = as_ints(kernel_size)
    pad = as_ints(padding) if padding is not None else (0,) * len(kernel)
    dil = as_ints(dilation) if dilation is not None else (1,) * len(kernel)
    return tuple(max(1, d * (k - 1) + 1 - 2 * p) for k, p, d in zip(kernel, pad, dil, strict=True))


class _PoolNd(Layer):
    """What the fixed-rank pooling layers share (no fields: each family declares its own).

    Subclasses set ``ndim`` and implement ``_validated`` (check the configuration, return
    the normalised fields), ``_head`` (the printout's leading items) and, for windowed
    pooling, ``_min_spatial``; ``_shown`` lists the ``(option, default)`` pairs that the
    printout shows when they differ from ``torch.nn``'s defaults.
    """

    ndim: ClassVar[int]
    _shown: ClassVar[tuple[tuple[str, Any], ...]] = ()

    def __post_init__(self) -> None:
        self._set_fields(**self._validated(type(self).__name__))

    def _validated(self, owner: str) -> dict[str, Any]:
        raise NotImplementedError

    # -- display and errors
    def _head(self) -> list[str]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        parts = self._head()
        for name, default in self._shown:
            value = getattr(self, name)
            if isinstance(value, tuple):
                if any(v != default for v in value):
                    parts.append(f"{name}={compact(value)}")
            elif value != default:
                parts.append(f"{name}={value!r}")
        return ", ".join(parts)

    def _min_spatial(self) -> tuple[int, ...]:
        """The smallest input size per spatial dimension that the layer accepts."""
        return (1,) * self.ndim

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        n = self.ndim
        expected = f"expected input of shape {spatial_shapes(n)}"
        if x.ndim not in (n + 1, n + 2):
            return f"{expected}, got {tuple(x.shape)}"
        smallest = self._min_spatial()
        if any(s < m for s, m in zip(x.shape[-n:], smallest, strict=True)):
            spatial = ", ".join(SPATIAL[n])
            return f"{expected} with ({spatial}) >= {smallest}, got {tuple(x.shape)}"
        return None


# --------------------------------------------------------------------------- max pooling


class _MaxPoolNd(_PoolNd):
    """Max pooling over ``ndim`` spatial dimensions (see :class:`MaxPool2d` for the docs)."""

    _shown: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("stride", None),
        ("padding", 0),
        ("dilation", 1),
        ("return_indices", False),
        ("ceil_mode", False),
    )

    kernel_size: IntOrTuple
    stride: IntOrTuple | None = None
    padding: IntOrTuple = 0
    dilation: IntOrTuple = 1
    return_indices: bool = False
    ceil_mode: bool = False

    def _validated(self, owner: str) -> dict[str, Any]:
        check_bool(owner, "return_indices", self.return_indices)
        return _window(
            owner,
            self.ndim,
            self.kernel_size,
            self.stride,
            self.ceil_mode,
            self.padding,
            self.dilation,
        )

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[Any, State]:
        y = _MAX[self.ndim](
            x,
            self.kernel_size,
            _stride_or_kernel(self.stride, self.kernel_size),
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )
        return y, st

    def _head(self) -> list[str]:
        return [str(self.kernel_size)]

    def _min_spatial(self) -> tuple[int, ...]:
        return _min_size(self.kernel_size, self.padding, self.dilation)


# --------------------------------------------------------------------------- max unpooling


class _MaxUnpoolNd(_PoolNd):
    """The partial inverse of max pooling over ``ndim`` spatial dimensions (docs:
    :class:`MaxUnpool2d`)."""

    _shown: ClassVar[tuple[tuple[str, Any], ...]] = (("stride", None), ("padding", 0))

    kernel_size: IntOrTuple
    stride: IntOrTuple | None = None
    padding: IntOrTuple = 0

    def _validated(self, owner: str) -> dict[str, Any]:
        n = self.ndim
        return {
            "kernel_size": ntuple(owner, "kernel_size", self.kernel_size, n, 1),
            "stride": None if self.stride is None else ntuple(owner, "stride", self.stride, n, 1),
            "padding": ntuple(owner, "padding", self.padding, n, 0),
        }

    def _parse(self, x: Any) -> tuple[Any, Any, Any] | str:
        """``(values, indices, output_size)`` or what is wrong with ``x``."""
        forms = (
            "expected a tuple (x, indices) or (x, indices, options) with options a dict "
            "such as {'output_size': ...}"
        )
        if not isinstance(x, (tuple, list)) or len(x) not in (2, 3):
            return f"{forms}, got {type(x).__name__}"
        options: Any = x[2] if len(x) == 3 else {}
        if not isinstance(options, dict):
            return f"{forms}, got a third item of type {type(options).__name__}"
        problem = options_problem(options, ("output_size",), ())
        return problem if problem is not None else (x[0], x[1], options.get("output_size"))

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        parts = self._parse(x)
        if isinstance(parts, str):
            raise ValueError(f"{type(self).__name__}: {parts}")
        values, indices, output_size = parts
        stride = _stride_or_kernel(self.stride, self.kernel_size)
        fn = _UNPOOL[self.ndim]
        return fn(values, indices, self.kernel_size, stride, self.padding, output_size), st

    def _head(self) -> list[str]:
        return [str(self.kernel_size)]

    def describe_input_error(self, x: Any) -> str | None:
        parts = self._parse(x)
        if isinstance(parts, str):
            return parts
        values, indices, _ = parts
        problem = super().describe_input_error(values) or not_a_tensor(indices)
        if problem:
            return problem
        if indices.dtype != torch.int64 or indices.shape != values.shape:
            return (
                "expected int64 indices of the shape of x (MaxPool's return_indices=True), "
                f"got {indices.dtype} indices of shape {tuple(indices.shape)} for x of "
                f"shape {tuple(values.shape)}"
            )
        return None


# --------------------------------------------------------------------------- average pooling


class _AvgPoolNd(_PoolNd):
    """Average pooling over ``ndim`` spatial dimensions (docs: :class:`AvgPool2d`)."""

    _shown: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("stride", None),
        ("padding", 0),
        ("ceil_mode", False),
        ("count_include_pad", True),
    )

    kernel_size: IntOrTuple
    stride: IntOrTuple | None = None
    padding: IntOrTuple = 0
    ceil_mode: bool = False
    count_include_pad: bool = True

    def _validated(self, owner: str) -> dict[str, Any]:
        check_bool(owner, "count_include_pad", self.count_include_pad)
        return _window(
            owner, self.ndim, self.kernel_size, self.stride, self.ceil_mode, self.padding
        )

    def _divisor(self) -> tuple[int | None, ...]:
        """The trailing ``divisor_override`` argument (``avg_pool1d`` has none)."""
        return ()

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        y = _AVG[self.ndim](
            x,
            self.kernel_size,
            _stride_or_kernel(self.stride, self.kernel_size),
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            *self._divisor(),
        )
        return y, st

    def _head(self) -> list[str]:
        return [str(self.kernel_size)]

    def _min_spatial(self) -> tuple[int, ...]:
        return _min_size(self.kernel_size, self.padding)


class _AvgPoolDivisorNd(_AvgPoolNd):
    """Average pooling with torch's ``divisor_override`` (2-d and 3-d only, as torch)."""

    _shown: ClassVar[tuple[tuple[str, Any], ...]] = (
        *_AvgPoolNd._shown,
        ("divisor_override", None),
    )

    divisor_override: int | None = None

    def _validated(self, owner: str) -> dict[str, Any]:
        if self.divisor_override is not None:
            check_int(owner, "divisor_override", self.divisor_override, minimum=1)
        return super()._validated(owner)

    def _divisor(self) -> tuple[int | None, ...]:
        return (self.divisor_override,)


# --------------------------------------------------------------------------- power-average


class _LPPoolNd(_PoolNd):
    """Power-average pooling over ``ndim`` spatial dimensions (docs: :class:`LPPool2d`)."""

    _shown: ClassVar[tuple[tuple[str, Any], ...]] = (("stride", None), ("ceil_mode", False))

    norm_type: float
    kernel_size: IntOrTuple
    stride: IntOrTuple | None = None
    ceil_mode: bool = False

    def _validated(self, owner: str) -> dict[str, Any]:
        p = self.norm_type
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"{owner}: norm_type must be a number, got {type(p).__name__}")
        if not p > 0:  # (also rejects nan)
            raise ValueError(f"{owner}: norm_type must be > 0, got {p}")
        return _window(owner, self.ndim, self.kernel_size, self.stride, self.ceil_mode)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        kernel_size: Any = as_ints(self.kernel_size)
        if self.ndim == 1:
            kernel_size = kernel_size[0]  # lp_pool1d multiplies by kernel_size: an int
        stride = _stride_or_kernel(self.stride, self.kernel_size)
        return _LP[self.ndim](x, self.norm_type, kernel_size, stride, self.ceil_mode), st

    def _head(self) -> list[str]:
        return [repr(self.norm_type), str(self.kernel_size)]

    def _min_spatial(self) -> tuple[int, ...]:
        return _min_size(self.kernel_size)


# --------------------------------------------------------------------------- adaptive


class _AdaptivePoolNd(_PoolNd):
    """Adaptive pooling over ``ndim`` spatial dimensions (docs: :class:`AdaptiveAvgPool2d`)."""

    output_size: OptIntOrTuple

    def _validated(self, owner: str) -> dict[str, Any]:
        n, size = self.ndim, self.output_size
        what = f"an int or a tuple of {n} ints or None"
        if isinstance(size, (tuple, list)):
            if len(size) != n:
                raise ValueError(
                    f"{owner}: output_size must be {what}, got {tuple(size)!r} ({len(size)} values)"
                )
            entries = tuple(s if s is None else check_int(owner, "output_size", s, 1) for s in size)
        elif isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"{owner}: output_size must be {what}, got {type(size).__name__}")
        else:
            entries = (check_int(owner, "output_size", size, 1),) * n
        return {"output_size": entries}

    def _size(self, x: torch.Tensor) -> tuple[int, ...]:
        """The output size for ``x``: ``None`` entries take the input's size."""
        n, sizes = self.ndim, cast(tuple[int | None, ...], self.output_size)
        return tuple(x.shape[i - n] if s is None else s for i, s in enumerate(sizes))

    def _head(self) -> list[str]:
        return [str(self.output_size)]


class _AdaptiveAvgPoolNd(_AdaptivePoolNd):
    """Adaptive average pooling (docs: :class:`AdaptiveAvgPool2d`)."""

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        return _ADAPTIVE_AVG[self.ndim](x, self._size(x)), st


class _AdaptiveMaxPoolNd(_AdaptivePoolNd):
    """Adaptive max pooling (docs: :class:`AdaptiveMaxPool2d`)."""

    _shown: ClassVar[tuple[tuple[str, Any], ...]] = (("return_indices", False),)

    return_indices: bool = False

    def _validated(self, owner: str) -> dict[str, Any]:
        check_bool(owner, "return_indices", self.return_indices)
        return super()._validated(owner)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[Any, State]:
        y = _ADAPTIVE_MAX[self.ndim](x, self._size(x), return_indices=self.return_indices)
        return y, st


# --------------------------------------------------------------------------- global


class _GlobalPool(Layer):
    """Reduce every spatial dimension of ``(N, C, *spatial)`` to size 1 (keeping it)."""

    def _reduce(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        if x.ndim < 3:
            # (mean/amax over an empty dim list would reduce over *every* dimension)
            raise ValueError(
                f"{type(self).__name__}: expected input of shape (N, C, *spatial) with at "
                f"least one spatial dimension, got {tuple(x.shape)}"
            )
        return self._reduce(x, tuple(range(2, x.ndim))), st

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem is None and x.ndim < 3:
            problem = (
                "expected input of shape (N, C, *spatial) with at least one spatial "
                f"dimension, got {tuple(x.shape)}"
            )
        return problem


# --------------------------------------------------------------------------- public classes


class MaxPool1d(_MaxPoolNd):
    """1-d max pooling: the maximum over each window (``torch.nn.MaxPool1d``).

    Arguments:
        kernel_size: the window's size: an int or a tuple of 1 ints (>= 1).
        stride: step between windows (int or 1-tuple, >= 1); ``None`` (default): the
            kernel size.
        padding: implicit ``-inf`` padding on both sides (int or 1-tuple, >= 0, at most
            half of the kernel size, as torch).
        dilation: spacing between window elements (int or 1-tuple, >= 1).
        return_indices: also return the flat index (within each input plane, as
            ``torch.nn.MaxUnpool1d`` expects) of every maximum.
        ceil_mode: round the output size up instead of down.

    Input:
        ``x`` of shape ``(N, C, L)``, or unbatched ``(C, L)``.

    Returns:
        ``y`` of shape ``(N, C, L_out)`` (unbatched: ``(C, L_out)``) and the
        unchanged (empty) state. Per spatial dimension ``L_out = floor((L + 2 * padding -
        dilation * (kernel_size - 1) - 1) / stride) + 1`` (``ceil`` with ``ceil_mode=True``,
        dropping a last window that would start in the right padding).
        With ``return_indices=True``, ``y`` is the pair ``(values, indices)`` (``indices``:
        ``int64``, same shape), as torch.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> MaxPool1d(2)(torch.ones(1, 3, 8), {}, {})[0].shape
        torch.Size([1, 3, 4])
    """

    ndim = 1


class MaxPool2d(_MaxPoolNd):
    """2-d max pooling: the maximum over each window (``torch.nn.MaxPool2d``).

    Arguments:
        kernel_size: the window's size: an int or a tuple of 2 ints (>= 1).
        stride: step between windows (int or 2-tuple, >= 1); ``None`` (default): the
            kernel size.
        padding: implicit ``-inf`` padding on both sides (int or 2-tuple, >= 0, at most
            half of the kernel size, as torch).
        dilation: spacing between window elements (int or 2-tuple, >= 1).
        return_indices: also return the flat index (within each input plane, as
            ``torch.nn.MaxUnpool2d`` expects) of every maximum.
        ceil_mode: round the output size up instead of down.

    Input:
        ``x`` of shape ``(N, C, H, W)``, or unbatched ``(C, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, H_out, W_out)`` (unbatched: ``(C, H_out, W_out)``) and the
        unchanged (empty) state. Per spatial dimension ``W_out = floor((W + 2 * padding -
        dilation * (kernel_size - 1) - 1) / stride) + 1`` (``ceil`` with ``ceil_mode=True``,
        dropping a last window that would start in the right padding).
        With ``return_indices=True``, ``y`` is the pair ``(values, indices)`` (``indices``:
        ``int64``, same shape), as torch.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> MaxPool2d(2)(torch.ones(1, 3, 8, 8), {}, {})[0].shape
        torch.Size([1, 3, 4, 4])
    """

    ndim = 2


class MaxPool3d(_MaxPoolNd):
    """3-d max pooling: the maximum over each window (``torch.nn.MaxPool3d``).

    Arguments:
        kernel_size: the window's size: an int or a tuple of 3 ints (>= 1).
        stride: step between windows (int or 3-tuple, >= 1); ``None`` (default): the
            kernel size.
        padding: implicit ``-inf`` padding on both sides (int or 3-tuple, >= 0, at most
            half of the kernel size, as torch).
        dilation: spacing between window elements (int or 3-tuple, >= 1).
        return_indices: also return the flat index (within each input plane, as
            ``torch.nn.MaxUnpool3d`` expects) of every maximum.
        ceil_mode: round the output size up instead of down.

    Input:
        ``x`` of shape ``(N, C, D, H, W)``, or unbatched ``(C, D, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, D_out, H_out, W_out)`` (unbatched: ``(C, D_out, H_out, W_out)``) and
        the unchanged (empty) state. Per spatial dimension ``W_out = floor((W + 2 * padding -
        dilation * (kernel_size - 1) - 1) / stride) + 1`` (``ceil`` with ``ceil_mode=True``,
        dropping a last window that would start in the right padding).
        With ``return_indices=True``, ``y`` is the pair ``(values, indices)`` (``indices``:
        ``int64``, same shape), as torch.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> MaxPool3d(2)(torch.ones(1, 3, 8, 8, 8), {}, {})[0].shape
        torch.Size([1, 3, 4, 4, 4])
    """

    ndim = 3


class MaxUnpool1d(_MaxUnpoolNd):
    """1-d max unpooling (``torch.nn.MaxUnpool1d``): see :class:`MaxUnpool2d`.

    Arguments:
        kernel_size, stride, padding: those of the ``MaxPool1d`` to invert (an int or a
            1-tuple each; ``stride=None``: the kernel size).

    Input:
        ``(x, indices)`` or ``(x, indices, {"output_size": size})``: ``x`` of shape
        ``(N, C, L)`` or ``(C, L)``; ``indices`` (``int64``, the shape of ``x``) from
        ``MaxPool1d(..., return_indices=True)``.

    Returns:
        ``y`` of shape ``(N, C, L_out)`` (or ``(C, L_out)``), ``L_out = (L - 1) * stride
        - 2 * padding + kernel_size`` unless ``output_size`` is given, and the unchanged
        (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).
    """

    ndim = 1


class MaxUnpool2d(_MaxUnpoolNd):
    """2-d max unpooling, the partial inverse of max pooling (``torch.nn.MaxUnpool2d``).

    Scatters each value of ``x`` to the position ``indices`` gives within its output plane
    (``H_out * W_out`` positions, as ``MaxPool2d(..., return_indices=True)`` returns
    them); every other output element is zero. The gradient w.r.t. ``x`` gathers from
    the same positions; ``indices`` are integers (no gradient). After overlapping windows
    (``stride < kernel_size``) one maximum can be picked twice: that position is then
    written twice, and which write lands is unspecified (as torch).

    Arguments:
        kernel_size, stride, padding: those of the ``MaxPool2d`` to invert (an int or a
            2-tuple each; ``stride=None``: the kernel size; ``padding >= 0``).

    Input:
        ``(x, indices)`` or ``(x, indices, options)`` (DESIGN.md's call options):

        - ``x``: ``(N, C, H, W)`` or unbatched ``(C, H, W)``.
        - ``indices``: ``int64``, the shape of ``x``, each in ``[0, H_out * W_out)``.
        - ``options``: ``{"output_size": size}`` (torch's ``forward`` keyword): the
          output's spatial size ``(H_out, W_out)`` (or the full shape) when the default
          is ambiguous, e.g. after ``ceil_mode`` or an odd input size.

    Returns:
        ``y`` of shape ``(N, C, H_out, W_out)`` (unbatched ``(C, H_out, W_out)``), by
        default ``H_out = (H - 1) * stride - 2 * padding + kernel_size`` (likewise
        ``W_out``), and the unchanged (empty) state.

    Raises:
        ValueError: for an input of another form, an unknown call option, or indices of
            another shape or dtype (torch's checks). An index outside the output plane
            raises on the CPU (torch's check); CUDA kernels check it with a device-side
            assertion.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> pool, unpool = MaxPool2d(2, return_indices=True), MaxUnpool2d(2)
        >>> (y, i), _ = pool(torch.ones(1, 3, 8, 8), {}, {})
        >>> unpool((y, i), {}, {})[0].shape
        torch.Size([1, 3, 8, 8])
    """

    ndim = 2


class MaxUnpool3d(_MaxUnpoolNd):
    """3-d max unpooling (``torch.nn.MaxUnpool3d``): see :class:`MaxUnpool2d`.

    Arguments:
        kernel_size, stride, padding: those of the ``MaxPool3d`` to invert (an int or a
            3-tuple each; ``stride=None``: the kernel size).

    Input:
        ``(x, indices)`` or ``(x, indices, {"output_size": size})``: ``x`` of shape
        ``(N, C, D, H, W)`` or ``(C, D, H, W)``; ``indices`` (``int64``, the shape of
        ``x``) from ``MaxPool3d(..., return_indices=True)``.

    Returns:
        ``y`` of shape ``(N, C, D_out, H_out, W_out)`` (or unbatched), per dimension
        ``(size - 1) * stride - 2 * padding + kernel_size`` unless ``output_size`` is
        given, and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).
    """

    ndim = 3


class AvgPool1d(_AvgPoolNd):
    """1-d average pooling: the mean over each window (``torch.nn.AvgPool1d``).

    Arguments:
        kernel_size: the window's size: an int or a tuple of 1 ints (>= 1).
        stride: step between windows (int or 1-tuple, >= 1); ``None`` (default): the
            kernel size.
        padding: implicit zero padding on both sides (int or 1-tuple, >= 0, at most half
            of the kernel size, as torch).
        ceil_mode: round the output size up instead of down.
        count_include_pad: whether the zero padding counts in the divisor.

    Input:
        ``x`` of shape ``(N, C, L)``, or unbatched ``(C, L)``.

    Returns:
        ``y`` of shape ``(N, C, L_out)`` (unbatched: ``(C, L_out)``) and the
        unchanged (empty) state. Per spatial dimension ``L_out = floor((L + 2 * padding -
        dilation * (kernel_size - 1) - 1) / stride) + 1`` (``ceil`` with ``ceil_mode=True``,
        dropping a last window that would start in the right padding),
        with ``dilation = 1``.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> AvgPool1d(2)(torch.ones(1, 3, 8), {}, {})[0].shape
        torch.Size([1, 3, 4])
    """

    ndim = 1


class AvgPool2d(_AvgPoolDivisorNd):
    """2-d average pooling: the mean over each window (``torch.nn.AvgPool2d``).

    Arguments:
        kernel_size: the window's size: an int or a tuple of 2 ints (>= 1).
        stride: step between windows (int or 2-tuple, >= 1); ``None`` (default): the
            kernel size.
        padding: implicit zero padding on both sides (int or 2-tuple, >= 0, at most half
            of the kernel size, as torch).
        ceil_mode: round the output size up instead of down.
        count_include_pad: whether the zero padding counts in the divisor.
        divisor_override: if given (an int >= 1), divide every window's sum by it instead
            of by the window's size.

    Input:
        ``x`` of shape ``(N, C, H, W)``, or unbatched ``(C, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, H_out, W_out)`` (unbatched: ``(C, H_out, W_out)``) and the
        unchanged (empty) state. Per spatial dimension ``W_out = floor((W + 2 * padding -
        dilation * (kernel_size - 1) - 1) / stride) + 1`` (``ceil`` with ``ceil_mode=True``,
        dropping a last window that would start in the right padding),
        with ``dilation = 1``.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> AvgPool2d(2)(torch.ones(1, 3, 8, 8), {}, {})[0].shape
        torch.Size([1, 3, 4, 4])
    """

    ndim = 2


class AvgPool3d(_AvgPoolDivisorNd):
    """3-d average pooling: the mean over each window (``torch.nn.AvgPool3d``).

    Arguments:
        kernel_size: the window's size: an int or a tuple of 3 ints (>= 1).
        stride: step between windows (int or 3-tuple, >= 1); ``None`` (default): the
            kernel size.
        padding: implicit zero padding on both sides (int or 3-tuple, >= 0, at most half
            of the kernel size, as torch).
        ceil_mode: round the output size up instead of down.
        count_include_pad: whether the zero padding counts in the divisor.
        divisor_override: if given (an int >= 1), divide every window's sum by it instead
            of by the window's size.

    Input:
        ``x`` of shape ``(N, C, D, H, W)``, or unbatched ``(C, D, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, D_out, H_out, W_out)`` (unbatched: ``(C, D_out, H_out, W_out)``) and
        the unchanged (empty) state. Per spatial dimension ``W_out = floor((W + 2 * padding -
        dilation * (kernel_size - 1) - 1) / stride) + 1`` (``ceil`` with ``ceil_mode=True``,
        dropping a last window that would start in the right padding), with ``dilation = 1``.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> AvgPool3d(2)(torch.ones(1, 3, 8, 8, 8), {}, {})[0].shape
        torch.Size([1, 3, 4, 4, 4])
    """

    ndim = 3


class LPPool1d(_LPPoolNd):
    """1-d power-average pooling ``y = (sum over the window of x ** p) ** (1 / p)``
    (``torch.nn.LPPool1d``, ``p = norm_type``).

    ``p = 1`` is sum pooling, ``p = inf`` max pooling of ``|x|``. As in torch, ``x ** p`` is
    not ``|x| ** p``: a fractional ``p`` needs non-negative inputs (negative ones give NaN),
    and an odd ``p`` gives NaN where a window's sum is negative.

    Arguments:
        norm_type: the power ``p`` (an int or float > 0, or ``math.inf``).
        kernel_size: the window's size: an int or a tuple of 1 ints (>= 1).
        stride: step between windows (int or 1-tuple, >= 1); ``None`` (default): the
            kernel size.
        ceil_mode: round the output size up instead of down.

    Input:
        ``x`` of shape ``(N, C, L)``, or unbatched ``(C, L)``.

    Returns:
        ``y`` of shape ``(N, C, L_out)`` (unbatched: ``(C, L_out)``) and the
        unchanged (empty) state. Per spatial dimension ``L_out = floor((L + 2 * padding -
        dilation * (kernel_size - 1) - 1) / stride) + 1`` (``ceil`` with ``ceil_mode=True``,
        dropping a last window that would start in the right padding),
        with ``padding = 0`` and ``dilation = 1``.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> LPPool1d(2, 2)(torch.ones(1, 3, 8), {}, {})[0].shape
        torch.Size([1, 3, 4])
    """

    ndim = 1


class LPPool2d(_LPPoolNd):
    """2-d power-average pooling ``y = (sum over the window of x ** p) ** (1 / p)``
    (``torch.nn.LPPool2d``, ``p = norm_type``).

    ``p = 1`` is sum pooling, ``p = inf`` max pooling of ``|x|``. As in torch, ``x ** p`` is
    not ``|x| ** p``: a fractional ``p`` needs non-negative inputs (negative ones give NaN),
    and an odd ``p`` gives NaN where a window's sum is negative.

    Arguments:
        norm_type: the power ``p`` (an int or float > 0, or ``math.inf``).
        kernel_size: the window's size: an int or a tuple of 2 ints (>= 1).
        stride: step between windows (int or 2-tuple, >= 1); ``None`` (default): the
            kernel size.
        ceil_mode: round the output size up instead of down.

    Input:
        ``x`` of shape ``(N, C, H, W)``, or unbatched ``(C, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, H_out, W_out)`` (unbatched: ``(C, H_out, W_out)``) and the
        unchanged (empty) state. Per spatial dimension ``W_out = floor((W + 2 * padding -
        dilation * (kernel_size - 1) - 1) / stride) + 1`` (``ceil`` with ``ceil_mode=True``,
        dropping a last window that would start in the right padding),
        with ``padding = 0`` and ``dilation = 1``.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> LPPool2d(2, 2)(torch.ones(1, 3, 8, 8), {}, {})[0].shape
        torch.Size([1, 3, 4, 4])
    """

    ndim = 2


class LPPool3d(_LPPoolNd):
    """3-d power-average pooling ``y = (sum over the window of x ** p) ** (1 / p)``
    (``torch.nn.LPPool3d``, ``p = norm_type``).

    ``p = 1`` is sum pooling, ``p = inf`` max pooling of ``|x|``. As in torch, ``x ** p`` is
    not ``|x| ** p``: a fractional ``p`` needs non-negative inputs (negative ones give NaN),
    and an odd ``p`` gives NaN where a window's sum is negative.

    Arguments:
        norm_type: the power ``p`` (an int or float > 0, or ``math.inf``).
        kernel_size: the window's size: an int or a tuple of 3 ints (>= 1).
        stride: step between windows (int or 3-tuple, >= 1); ``None`` (default): the
            kernel size.
        ceil_mode: round the output size up instead of down.

    Input:
        ``x`` of shape ``(N, C, D, H, W)``, or unbatched ``(C, D, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, D_out, H_out, W_out)`` (unbatched: ``(C, D_out, H_out, W_out)``) and
        the unchanged (empty) state. Per spatial dimension ``W_out = floor((W + 2 * padding -
        dilation * (kernel_size - 1) - 1) / stride) + 1`` (``ceil`` with ``ceil_mode=True``,
        dropping a last window that would start in the right padding), with ``padding = 0`` and
        ``dilation = 1``.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> LPPool3d(2, 2)(torch.ones(1, 3, 8, 8, 8), {}, {})[0].shape
        torch.Size([1, 3, 4, 4, 4])
    """

    ndim = 3


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """1-d adaptive average pooling to a fixed output size (``torch.nn.AdaptiveAvgPool1d``).

    Whatever the input size, the output has ``output_size``; window ``i`` of a dimension of
    size ``L`` covers ``[floor(i * L / L_out), ceil((i + 1) * L / L_out))``.

    Arguments:
        output_size: the output's spatial size: an int (the same in every dimension) or a
            tuple of 1 entries, each an int >= 1 or ``None`` (keep the input's size in that
            dimension). (``torch.nn.AdaptiveAvgPool1d``/``AdaptiveMaxPool1d``
            do not accept ``None``; here it means the same as in 2-d and 3-d.)

    Input:
        ``x`` of shape ``(N, C, L)``, or unbatched ``(C, L)``.

    Returns:
        ``y`` of shape ``(N, C, L_out)`` (unbatched: ``(C, L_out)``) and the
        unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> AdaptiveAvgPool1d(4)(torch.ones(1, 3, 8), {}, {})[0].shape
        torch.Size([1, 3, 4])
    """

    ndim = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """2-d adaptive average pooling to a fixed output size (``torch.nn.AdaptiveAvgPool2d``).

    Whatever the input size, the output has ``output_size``; window ``i`` of a dimension of
    size ``W`` covers ``[floor(i * W / W_out), ceil((i + 1) * W / W_out))``.

    Arguments:
        output_size: the output's spatial size: an int (the same in every dimension) or a
            tuple of 2 entries, each an int >= 1 or ``None`` (keep the input's size in that
            dimension).

    Input:
        ``x`` of shape ``(N, C, H, W)``, or unbatched ``(C, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, H_out, W_out)`` (unbatched: ``(C, H_out, W_out)``) and the
        unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> AdaptiveAvgPool2d(4)(torch.ones(1, 3, 8, 8), {}, {})[0].shape
        torch.Size([1, 3, 4, 4])
    """

    ndim = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """3-d adaptive average pooling to a fixed output size (``torch.nn.AdaptiveAvgPool3d``).

    Whatever the input size, the output has ``output_size``; window ``i`` of a dimension of
    size ``W`` covers ``[floor(i * W / W_out), ceil((i + 1) * W / W_out))``.

    Arguments:
        output_size: the output's spatial size: an int (the same in every dimension) or a
            tuple of 3 entries, each an int >= 1 or ``None`` (keep the input's size in that
            dimension).

    Input:
        ``x`` of shape ``(N, C, D, H, W)``, or unbatched ``(C, D, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, D_out, H_out, W_out)`` (unbatched: ``(C, D_out, H_out, W_out)``) and
        the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> AdaptiveAvgPool3d(4)(torch.ones(1, 3, 8, 8, 8), {}, {})[0].shape
        torch.Size([1, 3, 4, 4, 4])
    """

    ndim = 3


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """1-d adaptive max pooling to a fixed output size (``torch.nn.AdaptiveMaxPool1d``).

    Whatever the input size, the output has ``output_size``; window ``i`` of a dimension of
    size ``L`` covers ``[floor(i * L / L_out), ceil((i + 1) * L / L_out))``.

    Arguments:
        output_size: the output's spatial size: an int (the same in every dimension) or a
            tuple of 1 entries, each an int >= 1 or ``None`` (keep the input's size in that
            dimension). (``torch.nn.AdaptiveAvgPool1d``/``AdaptiveMaxPool1d``
            do not accept ``None``; here it means the same as in 2-d and 3-d.)
        return_indices: also return the flat index (within each input plane) of every
            maximum.

    Input:
        ``x`` of shape ``(N, C, L)``, or unbatched ``(C, L)``.

    Returns:
        ``y`` of shape ``(N, C, L_out)`` (unbatched: ``(C, L_out)``) and the
        unchanged (empty) state.
        With ``return_indices=True``, ``y`` is the pair ``(values, indices)`` (``indices``:
        ``int64``, same shape), as torch.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> AdaptiveMaxPool1d(4)(torch.ones(1, 3, 8), {}, {})[0].shape
        torch.Size([1, 3, 4])
    """

    ndim = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """2-d adaptive max pooling to a fixed output size (``torch.nn.AdaptiveMaxPool2d``).

    Whatever the input size, the output has ``output_size``; window ``i`` of a dimension of
    size ``W`` covers ``[floor(i * W / W_out), ceil((i + 1) * W / W_out))``.

    Arguments:
        output_size: the output's spatial size: an int (the same in every dimension) or a
            tuple of 2 entries, each an int >= 1 or ``None`` (keep the input's size in that
            dimension).
        return_indices: also return the flat index (within each input plane) of every
            maximum.

    Input:
        ``x`` of shape ``(N, C, H, W)``, or unbatched ``(C, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, H_out, W_out)`` (unbatched: ``(C, H_out, W_out)``) and the
        unchanged (empty) state.
        With ``return_indices=True``, ``y`` is the pair ``(values, indices)`` (``indices``:
        ``int64``, same shape), as torch.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> AdaptiveMaxPool2d(4)(torch.ones(1, 3, 8, 8), {}, {})[0].shape
        torch.Size([1, 3, 4, 4])
    """

    ndim = 2


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """3-d adaptive max pooling to a fixed output size (``torch.nn.AdaptiveMaxPool3d``).

    Whatever the input size, the output has ``output_size``; window ``i`` of a dimension of
    size ``W`` covers ``[floor(i * W / W_out), ceil((i + 1) * W / W_out))``.

    Arguments:
        output_size: the output's spatial size: an int (the same in every dimension) or a
            tuple of 3 entries, each an int >= 1 or ``None`` (keep the input's size in that
            dimension).
        return_indices: also return the flat index (within each input plane) of every
            maximum.

    Input:
        ``x`` of shape ``(N, C, D, H, W)``, or unbatched ``(C, D, H, W)``.

    Returns:
        ``y`` of shape ``(N, C, D_out, H_out, W_out)`` (unbatched: ``(C, D_out, H_out, W_out)``) and
        the unchanged (empty) state.
        With ``return_indices=True``, ``y`` is the pair ``(values, indices)`` (``indices``:
        ``int64``, same shape), as torch.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> AdaptiveMaxPool3d(4)(torch.ones(1, 3, 8, 8, 8), {}, {})[0].shape
        torch.Size([1, 3, 4, 4, 4])
    """

    ndim = 3


class GlobalAvgPool(_GlobalPool):
    """Global average pooling over every spatial dimension (Lux's ``GlobalMeanPool``).

    ``y = x.mean(dim=(2, ..., x.ndim - 1), keepdim=True)``: any number of spatial
    dimensions, each reduced to size 1 and kept (as Lux), so ``y`` has the input's rank; follow
    with :class:`~lux_torch.Flatten` for ``(N, C)``. On a 4-d input it equals
    ``AdaptiveAvgPool2d(1)``.

    Unbatched input is not accepted: without a fixed number of spatial dimensions an
    unbatched ``(C, H, W)`` cannot be told apart from a batched ``(N, C, L)`` (use ``x[None]``).

    Input:
        ``x`` of shape ``(N, C, *spatial)`` with at least one spatial dimension.

    Returns:
        ``y`` of shape ``(N, C, 1, ..., 1)`` (one 1 per spatial dimension) and the unchanged
        (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> GlobalAvgPool()(torch.ones(2, 3, 8, 8), {}, {})[0].shape
        torch.Size([2, 3, 1, 1])
    """

    def _reduce(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return x.mean(dim=dims, keepdim=True)


class GlobalMaxPool(_GlobalPool):
    """Global max pooling over every spatial dimension (Lux's ``GlobalMaxPool``).

    ``y = x.amax(dim=(2, ..., x.ndim - 1), keepdim=True)``: any number of spatial
    dimensions, each reduced to size 1 and kept (as Lux), so ``y`` has the input's rank; follow
    with :class:`~lux_torch.Flatten` for ``(N, C)``. On a 4-d input it equals
    ``AdaptiveMaxPool2d(1)`` (except for the gradient at
    ties: ``amax`` shares it equally among the maxima, max pooling gives it to one).

    Unbatched input is not accepted: without a fixed number of spatial dimensions an
    unbatched ``(C, H, W)`` cannot be told apart from a batched ``(N, C, L)`` (use ``x[None]``).

    Input:
        ``x`` of shape ``(N, C, *spatial)`` with at least one spatial dimension.

    Returns:
        ``y`` of shape ``(N, C, 1, ..., 1)`` (one 1 per spatial dimension) and the unchanged
        (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> GlobalMaxPool()(torch.ones(2, 3, 8, 8), {}, {})[0].shape
        torch.Size([2, 3, 1, 1])
    """

    def _reduce(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return x.amax(dim=dims, keepdim=True)
