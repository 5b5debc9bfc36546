"""Helpers shared by the layer families: configuration checks, input checks and the short
descriptions that error messages and printouts use.

One home for what several ``layers/`` files need, so that no file imports another's private
names. Every check raises (or returns the problem as a string for the caller to raise with
the layer's path) with a message that names the layer, the argument and what came.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any, cast

import torch

from ..core import Layer, describe_config, describe_value

__all__ = [
    "SPATIAL",
    "TORCH_FAST_PATH",
    "TORCH_INPLACE",
    "TORCH_PLACEMENT",
    "TORCH_PLACEMENT_AND_WEIGHT",
    "activate",
    "affine_repr",
    "as_ints",
    "check_affine",
    "check_bool",
    "check_callable",
    "check_int",
    "compact",
    "describe_shape",
    "describe_value",
    "not_a_tensor",
    "ntuple",
    "options_problem",
    "spatial_shapes",
]

Activation = Callable[[torch.Tensor], torch.Tensor]

#: the names of the spatial dimensions of an ``n``-d input (``(N, C, *SPATIAL[n])``)
SPATIAL = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


# --------------------------------------------------------------------------- configuration


def check_int(owner: str, name: str, value: Any, minimum: int | None = 0) -> int:
    """Validate an integer configuration value at construction (``bool`` is rejected)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return value


def check_bool(owner: str, name: str, value: Any) -> bool:
    """Validate a ``bool`` configuration value (an int such as ``1`` is rejected)."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be a bool, got {type(value).__name__}")
    return value


def check_callable(owner: str, name: str, value: Any) -> None:
    """Validate an optional function-valued configuration value (activation, initializer)."""
    if value is not None and not callable(value):
        raise TypeError(f"{owner}: {name} must be callable or None, got {type(value).__name__}")
    if isinstance(value, (Layer, torch.nn.Module)):
        raise TypeError(
            f"{owner}: {name} must be a plain function (e.g. torch.relu), got the "
            f"layer/module {type(value).__name__}; compose layers with Chain instead"
        )


def check_affine(owner: str, layer: Any) -> None:
    """The fields of an affine layer: ``bias`` a bool, ``activation``, ``weight_init`` and
    ``bias_init`` functions or ``None``."""
    if not isinstance(layer.bias, bool):
        raise TypeError(f"{owner}: bias must be a bool, got {type(layer.bias).__name__}")
    for name in ("activation", "weight_init", "bias_init"):
        check_callable(owner, name, getattr(layer, name))


def ntuple(owner: str, name: str, value: Any, n: int, minimum: int) -> tuple[int, ...]:
    """``value`` (an int or a tuple of ``n`` ints, each ``>= minimum``) as an ``n``-tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(
                f"{owner}: {name} must be an int or a tuple of {n} ints, got {tuple(value)!r} "
                f"({len(value)} values)"
            )
        return tuple(check_int(owner, name, v, minimum) for v in value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{owner}: {name} must be an int or a tuple of {n} ints, got {type(value).__name__}"
        )
    return (check_int(owner, name, value, minimum),) * n


def as_ints(value: Any) -> tuple[int, ...]:
    """A normalised tuple field (``__post_init__`` stores tuples) with its precise type."""
    return cast(tuple[int, ...], value)


# --------------------------------------------------------------------------- call inputs


def not_a_tensor(x: Any) -> str | None:
    """``"expected a Tensor, got <type>"`` unless ``x`` is a tensor."""
    if isinstance(x, torch.Tensor):
        return None
    return f"expected a Tensor, got {type(x).__name__}"


def options_problem(
    options: dict[Any, Any],
    accepted: tuple[str, ...],
    flags: tuple[str, ...],
    fields: dict[str, str] | None = None,
) -> str | None:
    """Why a dict of call options is invalid, or ``None``.

    Arguments:
        options: the dict that ended the input tuple.
        accepted: the option names (torch's keyword arguments of ``forward``).
        flags: the names among ``accepted`` whose value must be a ``bool`` (or ``None``).
        fields: options that are configuration here, mapped to the advice to give.
    """
    for name, value in options.items():
        if fields and name in fields:
            return f"{name!r} is not a call option: {fields[name]}"
        if name not in accepted:
            return (
                f"unknown call option {name!r}; the options dict accepts "
                f"{', '.join(repr(a) for a in accepted)}"
            )
        if name in flags and value is not None and not isinstance(value, bool):
            return f"call option {name!r} must be a bool, got {describe_value(value)}"
    return None


