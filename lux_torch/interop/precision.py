"""Precision conversion of trees: :func:`f16`, :func:`bf16`, :func:`f32`, :func:`f64`.

Each function returns a new tree in which every *floating-point* tensor leaf is cast to
the named precision (Lux's ``f16``/``bf16``/``f32``/``f64``)::

    ps64 = lux.f64(ps)              # e.g. for gradcheck or a stiff ODE
    y, st = model(x.double(), ps64, st)

What is converted
    * real floating-point tensors (``float16``, ``bfloat16``, ``float32``, ``float64``,
      and the ``float8`` types) are cast to the target dtype;
    * complex tensors follow :func:`f32` and :func:`f64` (to ``complex64`` /
      ``complex128``); :func:`f16` and :func:`bf16` leave them unchanged (torch has no
      bfloat16 complex type, and ``complex32`` supports too few operations to be useful);
    * integer and ``bool`` tensors (random keys, counters, masks), non-tensor leaves and
      :class:`~lux_torch.tree.Static` flags are left as they are, and the structure of the
      tree is kept.

The input is never mutated. Leaves that need no cast are shared with the input rather than
copied (tensors in a tree are treated as values; nothing in lux_torch writes into them).
The casts are differentiable, so the functions can be used inside ``torch.func.grad``.

For mixed precision (float32 parameters, bfloat16 compute) use ``torch.autocast`` around
the forward pass instead; see ``examples/bf16_autocast.py``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..tree import map as tree_map

__all__ = ["bf16", "f16", "f32", "f64"]

Tree = Any


def _convert(tree: Tree, real: torch.dtype, complex_: torch.dtype | None) -> Tree:
    def cast(leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor):
            return leaf
        if leaf.is_complex():
            return leaf if complex_ is None else leaf.to(complex_)
        if leaf.is_floating_point():
            return leaf.to(real)
        return leaf

    return tree_map(cast, tree)


def f16(tree: Tree) -> Tree:
    """Cast the real floating-point tensors of ``tree`` to ``torch.float16``.

    Arguments:
        tree: any tree (e.g. ``ps`` or ``st`` from :func:`lux_torch.setup`).

    Returns:
        A new tree of the same structure; integer, bool and complex tensors, other leaves
        and static flags unchanged.

    Example:
        >>> f16({"w": torch.ones(2), "key": torch.zeros(2, dtype=torch.int64)})["w"].dtype
        torch.float16
    """
    return _convert(tree, torch.float16, None)


def bf16(tree: Tree) -> Tree:
    """Cast the real floating-point tensors of ``tree`` to ``torch.bfloat16``.

    Arguments:
        tree: any tree (e.g. ``ps`` or ``st`` from :func:`lux_torch.setup`).

    Returns:
        A new tree of the same structure; integer, bool and complex tensors, other leaves
        and static flags unchanged.

    Example:
        >>> bf16({"w": torch.ones(2)})["w"].dtype
        torch.bfloat16
    """
    return _convert(tree, torch.bfloat16, None)


def f32(tree: Tree) -> Tree:
    """Cast floating-point tensors to ``torch.float32`` and complex ones to ``complex64``.

    Arguments:
        tree: any tree (e.g. ``ps`` or ``st`` from :func:`lux_torch.setup`).

    Returns:
        A new tree of the same structure; integer and bool tensors, other leaves and static
        flags unchanged.

    Example:
        >>> f32({"w": torch.ones(2, dtype=torch.float64)})["w"].dtype
        torch.float32
    """
    return _convert(tree, torch.float32, torch.complex64)


def f64(tree: Tree) -> Tree:
    """Cast floating-point tensors to ``torch.float64`` and complex ones to ``complex128``.

    Arguments:
        tree: any tree (e.g. ``ps`` or ``st`` from :func:`lux_torch.setup`).

    Returns:
        A new tree of the same structure; integer and bool tensors (random keys), other
        leaves and static flags unchanged.

    Example:
        >>> f64({"w": torch.ones(2)})["w"].dtype
        torch.float64
    """
    return _convert(tree, torch.float64, torch.complex128)
