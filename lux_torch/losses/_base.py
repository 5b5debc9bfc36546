"""The base class of losses, its two call conventions and shared validation helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar, overload

import torch
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from .._graph import tracing
from ..core import Layer, describe_value

try:
    from typing import dataclass_transform
except ImportError:  # Python 3.10: typing_extensions ships with torch
    from typing_extensions import dataclass_transform

__all__ = ["Loss"]

Tensor = torch.Tensor
# what a loss compares: a tensor, or a pair such as (x1, x2), (mean, var) or (targets, lengths)
LossInput = Tensor | tuple[Any, Any]
_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def loss_dataclass(cls: type[_T]) -> type[_T]:
    """``dataclasses.dataclass(frozen=True)``, spelled so that type checkers see the fields
    (the keyword arguments of a loss's constructor)."""
    return dataclasses.dataclass(frozen=True)(cls)


def reduce_elementwise(value: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` to an element-wise loss (for losses ``F`` does not provide)."""
    if reduction == "mean":
        return value.mean()
    if reduction == "sum":
        return value.sum()
    return value


def values_readable() -> bool:
    """Whether tensor values can be read on the host for a check: not while tracing
    (``torch.compile``, ``make_fx``) and not under ``torch.func.vmap``."""
    if tracing():
        return False
    if torch._C._functorch.peek_interpreter_stack() is None:
        return True
    return all(i.key() != TransformType.Vmap for i in retrieve_all_functorch_interpreters())


def config_tensor(values: float | Sequence[float] | None, like: Tensor) -> Tensor | None:
    """Configuration floats as a tensor on ``like``'s device and dtype (``None`` stays; a
    float becomes a 0-d tensor)."""
    if values is None:
        return None
    return torch.tensor(values, dtype=like.dtype, device=like.device)


@loss_dataclass
class Loss:
    """Base class of losses: validation, the two call conventions and the reduction.

    Subclasses are frozen dataclasses adding configuration fields and implementing
    ``compute(pred, target) -> Tensor``; element-wise losses set ``same_shape = True`` so
    calls with differing pred/target shapes raise ``ValueError``.
    """

    reduction: str = dataclasses.field(default="mean", kw_only=True)

    same_shape: ClassVar[bool] = False
    reductions: ClassVar[tuple[str, ...]] = ("mean", "sum", "none")

    def __post_init__(self) -> None:
        if self.reduction not in self.reductions:
            self._fail(f"reduction must be one of {self.reductions}, got {self.reduction!r}")

    def _fail(self, message: str) -> None:
        raise ValueError(f"{type(self).__name__}: {message}")

    def _number(self, name: str, *, minimum: float | None = None, positive: bool = False) -> None:
        """Validate a float field: a real number, ``> 0`` or ``>= minimum`` when asked."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{type(self).__name__}: {name} must be a float, got {value!r}")
        if positive and not value > 0:
            self._fail(f"{name} must be > 0, got {value}")
        if minimum is not None and not value >= minimum:
            self._fail(f"{name} must be >= {minimum}, got {value}")

    def _integer(self, name: str) -> None:
        """Validate an int field (``bool`` is rejected)."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{type(self).__name__}: {name} must be an int, got {value!r}")

    def _floats(self, name: str, *, scalar: bool = False) -> None:
        """Normalise an optional sequence-of-floats field (class weights) to a tuple; with
        ``scalar=True`` a single float (torch's 0-d weight) is accepted and kept a float."""
        value = getattr(self, name)
        if value is None:
            return
        if scalar and isinstance(value, (int, float)) and not isinstance(value, bool):
            object.__setattr__(self, name, float(value))
            return
        if isinstance(value, (Tensor, str)) or not isinstance(value, Sequence):
            raise TypeError(
                f"{type(self).__name__}: {name} must be a tuple/list of floats or None, got "
                f"{type(value).__name__} (configuration stays hashable: no tensors)"
            )
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{type(self).__name__}: {name} must hold floats, got {value!r}")
        object.__setattr__(self, name, tuple(float(v) for v in value))

    def _elementwise_weight(self, name: str, pred: Tensor) -> Tensor | None:
        """A weight field broadcast against ``pred`` (``BCELoss``-like): a tensor, or
        ``ValueError`` where it has more dimensions than ``pred`` (torch would fail with
        "output with shape [] doesn't match the broadcast shape [1]")."""
        weight = config_tensor(getattr(self, name), pred)
        if weight is not None and weight.dim() > pred.dim():
            self._fail(
                f"{name} of shape {tuple(weight.shape)} has more dimensions than pred of shape "
                f"{tuple(pred.shape)}; pass a float {name} (torch's 0-d weight) instead"
            )
        return weight

    def _pair(self, value: Any, names: str, what: str = "pred") -> tuple[Any, Any]:
        """``value`` as the pair a loss of two model outputs takes (e.g. ``"(x1, x2)"``)."""
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            if isinstance(value, (tuple, list)):
                got = f"a {type(value).__name__} of {len(value)}"
            else:
                got = describe_value(value)
            raise TypeError(f"{type(self).__name__}: {what} must be a pair {names}, got {got}")
        return value[0], value[1]

    def _same_shapes(self, **tensors: Tensor) -> None:
        """``ValueError`` naming the first two of ``tensors`` whose shapes differ (torch would
        broadcast them silently)."""
        (first, a), *rest = tensors.items()
        for second, b in rest:
            if a.shape != b.shape:
                self._fail(
                    f"{first} shape {tuple(a.shape)} and {second} shape {tuple(b.shape)} differ"
                )

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        """The reduced loss of ``pred`` against ``target`` (implemented by subclasses)."""
        raise NotImplementedError

    @overload
    def __call__(self, pred: LossInput, target: LossInput, /) -> Tensor: ...

    @overload
    def __call__(
        self, model: Layer, ps: Any, st: Any, data: tuple[Any, Any], /
    ) -> tuple[Tensor, Any, dict[str, Any]]: ...

    def __call__(self, first: Any, *args: Any) -> Any:
        name = type(self).__name__
        if isinstance(first, Layer):
            if len(args) != 3:
                raise TypeError(
                    f"{name}: the training convention is loss(model, ps, st, (x, y)), got "
                    f"{len(args) + 1} arguments"
                )
            ps, st, data = args
            if not isinstance(data, (tuple, list)) or len(data) != 2:
                raise TypeError(f"{name}: data must be a pair (x, y), got {type(data).__name__}")
            x, y = data
            pred, new_st = first(x, ps, st)
            return self(pred, y), new_st, {}
        if len(args) != 1:
            raise TypeError(
                f"{name}: call as loss(pred, target) or loss(model, ps, st, (x, y)), got "
                f"{len(args) + 1} arguments"
            )
        target = args[0]
        if self.same_shape and first.shape != target.shape:
            raise ValueError(
                f"{name}: pred shape {tuple(first.shape)} and target shape "
                f"{tuple(target.shape)} differ"
            )
        return self.compute(first, target)
