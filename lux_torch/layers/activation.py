"""Activation layers: every ``torch.nn`` activation module as a pure layer.

Each parameter-free activation is a thin subclass of :class:`_Activation` that names its
:mod:`torch.nn.functional` function and declares ``torch.nn``'s constructor arguments as
fields; every field is passed to the function as the keyword of the same name, so a
layer is exactly ``function(x, **fields)``. Names, arguments, defaults and printouts
follow ``torch.nn`` (``LeakyReLU(negative_slope=0.01)``).

``inplace=`` (ReLU, ELU, ...) is accepted for compatibility and **ignored**: a pure layer
never mutates its input, so the result is always a new tensor (the same values torch's
in-place variant computes). It is not stored: ``ReLU(inplace=True) == ReLU()``.

Unless a class says otherwise:

- Input: ``x`` of any shape (the softmax family and ``GLU`` along ``dim``).
- Returns: ``y`` of the same shape as ``x`` and the unchanged (empty) state.
- **Parameters**: none (``{}``). **States**: none (``{}``).

``PReLU`` holds a learnable slope in ``ps["weight"]``; ``RReLU`` draws random slopes in
training mode from ``st["key"]`` (the :class:`lux_torch.Dropout` discipline).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import InitVar
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .. import init
from .. import random as lrandom
from ..core import Layer, State
from ..tree import Static
from ._common import check_int, not_a_tensor

__all__ = [
    "CELU",
    "ELU",
    "GELU",
    "GLU",
    "SELU",
    "Hardshrink",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "LeakyReLU",
    "LogSigmoid",
    "LogSoftmax",
    "Mish",
    "PReLU",
    "RReLU",
    "ReLU",
    "ReLU6",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softmax2d",
    "Softmin",
    "Softplus",
    "Softshrink",
    "Softsign",
    "Tanh",
    "Tanhshrink",
    "Threshold",
]

Params = dict[str, torch.Tensor]


def _number(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__}")
    return value


def _check_inplace(owner: str, inplace: Any) -> None:
    if not isinstance(inplace, bool):
        raise TypeError(f"{owner}: inplace must be a bool, got {type(inplace).__name__}")


def _check_dim(owner: str, dim: Any, optional: bool = False) -> None:
    if dim is None and optional:
        return
    check_int(owner, "dim", dim, minimum=None)


class _Activation(Layer):
    """``function(x, **fields)``: the shared machinery of the parameter-free activations.

    Subclasses set ``function`` (a :mod:`torch.nn.functional` function whose keyword
    arguments are named like the subclass's fields) and validate their fields in
    ``_validate``; an ``inplace`` init-only argument is checked and dropped here.
    """

    function: ClassVar[Callable[..., torch.Tensor]]

    def __post_init__(self, inplace: bool = False) -> None:
        _check_inplace(type(self).__name__, inplace)
        self._validate()

    def _validate(self) -> None:
        """Check the fields at construction (raise ``TypeError``/``ValueError``)."""

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return type(self).function(x, **options), st

    def extra_repr(self) -> str:
        # torch.nn's printout: every argument as name=value (inplace is not stored)
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))

    def describe_input_error(self, x: Any) -> str | None:
        return not_a_tensor(x)


# --------------------------------------------------------------------------- ReLU family


class ReLU(_Activation):
    """``max(0, x)`` elementwise (``torch.nn.ReLU``).

    Arguments:
        inplace: accepted and ignored (see the module docstring).

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    inplace: InitVar[bool] = False
    function = F.relu


class ReLU6(_Activation):
    """``min(max(0, x), 6)`` elementwise (``torch.nn.ReLU6``).

    Arguments:
        inplace: accepted and ignored.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    inplace: InitVar[bool] = False
    function = F.relu6


class LeakyReLU(_Activation):
    """``x`` where ``x >= 0``, ``negative_slope * x`` elsewhere (``torch.nn.LeakyReLU``).

    Arguments:
        negative_slope: the slope for negative inputs.
        inplace: accepted and ignored.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    negative_slope: float = 0.01
    inplace: InitVar[bool] = False
    function = F.leaky_relu

    def _validate(self) -> None:
        _number("LeakyReLU", "negative_slope", self.negative_slope)


class ELU(_Activation):
    """``x`` where ``x > 0``, ``alpha * (exp(x) - 1)`` elsewhere (``torch.nn.ELU``).

    Arguments:
        alpha: the scale of the negative part.
        inplace: accepted and ignored.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    alpha: float = 1.0
    inplace: InitVar[bool] = False
    function = F.elu

    def _validate(self) -> None:
        _number("ELU", "alpha", self.alpha)


class CELU(_Activation):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))`` (``torch.nn.CELU``).

    Arguments:
        alpha: the scale of the negative part (nonzero).
        inplace: accepted and ignored.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    alpha: float = 1.0
    inplace: InitVar[bool] = False
    function = F.celu

    def _validate(self) -> None:
        if _number("CELU", "alpha", self.alpha) == 0:
            raise ValueError("CELU: alpha must not be 0 (it divides x)")


class SELU(_Activation):
    """``scale * ELU(x, alpha)`` with the self-normalising constants (``torch.nn.SELU``).

    Arguments:
        inplace: accepted and ignored.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    inplace: InitVar[bool] = False
    function = F.selu


class GELU(_Activation):
    """``x * Phi(x)``, ``Phi`` the standard normal CDF (``torch.nn.GELU``).

    Arguments:
        approximate: ``"none"`` (the exact erf form) or ``"tanh"`` (the tanh approximation).

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    approximate: str = "none"
    function = F.gelu

    def _validate(self) -> None:
        if self.approximate not in ("none", "tanh"):
            raise ValueError(
                f"GELU: approximate must be 'none' or 'tanh', got {self.approximate!r}"
            )


class SiLU(_Activation):
    """``x * sigmoid(x)`` (swish; ``torch.nn.SiLU``).

    Arguments:
        inplace: accepted and ignored.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    inplace: InitVar[bool] = False
    function = F.silu


class Mish(_Activation):
    """``x * tanh(softplus(x))`` (``torch.nn.Mish``).

    Arguments:
        inplace: accepted and ignored.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    inplace: InitVar[bool] = False
    function = F.mish


# --------------------------------------------------------------------------- sigmoid family


class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))`` (``torch.nn.Sigmoid``; no arguments).

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    function = torch.sigmoid


class Tanh(_Activation):
    """``tanh(x)`` (``torch.nn.Tanh``; no arguments).

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    function = torch.tanh


class LogSigmoid(_Activation):
    """``log(sigmoid(x))``, computed stably (``torch.nn.LogSigmoid``; no arguments).

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    function = F.logsigmoid


class Hardsigmoid(_Activation):
    """``clamp(x / 6 + 1 / 2, 0, 1)`` (``torch.nn.Hardsigmoid``).

    Arguments:
        inplace: accepted and ignored.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    inplace: InitVar[bool] = False
    function = F.hardsigmoid


class Hardswish(_Activation):
    """``x * hardsigmoid(x)`` (``torch.nn.Hardswish``).

    Arguments:
        inplace: accepted and ignored.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    inplace: InitVar[bool] = False
    function = F.hardswish


class Hardtanh(_Activation):
    """``clamp(x, min_val, max_val)`` (``torch.nn.Hardtanh``).

    Arguments:
        min_val: the lower bound.
        max_val: the upper bound (``> min_val``).
        inplace: accepted and ignored.
        min_value, max_value: torch's deprecated spellings of ``min_val``/``max_val``:
            accepted with torch's ``FutureWarning``, and they override them.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    min_val: float = -1.0
    max_val: float = 1.0
    inplace: InitVar[bool] = False
    min_value: InitVar[float | None] = None
    max_value: InitVar[float | None] = None
    function = F.hardtanh

    def __post_init__(
        self, inplace: bool = False, min_value: float | None = None, max_value: float | None = None
    ) -> None:
        for old, new, value in (
            ("min_value", "min_val", min_value),
            ("max_value", "max_val", max_value),
        ):
            if value is not None:
                warnings.warn(
                    f"Hardtanh: keyword argument `{old}` is deprecated and renamed to `{new}`",
                    FutureWarning,
                    stacklevel=4,
                )
                self._set_fields(**{new: value})
        super().__post_init__(inplace)

    def _validate(self) -> None:
        low = _number("Hardtanh", "min_val", self.min_val)
        high = _number("Hardtanh", "max_val", self.max_val)
        if not high > low:
            raise ValueError(f"Hardtanh: max_val ({high}) must be greater than min_val ({low})")


class Tanhshrink(_Activation):
    """``x - tanh(x)`` (``torch.nn.Tanhshrink``; no arguments).

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    function = F.tanhshrink


class Softsign(_Activation):
    """``x / (1 + |x|)`` (``torch.nn.Softsign``; no arguments).

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    function = F.softsign


class Softplus(_Activation):
    """``log(1 + exp(beta * x)) / beta``, linear where ``beta * x > threshold``
    (``torch.nn.Softplus``).

    Arguments:
        beta: the sharpness.
        threshold: above ``beta * x > threshold`` the layer returns ``x`` (numerical
            stability).

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    beta: float = 1.0
    threshold: float = 20.0
    function = F.softplus

    def _validate(self) -> None:
        _number("Softplus", "beta", self.beta)
        _number("Softplus", "threshold", self.threshold)


# --------------------------------------------------------------------------- shrinkage


class Hardshrink(_Activation):
    """``x`` where ``|x| > lambd``, ``0`` elsewhere (``torch.nn.Hardshrink``).

    Arguments:
        lambd: the threshold (``>= 0``).

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    lambd: float = 0.5
    function: ClassVar[Callable[..., torch.Tensor]] = F.hardshrink  # Softshrink: another

    def _validate(self) -> None:
        if _number(type(self).__name__, "lambd", self.lambd) < 0:
            raise ValueError(f"{type(self).__name__}: lambd must be >= 0, got {self.lambd}")

    def extra_repr(self) -> str:
        return str(self.lambd)


class Softshrink(Hardshrink):
    """``x - lambd`` where ``x > lambd``, ``x + lambd`` where ``x < -lambd``, ``0`` elsewhere
    (``torch.nn.Softshrink``).

    Arguments:
        lambd: the threshold (``>= 0``).

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    function = F.softshrink


class Threshold(_Activation):
    """``x`` where ``x > threshold``, ``value`` elsewhere (``torch.nn.Threshold``).

    Arguments:
        threshold: the threshold.
        value: the replacement below it.
        inplace: accepted and ignored.

    Input: ``x`` of any shape. Returns: ``y`` of the same shape and the unchanged state.
    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    threshold: float
    value: float
    inplace: InitVar[bool] = False
    function = F.threshold

    def _validate(self) -> None:
        _number("Threshold", "threshold", self.threshold)
        _number("Threshold", "value", self.value)


# --------------------------------------------------------------------------- along a dimension


class GLU(_Activation):
    """Gated linear unit: ``a * sigmoid(b)`` with ``a, b`` the halves of ``x`` along ``dim``
    (``torch.nn.GLU``).

    Arguments:
        dim: the dimension that is split in two.

    Input:
        ``x`` with an even size along ``dim``.

    Returns:
        ``y`` with half that size along ``dim`` and the unchanged (empty) state.

    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    dim: int = -1
    function = F.glu

    def _validate(self) -> None:
        _check_dim("GLU", self.dim)

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem is None and (x.dim() == 0 or x.shape[self.dim] % 2):
            problem = f"expected an even size along dim {self.dim}, got shape {tuple(x.shape)}"
        return problem


class Softmax(_Activation):
    """``exp(x) / sum(exp(x))`` along ``dim`` (``torch.nn.Softmax``).

    Arguments:
        dim: the dimension that sums to one. ``None`` keeps torch's deprecated implicit
            choice (dimension 0 for 0-, 1- and 3-d inputs, else 1) and its warning.

    Input: ``x`` with a dimension ``dim``. Returns: ``y`` of the same shape and the
    unchanged state. **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    dim: int | None = None
    function = F.softmax

    def _validate(self) -> None:
        _check_dim(type(self).__name__, self.dim, optional=True)


class Softmin(Softmax):
    """``softmax(-x)`` along ``dim`` (``torch.nn.Softmin``).

    Arguments:
        dim: the dimension that sums to one (``None``: torch's implicit choice, as
            :class:`Softmax`).

    Input: ``x`` with a dimension ``dim``. Returns: ``y`` of the same shape and the
    unchanged state. **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    function = F.softmin


class LogSoftmax(Softmax):
    """``log(softmax(x))`` along ``dim``, computed stably (``torch.nn.LogSoftmax``).

    Arguments:
        dim: the dimension (``None``: torch's implicit choice, as :class:`Softmax`).

    Input: ``x`` with a dimension ``dim``. Returns: ``y`` of the same shape and the
    unchanged state. **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    function = F.log_softmax


class Softmax2d(_Activation):
    """Softmax over the channels at every spatial position (``torch.nn.Softmax2d``).

    Input:
        ``x`` of shape ``(N, C, H, W)`` or ``(C, H, W)``.

    Returns:
        ``softmax(x, dim=-3)`` and the unchanged (empty) state.

    **Parameters**: none (``{}``). **States**: none (``{}``).
    """

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        if x.dim() not in (3, 4):
            raise ValueError(f"Softmax2d: {self.describe_input_error(x)}")
        return F.softmax(x, -3), st

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem is None and x.dim() not in (3, 4):
            problem = f"expected input of shape (N, C, H, W) or (C, H, W), got {tuple(x.shape)}"
        return problem


# --------------------------------------------------------------------------- learnable, random


class PReLU(Layer):
    """``x`` where ``x >= 0``, ``weight * x`` elsewhere, with a learnable slope
    (``torch.nn.PReLU``).

    Arguments:
        num_parameters: 1 (one slope shared by every channel) or the number of channels
            ``C`` (one slope per channel, dimension 1 of the input; dimension 0 of a 1-d
            input).
        init: the initial slope (torch's default 0.25).
        device, dtype: where and in which dtype :func:`lux_torch.setup` creates the weight
            when it is given no ``device``/``dtype`` of its own (``setup``'s win).

    Input:
        ``x`` of shape ``(N, C, *)``, ``(C,)`` or any shape when ``num_parameters == 1``.

    Returns:
        ``y`` of the same shape and the unchanged (empty) state.

    **Parameters**
        - ``weight``: ``(num_parameters,)``, every entry ``init``.

    **States**
        None (``{}``).

    Example:
        >>> layer = PReLU(3)
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 3, 5), ps, st)  # doctest: +SKIP
    """

    num_parameters: int = 1
    init: float = 0.25
    device: torch.device | str | None = None
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        check_int("PReLU", "num_parameters", self.num_parameters, minimum=1)
        _number("PReLU", "init", self.init)

    def init_params(self, key: torch.Tensor) -> Params:
        ones = init.ones(key, self.num_parameters, dtype=self.dtype, device=self.device)
        return {"weight": ones * self.init}

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        # F.prelu's maths, written out: under torch.func.vmap over stacked weights,
        # F.prelu resizes an output tensor (a deprecation warning in torch 2.13)
        weight = ps["weight"]
        if self.num_parameters == 1:
            weight = weight.reshape(())
        else:
            problem = self.describe_input_error(x)
            if problem:
                raise ValueError(f"PReLU: {problem}")
            if x.dim() > 1:
                weight = weight.reshape(-1, *([1] * (x.dim() - 2)))
        return torch.where(x > 0, x, weight * x), st

    def extra_repr(self) -> str:
        parts = [f"num_parameters={self.num_parameters}"]
        if self.init != 0.25:
            parts.append(f"init={self.init}")
        return ", ".join(parts)

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem is None and self.num_parameters > 1:
            channels = x.shape[0] if x.dim() == 1 else x.shape[1] if x.dim() > 1 else None
            if channels != self.num_parameters:
                problem = (
                    f"expected input of shape (N, {self.num_parameters}, *) or "
                    f"({self.num_parameters},), got {tuple(x.shape)}"
                )
        return problem


class RReLU(Layer):
    """Randomized leaky ReLU: ``x`` where ``x >= 0``, ``a * x`` elsewhere, with a random
    slope ``a ~ U(lower, upper)`` per element in training mode and
    ``a = (lower + upper) / 2`` in test mode (``torch.nn.RReLU``; Xu et al. 2015).

    The slopes are a function of ``st["key"]`` (counter-based bits from
    :func:`lux_torch.random.uniform`), and every training-mode call returns the advanced
    key, as :class:`lux_torch.Dropout` does: the same ``(x, ps, st)`` always gives the same
    output while successive calls draw fresh slopes; under ``torch.func.vmap`` over
    stacked states every member draws its own. With ``lower == upper`` nothing is drawn
    and the state is returned unchanged.

    Arguments:
        lower: the lower bound of the slopes.
        upper: the upper bound (``>= lower``).
        inplace: accepted and ignored (a pure layer never mutates its input).

    Input:
        ``x``: a floating-point tensor of any shape.

    Returns:
        ``y`` of the same shape and the new state (the key advanced in training mode when
        ``lower < upper``).

    **Parameters**
        None (``{}``).

    **States**
        - ``key``: ``(2,)`` int64, the random key (see :mod:`lux_torch.random`).
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it.

    Example:
        >>> layer = RReLU()
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> y, st = layer(torch.randn(4, 8), ps, st)  # doctest: +SKIP
    """

    lower: float = 1.0 / 8.0
    upper: float = 1.0 / 3.0
    inplace: InitVar[bool] = False

    def __post_init__(self, inplace: bool = False) -> None:
        _check_inplace("RReLU", inplace)
        low = _number("RReLU", "lower", self.lower)
        high = _number("RReLU", "upper", self.upper)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(
                f"RReLU: need finite bounds with lower <= upper, got lower={low}, upper={high}"
            )

    def init_state(self, key: torch.Tensor) -> State:
        return {"key": key.clone(), "training": Static(True)}

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        if not st["training"] or self.lower == self.upper:
            return F.leaky_relu(x, (self.lower + self.upper) / 2), st
        new_key, use_key = lrandom.split(st["key"])
        slope = lrandom.uniform(
            use_key,
            tuple(x.shape),
            dtype=x.dtype,
            low=self.lower,
            high=self.upper,
            device=x.device,
        )
        return torch.where(x >= 0, x, x * slope), {"key": new_key, "training": st["training"]}

    def extra_repr(self) -> str:
        return f"lower={self.lower}, upper={self.upper}"

    def describe_input_error(self, x: Any) -> str | None:
        problem = not_a_tensor(x)
        if problem is None and not x.is_floating_point():
            problem = f"expected a floating-point tensor, got dtype {x.dtype}"
        return problem
