"""Convolutions: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` (``torch.nn``'s, plus Lux's
``activation=``).

One implementation serves every case: :class:`ConvNd` is parameterised by the number of
spatial dimensions (the class variable ``ndim``), :class:`ConvTransposeNd` changes what a
transposed convolution changes (``output_padding``, the weight layout, the functional call),
and the public classes only fix ``ndim``. Constructor arguments, parameter names and shapes
follow ``torch.nn`` (so flattened ``ps`` names match ``state_dict`` names); default
initialisation reproduces ``torch.nn``'s distributions, drawn from the explicit key.

Arguments after ``padding`` (``output_padding`` for transposed convolutions) are
keyword-only: ``torch.nn`` orders them differently in the two families
(``dilation, groups, ...`` against ``output_padding, groups, bias, dilation, ...``), and a
positional call that torch reads one way must never be read another way here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..core import Layer, State
from ._common import (
    SPATIAL,
    TORCH_PLACEMENT,
    activate,
    affine_repr,
    as_ints,
    check_affine,
    check_int,
    compact,
    not_a_tensor,
    ntuple,
    spatial_shapes,
)
from .basic import Activation, Initializer, Params, affine_params

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
]

#: an int or ``n`` ints, as a tuple or a list (stored as a tuple)
IntOrTuple = int | tuple[int, ...] | list[int]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
#: torch.nn's defaults of the options that the printout shows only when they differ
_DEFAULTS: dict[str, Any] = {
    "stride": 1,
    "padding": 0,
    "output_padding": 0,
    "dilation": 1,
    "groups": 1,
    "padding_mode": "zeros",
}
_CONV_TRANSPOSE: dict[int, Callable[..., torch.Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- convolution


class ConvNd(Layer):
    """The convolution of ``ndim`` spatial dimensions (see :class:`Conv2d` for the docs)."""

    constructor_only = TORCH_PLACEMENT  # torch.nn's arguments, not stored

    ndim: ClassVar[int]
    _shown: ClassVar[tuple[str, ...]] = ("stride", "padding", "dilation", "groups", "padding_mode")

    in_channels: int
    out_channels: int
    kernel_size: IntOrTuple
    stride: IntOrTuple = 1
    padding: IntOrTuple | str = 0
    _: KW_ONLY
    dilation: IntOrTuple = 1
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"
    activation: Activation | None = None
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None

    # -- construction
    def __post_init__(self) -> None:
        self._set_fields(**self._validated(type(self).__name__))

    def _validated(self, owner: str) -> dict[str, Any]:
        """Check the configuration; return the normalised tuple-valued fields."""
        n = self.ndim
        check_int(owner, "in_channels", self.in_channels)
        check_int(owner, "out_channels", self.out_channels)
        groups = check_int(owner, "groups", self.groups, minimum=1)
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) % groups:
                raise ValueError(
                    f"{owner}: {name} must be divisible by groups, got "
                    f"{name}={getattr(self, name)} and groups={groups}"
                )
        fields = {
            "kernel_size": ntuple(owner, "kernel_size", self.kernel_size, n, 1),
            "stride": ntuple(owner, "stride", self.stride, n, 1),
            "dilation": ntuple(owner, "dilation", self.dilation, n, 1),
        }
        if isinstance(self.padding, str):
            if self.padding not in ("same", "valid"):
                raise ValueError(
                    f"{owner}: padding must be an int, a tuple of {n} ints, 'same' or "
                    f"'valid', got {self.padding!r}"
                )
            if self.padding == "same" and any(s != 1 for s in fields["stride"]):
                raise ValueError(
                    f"{owner}: padding='same' is not supported for strided convolutions "
                    f"(as in torch), got stride={fields['stride']}"
                )
        else:
            fields["padding"] = ntuple(owner, "padding", self.padding, n, 0)
        if self.padding_mode not in _PADDING_MODES:
            modes = ", ".join(map(repr, _PADDING_MODES))
            raise ValueError(
                f"{owner}: padding_mode must be one of {modes}, got {self.padding_mode!r}"
            )
        check_affine(owner, self)
        return fields

    # -- parameters
    def _weight_shape(self) -> tuple[int, ...]:
        """``(out_channels, in_channels // groups, *kernel_size)``, as ``torch.nn``."""
        return (self.out_channels, self.in_channels // self.groups, *as_ints(self.kernel_size))

    def init_params(self, key: torch.Tensor) -> Params:
        shape = self._weight_shape()
        fan_in = math.prod(shape[1:])  # torch.nn.init's fan_in: weight.size(1) * kernel
        return affine_params(self, key, shape, fan_in, self.out_channels)

    # -- forward
    def _pad_amounts(self) -> list[tuple[int, int]]:
        """``(before, after)`` padding per spatial dimension (``'same'``: as torch.nn)."""
        if self.padding == "valid":
            return [(0, 0)] * self.ndim
        if self.padding == "same":
            totals = [
                d * (k - 1)
                for d, k in zip(as_ints(self.dilation), as_ints(self.kernel_size), strict=True)
            ]
            return [(t // 2, t - t // 2) for t in totals]
        return [(p, p) for p in as_ints(self.padding)]

    def _conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        conv = _CONV[self.ndim]
        if self.padding_mode == "zeros":
            return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        # F.pad takes the last dimension first
        pad = [p for before_after in reversed(self._pad_amounts()) for p in before_after]
        if any(pad):
            x = F.pad(x, pad, mode=self.padding_mode)
        return conv(x, weight, bias, self.stride, 0, self.dilation, self.groups)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        y = self._conv(x, ps["weight"], ps["bias"] if self.bias else None)
        return activate(self.activation, y), st

    # -- display and errors
    def extra_repr(self) -> str:
        parts = [f"{self.in_channels} => {self.out_channels}", str(as_ints(self.kernel_size))]
        for name in self._shown:  # the options that differ from torch.nn's defaults
            value, default = getattr(self, name), _DEFAULTS[name]
            if isinstance(value, tuple):
                if any(v != default for v in value):
                    parts.append(f"{name}={compact(value)}")
            elif value != default:
                parts.append(f"{name}={value!r}")
        return affine_repr(", ".join(parts), self)

    def _min_spatial(self) -> tuple[int, ...]:
        """The smallest input size per spatial dimension that the layer accepts."""
        out = []
        for (before, after), k, d in zip(
            self._pad_amounts(), as_ints(self.kernel_size), as_ints(self.dilation), strict=True
        ):
            smallest = max(1, d * (k - 1) + 1 - before - after)
            if self.padding_mode == "reflect":
                smallest = max(smallest, before + 1, after + 1)
            elif self.padding_mode == "circular":
                smallest = max(smallest, before, after)
            out.append(smallest)
        return tuple(out)

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem:
            return problem
        n = self.ndim
        expected = f"expected input of shape {spatial_shapes(n, f'C_in={self.in_channels}')}"
        if x.ndim not in (n + 1, n + 2) or x.shape[-n - 1] != self.in_channels:
            return f"{expected}, got {tuple(x.shape)}"
        smallest = self._min_spatial()
        if any(s < m for s, m in zip(x.shape[-n:], smallest, strict=True)):
            return (
                f"{expected} with ({', '.join(SPATIAL[n])}) >= {smallest} (for this kernel size, "
                f"dilation and padding), got {tuple(x.shape)}"
            )
        return None


class ConvTransposeNd(ConvNd):
    """The transposed convolution of ``ndim`` spatial dimensions (docs: ConvTranspose2d)."""

    _shown: ClassVar[tuple[str, ...]] = (
        "stride",
        "padding",
        "output_padding",
        "dilation",
        "groups",
    )

    output_padding: IntOrTuple = 0

    def _validated(self, owner: str) -> dict[str, Any]:
        n = self.ndim
        if isinstance(self.padding, str):
            raise ValueError(
                f"{owner}: padding must be an int or a tuple of {n} ints (string padding is "
                f"not supported for transposed convolutions, as in torch), got {self.padding!r}"
            )
        if self.padding_mode != "zeros":
            raise ValueError(
                f"{owner}: only padding_mode='zeros' is supported for transposed "
                f"convolutions (as in torch), got {self.padding_mode!r}"
            )
        fields = super()._validated(owner)
        output_padding = ntuple(owner, "output_padding", self.output_padding, n, 0)
        for op, s, d in zip(output_padding, fields["stride"], fields["dilation"], strict=True):
            if op >= s and op >= d:
                raise ValueError(
                    f"{owner}: output_padding must be smaller than either stride or dilation "
                    f"in each dimension, got output_padding={output_padding}, "
                    f"stride={fields['stride']}, dilation={fields['dilation']}"
                )
        return {**fields, "output_padding": output_padding}

    def _weight_shape(self) -> tuple[int, ...]:
        """``(in_channels, out_channels // groups, *kernel_size)``, as ``torch.nn``."""
        return (self.in_channels, self.out_channels // self.groups, *as_ints(self.kernel_size))

    def _conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        conv = _CONV_TRANSPOSE[self.ndim]
        return conv(
            x,
            weight,
            bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )

    def _min_spatial(self) -> tuple[int, ...]:
        return (1,) * self.ndim


# --------------------------------------------------------------------------- public classes


class Conv1d(ConvNd):
    """1-d convolution ``y = activation(conv1d(x, weight) + bias)``
    (``torch.nn.Conv1d`` plus Lux's activation).

    Arguments:
        in_channels: channels of the input, ``C_in``.
        out_channels: channels of the output, ``C_out``.
        kernel_size: the kernel's spatial size: an int or a tuple of 1 ints (>= 1).
        stride: step between kernel positions (int or 1-tuple, >= 1).
        padding: implicit padding added on both sides (int or 1-tuple, >= 0), or
            ``"valid"`` (none) or ``"same"`` (output size = input size; needs ``stride=1``;
            any odd remainder goes to the end, as in torch).

    Keyword Arguments:
        dilation: spacing between kernel elements (int or 1-tuple, >= 1).
        groups: split the channels into this many independent groups (``in_channels`` and
            ``out_channels`` must both be divisible by it).
        bias: whether to add a learnable bias.
        padding_mode: what the padding holds: ``"zeros"``, ``"reflect"``, ``"replicate"`` or
            ``"circular"`` (the last three pad with :func:`torch.nn.functional.pad`, as torch).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).
        weight_init: ``f(key, *weight_shape) -> Tensor``; default torch.nn's
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
            ``fan_in = in_channels // groups * prod(kernel_size)``.
        bias_init: ``f(key, out_channels) -> Tensor``; default as torch.nn (same bound).

    Input:
        ``x`` of shape ``(N, C_in, L)``, or unbatched ``(C_in, L)``.

    Returns:
        ``y`` of shape ``(N, C_out, L_out)`` (unbatched: ``(C_out, L_out)``), where
        per spatial dimension ``L_out = floor((L + 2 * padding - dilation * (kernel_size - 1)
        - 1) / stride) + 1``, and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``(out_channels, in_channels // groups, *kernel_size)``
        - ``bias``: ``(out_channels,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = Conv1d(3, 16, 3, padding=1, activation=torch.relu)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.ones(4, 3, 8), ps, st)  # doctest: +SKIP
    """

    ndim = 1


class Conv2d(ConvNd):
    """2-d convolution ``y = activation(conv2d(x, weight) + bias)``
    (``torch.nn.Conv2d`` plus Lux's activation).

    Arguments:
        in_channels: channels of the input, ``C_in``.
        out_channels: channels of the output, ``C_out``.
        kernel_size: the kernel's spatial size: an int or a tuple of 2 ints (>= 1).
        stride: step between kernel positions (int or 2-tuple, >= 1).
        padding: implicit padding added on both sides (int or 2-tuple, >= 0), or
            ``"valid"`` (none) or ``"same"`` (output size = input size; needs ``stride=1``;
            any odd remainder goes to the end, as in torch).

    Keyword Arguments:
        dilation: spacing between kernel elements (int or 2-tuple, >= 1).
        groups: split the channels into this many independent groups (``in_channels`` and
            ``out_channels`` must both be divisible by it).
        bias: whether to add a learnable bias.
        padding_mode: what the padding holds: ``"zeros"``, ``"reflect"``, ``"replicate"`` or
            ``"circular"`` (the last three pad with :func:`torch.nn.functional.pad`, as torch).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).
        weight_init: ``f(key, *weight_shape) -> Tensor``; default torch.nn's
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
            ``fan_in = in_channels // groups * prod(kernel_size)``.
        bias_init: ``f(key, out_channels) -> Tensor``; default as torch.nn (same bound).

    Input:
        ``x`` of shape ``(N, C_in, H, W)``, or unbatched ``(C_in, H, W)``.

    Returns:
        ``y`` of shape ``(N, C_out, H_out, W_out)`` (unbatched: ``(C_out, H_out, W_out)``), where
        per spatial dimension ``W_out = floor((W + 2 * padding - dilation * (kernel_size - 1)
        - 1) / stride) + 1``, and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``(out_channels, in_channels // groups, *kernel_size)``
        - ``bias``: ``(out_channels,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = Conv2d(3, 16, 3, padding=1, activation=torch.relu)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.ones(4, 3, 8, 8), ps, st)  # doctest: +SKIP
    """

    ndim = 2


class Conv3d(ConvNd):
    """3-d convolution ``y = activation(conv3d(x, weight) + bias)``
    (``torch.nn.Conv3d`` plus Lux's activation).

    Arguments:
        in_channels: channels of the input, ``C_in``.
        out_channels: channels of the output, ``C_out``.
        kernel_size: the kernel's spatial size: an int or a tuple of 3 ints (>= 1).
        stride: step between kernel positions (int or 3-tuple, >= 1).
        padding: implicit padding added on both sides (int or 3-tuple, >= 0), or
            ``"valid"`` (none) or ``"same"`` (output size = input size; needs ``stride=1``;
            any odd remainder goes to the end, as in torch).

    Keyword Arguments:
        dilation: spacing between kernel elements (int or 3-tuple, >= 1).
        groups: split the channels into this many independent groups (``in_channels`` and
            ``out_channels`` must both be divisible by it).
        bias: whether to add a learnable bias.
        padding_mode: what the padding holds: ``"zeros"``, ``"reflect"``, ``"replicate"`` or
            ``"circular"`` (the last three pad with :func:`torch.nn.functional.pad`, as torch).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).
        weight_init: ``f(key, *weight_shape) -> Tensor``; default torch.nn's
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
            ``fan_in = in_channels // groups * prod(kernel_size)``.
        bias_init: ``f(key, out_channels) -> Tensor``; default as torch.nn (same bound).

    Input:
        ``x`` of shape ``(N, C_in, D, H, W)``, or unbatched ``(C_in, D, H, W)``.

    Returns:
        ``y`` of shape ``(N, C_out, D_out, H_out, W_out)`` (unbatched: ``(C_out, D_out, H_out,
        W_out)``), where per spatial dimension ``W_out = floor((W + 2 * padding - dilation *
        (kernel_size - 1)
        - 1) / stride) + 1``, and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``(out_channels, in_channels // groups, *kernel_size)``
        - ``bias``: ``(out_channels,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = Conv3d(3, 16, 3, padding=1, activation=torch.relu)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.ones(4, 3, 8, 8, 8), ps, st)  # doctest: +SKIP
    """

    ndim = 3


class ConvTranspose1d(ConvTransposeNd):
    """1-d transposed convolution (the gradient of ``conv1d`` with
    respect to its input, a "deconvolution"): ``torch.nn.ConvTranspose1d`` plus Lux's activation.

    Arguments:
        in_channels: channels of the input, ``C_in``.
        out_channels: channels of the output, ``C_out``.
        kernel_size: the kernel's spatial size: an int or a tuple of 1 ints (>= 1).
        stride: upsampling factor (int or 1-tuple, >= 1).
        padding: ``dilation * (kernel_size - 1) - padding`` zeros are added to both sides of
            the input (int or 1-tuple, >= 0), so that a ``Conv1d`` and a
            ``ConvTranspose1d`` with the same arguments invert each other's shapes.
        output_padding: extra size added to one side of the output (int or 1-tuple; each
            must be smaller than the stride or the dilation of its dimension).

    Keyword Arguments:
        groups: split the channels into this many independent groups (``in_channels`` and
            ``out_channels`` must both be divisible by it).
        bias: whether to add a learnable bias.
        dilation: spacing between kernel elements (int or 1-tuple, >= 1).
        padding_mode: only ``"zeros"`` (as in torch).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).
        weight_init: ``f(key, *weight_shape) -> Tensor``; default torch.nn's
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
            ``fan_in = out_channels // groups * prod(kernel_size)`` (torch computes the fan
            from the weight's second dimension).
        bias_init: ``f(key, out_channels) -> Tensor``; default as torch.nn (same bound).

    Input:
        ``x`` of shape ``(N, C_in, L)``, or unbatched ``(C_in, L)``.

    Returns:
        ``y`` of shape ``(N, C_out, L_out)`` (unbatched: ``(C_out, L_out)``), where
        per spatial dimension ``L_out = (L - 1) * stride - 2 * padding + dilation *
        (kernel_size - 1) + output_padding + 1``, and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``(in_channels, out_channels // groups, *kernel_size)``
        - ``bias``: ``(out_channels,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = ConvTranspose1d(16, 3, 3, stride=2, padding=1, output_padding=1)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.ones(4, 16, 8), ps, st)  # doctest: +SKIP
    """

    ndim = 1


class ConvTranspose2d(ConvTransposeNd):
    """2-d transposed convolution (the gradient of ``conv2d`` with
    respect to its input, a "deconvolution"): ``torch.nn.ConvTranspose2d`` plus Lux's activation.

    Arguments:
        in_channels: channels of the input, ``C_in``.
        out_channels: channels of the output, ``C_out``.
        kernel_size: the kernel's spatial size: an int or a tuple of 2 ints (>= 1).
        stride: upsampling factor (int or 2-tuple, >= 1).
        padding: ``dilation * (kernel_size - 1) - padding`` zeros are added to both sides of
            the input (int or 2-tuple, >= 0), so that a ``Conv2d`` and a
            ``ConvTranspose2d`` with the same arguments invert each other's shapes.
        output_padding: extra size added to one side of the output (int or 2-tuple; each
            must be smaller than the stride or the dilation of its dimension).

    Keyword Arguments:
        groups: split the channels into this many independent groups (``in_channels`` and
            ``out_channels`` must both be divisible by it).
        bias: whether to add a learnable bias.
        dilation: spacing between kernel elements (int or 2-tuple, >= 1).
        padding_mode: only ``"zeros"`` (as in torch).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).
        weight_init: ``f(key, *weight_shape) -> Tensor``; default torch.nn's
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
            ``fan_in = out_channels // groups * prod(kernel_size)`` (torch computes the fan
            from the weight's second dimension).
        bias_init: ``f(key, out_channels) -> Tensor``; default as torch.nn (same bound).

    Input:
        ``x`` of shape ``(N, C_in, H, W)``, or unbatched ``(C_in, H, W)``.

    Returns:
        ``y`` of shape ``(N, C_out, H_out, W_out)`` (unbatched: ``(C_out, H_out, W_out)``), where
        per spatial dimension ``W_out = (W - 1) * stride - 2 * padding + dilation *
        (kernel_size - 1) + output_padding + 1``, and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``(in_channels, out_channels // groups, *kernel_size)``
        - ``bias``: ``(out_channels,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = ConvTranspose2d(16, 3, 3, stride=2, padding=1, output_padding=1)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.ones(4, 16, 8, 8), ps, st)  # doctest: +SKIP
    """

    ndim = 2


class ConvTranspose3d(ConvTransposeNd):
    """3-d transposed convolution (the gradient of ``conv3d`` with
    respect to its input, a "deconvolution"): ``torch.nn.ConvTranspose3d`` plus Lux's activation.

    Arguments:
        in_channels: channels of the input, ``C_in``.
        out_channels: channels of the output, ``C_out``.
        kernel_size: the kernel's spatial size: an int or a tuple of 3 ints (>= 1).
        stride: upsampling factor (int or 3-tuple, >= 1).
        padding: ``dilation * (kernel_size - 1) - padding`` zeros are added to both sides of
            the input (int or 3-tuple, >= 0), so that a ``Conv3d`` and a
            ``ConvTranspose3d`` with the same arguments invert each other's shapes.
        output_padding: extra size added to one side of the output (int or 3-tuple; each
            must be smaller than the stride or the dilation of its dimension).

    Keyword Arguments:
        groups: split the channels into this many independent groups (``in_channels`` and
            ``out_channels`` must both be divisible by it).
        bias: whether to add a learnable bias.
        dilation: spacing between kernel elements (int or 3-tuple, >= 1).
        padding_mode: only ``"zeros"`` (as in torch).
        activation: function applied elementwise to the output (e.g. ``torch.relu``).
        weight_init: ``f(key, *weight_shape) -> Tensor``; default torch.nn's
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
            ``fan_in = out_channels // groups * prod(kernel_size)`` (torch computes the fan
            from the weight's second dimension).
        bias_init: ``f(key, out_channels) -> Tensor``; default as torch.nn (same bound).

    Input:
        ``x`` of shape ``(N, C_in, D, H, W)``, or unbatched ``(C_in, D, H, W)``.

    Returns:
        ``y`` of shape ``(N, C_out, D_out, H_out, W_out)`` (unbatched: ``(C_out, D_out, H_out,
        W_out)``), where per spatial dimension ``W_out = (W - 1) * stride - 2 * padding + dilation *
        (kernel_size - 1) + output_padding + 1``, and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``(in_channels, out_channels // groups, *kernel_size)``
        - ``bias``: ``(out_channels,)`` (only when ``bias=True``)

    **States**
        None (``{}``).

    Example:
        >>> layer = ConvTranspose3d(16, 3, 3, stride=2, padding=1, output_padding=1)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.ones(4, 16, 8, 8, 8), ps, st)  # doctest: +SKIP
    """

    ndim = 3
