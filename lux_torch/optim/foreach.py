"""Arithmetic on lists of leaves, to write transformations with: ``torch._foreach_*``
kernels (one call for all the leaves), or one op per leaf where those have no rule.

The per-leaf form runs under :func:`torch.func.vmap` (foreach kernels have no batching
rule, decided up front rather than by catching the kernel's error, which would hide real
bugs) and where a scalar argument is a tensor that requires grad (foreach kernels do not
differentiate it). Every function returns new tensors, except the ``_``-suffixed ones,
which may write into their first argument: pass them only a temporary of your own update.

Example:
    >>> from lux_torch.optim import foreach as fe
    >>> fe.lerp([torch.zeros(2)], [torch.ones(2)], 0.25)
    (tensor([0.2500, 0.2500]),)
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import torch

from .._graph import tracing
from ._base import Leaves, Scalar

_dtype, _requires_grad = attrgetter("dtype"), attrgetter("requires_grad")  # map-able, no frames


def _under_vmap() -> bool:
    """Whether a :func:`torch.func.vmap` is active (at any level, e.g. around a ``grad``)."""
    if torch.compiler.is_compiling():  # Dynamo cannot trace the interpreter stack
        return False
    if torch._C._functorch.peek_interpreter_stack() is None:  # no torch.func transform
        return False
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    vmap = torch._C._functorch.TransformType.Vmap
    return any(i.key() == vmap for i in retrieve_all_functorch_interpreters())


def _kernels_apply(scalar: Any = None) -> bool:
    """Whether the foreach kernels apply: no vmap active, and ``scalar`` (a non-list
    argument) is not a tensor that requires grad, nor a traced tensor (``make_fx`` cannot
    lower a foreach op with a tensor scalar; a trace fuses the per-leaf ops anyway)."""
    if isinstance(scalar, torch.Tensor) and (
        (scalar.requires_grad and torch.is_grad_enabled()) or tracing()
    ):
        return False
    return torch._C._functorch.peek_interpreter_stack() is None or not _under_vmap()


def op(name: str, *args: Any, **kwargs: Any) -> Leaves:
    """``torch._foreach_<name>(*args)``; ``args[0]`` a list of leaves, ``args[1:]`` lists of
    the same length or scalars (a scalar that requires grad must be the last argument)."""
    first = args[0]
    if not first:
        return []
    if _kernels_apply(args[-1]):
        out: Leaves = getattr(torch, f"_foreach_{name}")(*args, **kwargs)
    else:
        single = getattr(torch, name)
        out = [
            single(*(a[i] if isinstance(a, list | tuple) else a for a in args), **kwargs)
            for i in range(len(first))
        ]
    for a in args[1:]:
        if isinstance(a, torch.Tensor):
            # a 0-dim tensor scalar (a traced factor or a schedule's lr, often float64)
            # promotes a 0-dim leaf: keep each leaf's dtype, as dimensioned leaves do
            return [
                r.to(x.dtype) if r.dtype != x.dtype and x.is_floating_point() else r
                for r, x in zip(out, first, strict=True)
            ]
    return out


def _in_place(name: str, target: Leaves, *args: Any, **kwargs: Any) -> Leaves:
    """``op(name, target, *args)``, written into ``target`` where that is safe and pays:
    eager (a trace makes its own buffers), no vmap, no leaf recorded by autograd.
    ``target`` must be a temporary of the caller (nothing else refers to it)."""
    if (
        target
        and not tracing()
        and _kernels_apply(args[-1] if args else None)
        and not (torch.is_grad_enabled() and True in map(_requires_grad, target))
    ):
        getattr(torch, f"_foreach_{name}_")(target, *args, **kwargs)
        return target
    return op(name, target, *args, **kwargs)


def mul_(target: Leaves, b: Leaves | Scalar | Constant) -> Leaves:
    """:func:`mul` written into the temporary ``target`` where safe (see :func:`_in_place`)."""
    return _in_place("mul", target, _factor(target, b))


def addcmul_(target: Leaves, b: Leaves, c: Leaves, value: float = 1.0) -> Leaves:
    """:func:`addcmul` written into the temporary ``target`` where safe."""
    return _in_place("addcmul", target, b, c, value=value)


def add_(target: Leaves, b: Leaves | Scalar | Constant) -> Leaves:
    """:func:`add` written into the temporary ``target`` where safe (see :func:`_in_place`)."""
    return _in_place("add", target, _addend(target, b))


def div_(target: Leaves, b: Leaves | Scalar | Constant) -> Leaves:
    """:func:`div` written into the temporary ``target`` where safe."""
    return _in_place("div", target, _factor(target, b))


def sqrt_(target: Leaves) -> Leaves:
    """:func:`sqrt` written into the temporary ``target`` where safe."""
    return _in_place("sqrt", target)


def maximum_(target: Leaves, b: Leaves) -> Leaves:
    """``maximum(target, b)`` written into the temporary ``target`` where safe."""
    return _in_place("maximum", target, b)


def add(a: Leaves, b: Leaves | Scalar | Constant, alpha: Scalar = 1.0) -> Leaves:
    """``a + alpha * b`` (``alpha`` may be a 0-dim tensor, e.g. an injected hyperparameter)."""
    if isinstance(alpha, torch.Tensor):
        return op("add", a, op("mul", b, alpha))
    if alpha != 1.0:
        return op("add", a, b.value if isinstance(b, Constant) else b, alpha=alpha)
    return op("add", a, _addend(a, b))


class Constant:
    """A hyperparameter fixed when a transformation is built (``b2``, ``-lr``), with its
    0-dim CPU float32 and float64 tensors made once, for :func:`mul`, :func:`add` and their
    ``_`` forms (which otherwise make such a tensor on every call, see :func:`_factor`).

    Immutable; the tensors are made only outside any tracing (else ``value`` is used).

    Example:
        >>> b2 = fe.Constant(0.999)
        >>> fe.mul([torch.ones(2)], b2)
        [tensor([0.9990, 0.9990])]
    """

    __slots__ = ("tensors", "value")

    def __init__(self, value: float) -> None:
        self.value = float(value)
        self.tensors: dict[torch.dtype, torch.Tensor] = {}
        if not tracing():
            with torch.inference_mode(False):  # usable (saved for backward) anywhere
                for dtype in (torch.float32, torch.float64):
                    self.tensors[dtype] = torch.scalar_tensor(value, dtype=dtype)

    def __repr__(self) -> str:
        return f"Constant({self.value})"

    @classmethod
    def of(cls, x: Scalar) -> Scalar | Constant:
        """``Constant(x)`` for a Python number; anything else (a tensor, e.g. a value
        injected by ``inject_hyperparams``) as it is."""
        return cls(x) if isinstance(x, float | int) and not isinstance(x, bool) else x


def _factor(a: Leaves, x: Leaves | Scalar | Constant) -> Leaves | Scalar:
    """A Python float factor as a 0-dim tensor of the leaves' dtype when they are CPU
    float32/float64 leaves of one dtype: the CPU kernels multiply (or divide) by it 2-3x
    faster than by a Python number (torch 2.13, 6 small leaves), to the same result. A
    :class:`Constant` gives its tensor made in advance (or its value)."""
    value = x.value if isinstance(x, Constant) else x
    if type(value) is float and a and a[0].is_cpu and not tracing():
        dtype = a[0].dtype
        if dtype in (torch.float32, torch.float64) and set(map(_dtype, a)) == {dtype}:
            made = x.tensors.get(dtype) if isinstance(x, Constant) else None
            return made if made is not None else torch.scalar_tensor(value, dtype=dtype)
    return value


def _addend(a: Leaves, x: Leaves | Scalar | Constant) -> Leaves | Scalar:
    """A Python float addend as :func:`_factor`'s tensor, once per leaf: the CPU kernels
    add a list of tensors 2-3x faster than a Python number or one tensor (torch 2.13), to
    the same result."""
    t = _factor(a, x)
    if t is x or not isinstance(t, torch.Tensor):
        return t  # a tensor given stays one: op keeps the leaves' dtypes
    return [t] * len(a)


def mul(a: Leaves, b: Leaves | Scalar | Constant) -> Leaves:
    return op("mul", a, _factor(a, b))


def div(a: Leaves, b: Leaves | Scalar | Constant) -> Leaves:
    return op("div", a, _factor(a, b))


def lerp(a: Leaves, b: Leaves, weight: Scalar) -> Leaves:
    """``a + weight * (b - a)``."""
    return op("lerp", a, b, weight)


def addcmul(a: Leaves, b: Leaves, c: Leaves, value: Scalar = 1.0) -> Leaves:
    """``a + value * b * c``."""
    if isinstance(value, torch.Tensor):
        return op("add", a, op("mul", op("mul", b, c), value))
    return op("addcmul", a, b, c, value=value)


def sqrt(a: Leaves) -> Leaves:
    return op("sqrt", a)


def sign(a: Leaves) -> Leaves:
    return op("sign", a)


def clamp(a: Leaves, low: Scalar, high: Scalar) -> Leaves:
    return op("clamp_max", op("clamp_min", a, low), high)


def sub(a: Leaves, b: Leaves) -> Leaves:
    return op("sub", a, b)