# --------------------------------------------------------------------------- descriptions


def describe_shape(value: Any) -> str:
    """``"a tensor of shape (...)"`` for a tensor, else the type's name (errors about
    shapes, where the dtype is beside the point)."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def spatial_shapes(n: int, channels: str = "C") -> str:
    """``"(N, C, H, W) or (C, H, W)"``: the batched and unbatched input shapes of an ``n``-d
    layer (``channels`` names the channel dimension, e.g. ``"C_in=3"``)."""
    spatial = ", ".join(SPATIAL[n])
    return f"(N, {channels}, {spatial}) or ({channels}, {spatial})"


def compact(value: tuple[int, ...]) -> str:
    """``2`` for ``(2, 2)``, ``(2, 1)`` otherwise: the printout of stride, padding, ..."""
    return str(value[0]) if len(set(value)) == 1 else str(value)


def changed_options(layer: Any, defaults: tuple[tuple[str, Any], ...]) -> list[str]:
    """``["name=value", ...]`` for the ``(name, default)`` options whose value in ``layer``
    differs from the default: the tail of a printout."""
    return [
        f"{name}={getattr(layer, name)}"
        for name, default in defaults
        if getattr(layer, name) != default
    ]


def affine_repr(head: str, layer: Any) -> str:
    """``"2 => 16, tanh, bias=False, weight_init=..."``: the shared printout of affine layers."""
    parts = [head]
    if layer.activation is not None:
        parts.append(describe_config(layer.activation))
    if not layer.bias:
        parts.append("bias=False")
    for name in ("weight_init", "bias_init"):
        value = getattr(layer, name)
        if value is not None:
            parts.append(f"{name}={describe_config(value)}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- maths


def activate(activation: Activation | None, y: torch.Tensor) -> torch.Tensor:
    """``activation(y)``, or ``y`` when there is no activation."""
    return y if activation is None else activation(y)


# --------------------------------------------------------------------------- torch-only arguments


def refuse_tensor_argument(layer: str, name: str, value: Any) -> None:
    """torch.nn's ``device=``/``dtype=``/``_weight=``: only ``None`` (a layer holds no tensors)."""
    if value is None:
        return
    if name == "_weight":
        raise ValueError(
            f"{layer}: _weight is not supported: a layer holds configuration only, never "
            "tensors; put the tensor in ps instead (or load it with lux_torch.load_state_dict)"
        )
    raise ValueError(
        f"{layer}: {name}={value!r} is not supported: a layer holds configuration only, never "
        f"tensors; create its tensors with lux_torch.setup(key, model, {name}=...)"
    )


def ignore_flag(layer: str, name: str, value: Any) -> None:
    """A torch.nn flag with no effect on the result here (``inplace``, fast-path switches)."""
    check_bool(layer, name, value)


#: ``device``/``dtype`` of torch.nn's constructors: ``None`` only (see ``Layer.constructor_only``)
TORCH_PLACEMENT = MappingProxyType(
    {"device": refuse_tensor_argument, "dtype": refuse_tensor_argument}
)
#: the same and ``_weight`` (``Embedding``-like layers): ``None`` only
TORCH_PLACEMENT_AND_WEIGHT = MappingProxyType(
    {**TORCH_PLACEMENT, "_weight": refuse_tensor_argument}
)
#: ``inplace`` of torch.nn's dropout family: accepted and ignored (a pure layer never mutates)
TORCH_INPLACE = MappingProxyType({"inplace": ignore_flag})
#: ``TransformerEncoder``'s inference fast-path switches: accepted and ignored (same results)
TORCH_FAST_PATH = MappingProxyType({"enable_nested_tensor": ignore_flag, "mask_check": ignore_flag})
