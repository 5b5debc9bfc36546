"""Out-of-place arithmetic on lists of leaves: ``torch._foreach_*`` kernels (one call for
all the leaves), or one op per leaf where those have no rule.

The per-leaf form runs under :func:`torch.func.vmap` (foreach kernels have no batching
rule, decided up front rather than by catching the kernel's error, which would hide real
bugs) and where a scalar argument is a tensor that requires grad (foreach kernels do not
differentiate it). Every function returns new tensors; nothing is modified in place.
"""

from __future__ import annotations

from typing import Any

import torch

from ._base import Leaves, Scalar


def _under_vmap() -> bool:
    """Whether a :func:`torch.func.vmap` is active (at any level, e.g. around a ``grad``)."""
    if torch.compiler.is_compiling():  # Dynamo cannot trace the interpreter stack
        return False
    if torch._C._functorch.peek_interpreter_stack() is None:  # no torch.func transform
        return False
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    vmap = torch._C._functorch.TransformType.Vmap
    return any(i.key() == vmap for i in retrieve_all_functorch_interpreters())


def _scalar_needs_grad(args: tuple[Any, ...]) -> bool:
    return torch.is_grad_enabled() and any(
        isinstance(a, torch.Tensor) and a.requires_grad for a in args
    )


def op(name: str, *args: Any, **kwargs: Any) -> Leaves:
    """``torch._foreach_<name>(*args)``; ``args[0]`` a list of leaves, the others lists of
    the same length or scalars."""
    first = args[0]
    if not first:
        return []
    if not _under_vmap() and not _scalar_needs_grad(args):
        return getattr(torch, f"_foreach_{name}")(*args, **kwargs)  # type: ignore[no-any-return]  # op by name
    single = getattr(torch, name)
    return [
        single(*(a[i] if isinstance(a, list | tuple) else a for a in args), **kwargs)
        for i in range(len(first))
    ]


def add(a: Leaves, b: Leaves | Scalar, alpha: float = 1.0) -> Leaves:
    """``a + alpha * b``."""
    return op("add", a, b, alpha=alpha) if alpha != 1.0 else op("add", a, b)


def mul(a: Leaves, b: Leaves | Scalar) -> Leaves:
    return op("mul", a, b)


def div(a: Leaves, b: Leaves | Scalar) -> Leaves:
    return op("div", a, b)


def lerp(a: Leaves, b: Leaves, weight: float) -> Leaves:
    """``a + weight * (b - a)``."""
    return op("lerp", a, b, weight)


def addcmul(a: Leaves, b: Leaves, c: Leaves, value: float = 1.0) -> Leaves:
    """``a + value * b * c``."""
    return op("addcmul", a, b, c, value=value)


def sqrt(a: Leaves) -> Leaves:
    return op("sqrt", a)


def sign(a: Leaves) -> Leaves:
    return op("sign", a)


def clamp(a: Leaves, low: float, high: float) -> Leaves:
    return op("clamp_max", op("clamp_min", a, low), high)
