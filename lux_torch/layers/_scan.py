"""A block called ``n`` times, traced once under ``torch.compile``: scan over layers.

:class:`~lux_torch.layers.stacked.StackedChain` (``n`` blocks, stacked parameters) and
:class:`~lux_torch.layers.containers.RepeatedLayer` (one block, ``n`` times) call one layer
``n`` times. Unrolled, ``torch.compile`` traces, differentiates and generates code for every
call, so compile time grows with ``n``. While Dynamo traces, :func:`stacked_calls` and
:func:`repeated_calls` express the loop with torch's ``scan`` higher-order operator instead
(the primitive of ``jax.lax.scan``, which Flax's ``nn.scan`` and Equinox's scan over layers
use): Dynamo traces the block once, AOTAutograd differentiates it once, Inductor compiles it
once into a loop. Eager (and under ``make_fx`` or ``torch.func`` transforms, where Dynamo
cannot capture the operator: torch 2.13 fails with "Expected FakeTensor") the loop is a plain
Python loop over the same calls, unrolled.

The operator's rules, met here: the block's inputs and outputs are tensors (a tree with
any other leaf is run unrolled); its output carry has the input's structure, shape, dtype
and strides (torch raises otherwise); no output aliases an input (a state entry the block
returns unchanged is copied; the copy is exact); the loop runs ``n`` times (an index
``0..n-1`` is always scanned, so a block without parameters or state still runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._higher_order_ops.scan import scan

from .. import tree as ltree
from ..core import Layer, Params, State

__all__ = ["repeated_calls", "scan_active", "stacked_calls"]


def _transform_active() -> bool:
    """Whether a ``torch.func`` transform is active."""
    return torch._C._functorch.peek_interpreter_stack() is not None


# read for real while Dynamo traces (Dynamo's own answer for the stack is an opaque object)
_in_transform: Callable[[], bool] = torch.compiler.assume_constant_result(_transform_active)


def scan_active(*trees: Any) -> bool:
    """Whether the loop over ``trees`` (inputs, parameters, state) runs as one ``scan``:
    Dynamo is tracing, outside ``torch.func`` transforms, and every leaf is a tensor."""
    if not torch.compiler.is_dynamo_compiling() or _in_transform():
        return False
    return all(isinstance(leaf, torch.Tensor) for leaf in ltree.leaves(trees))


def _fresh(tree: Any, inputs: Sequence[Any]) -> Any:
    """``tree`` with every leaf that is one of ``inputs``' leaves copied (scan's outputs
    may not alias its inputs)."""
    seen = ltree.leaves(inputs)
    return ltree.map(lambda t: t.clone() if any(t is u for u in seen) else t, tree)


def _check_structure(owner: Layer, y: Any, carry: Any, new_st: Any, st: Any) -> None:
    if ltree.paths(y) != ltree.paths(carry) or ltree.paths(new_st) != ltree.paths(st):
        raise ValueError(
            f"{type(owner).__name__}: the repeated layer must return an output shaped like "
            f"its input and a state shaped like its state; got output {ltree.paths(y)} for "
            f"{ltree.paths(carry)} and state {ltree.paths(new_st)} for {ltree.paths(st)}"
        )


def stacked_calls(
    owner: Layer, layer: Layer, x: Any, ps: Params, st: State, n: int
) -> tuple[Any, State]:
    """``x_{i+1}, st_i' = layer(x_i, ps[i], st[i])`` for ``i < n`` over stacked ``ps``/``st``
    (leading dimension ``n``); returns ``x_n`` and the stacked new states. One ``scan``
    under Dynamo; the caller runs the eager loop (see :func:`scan_active`)."""
    index = torch.arange(n, device=_device(x))

    def step(h: Any, xs: tuple[Params, State, torch.Tensor]) -> tuple[Any, Any]:
        p, s, _ = xs
        y, new_s = layer(h, p, s)
        _check_structure(owner, y, h, new_s, s)
        return _fresh(y, (h, p, s)), (_fresh(new_s, (h, p, s)), _marker(y))

    y, (new_st, _) = scan(step, x, (ps, st, index))
    return y, new_st if ltree.leaves(st) else st


def repeated_calls(
    owner: Layer, layer: Layer, x: Any, ps: Params, st: State, n: int, *, injected: bool
) -> tuple[Any, State]:
    """``y, st = layer((y, x) if injected else y, ps, st)`` ``n`` times from ``y = x``,
    the same ``ps`` every time, as one ``scan`` (under Dynamo, see :func:`scan_active`)."""
    index = torch.arange(n, device=_device(x))

    def step(carry: tuple[Any, State], _: torch.Tensor) -> tuple[tuple[Any, State], Any]:
        y, s = carry
        out, new_s = layer((y, x) if injected else y, ps, s)
        _check_structure(owner, out, y, new_s, s)
        return (_fresh(out, (y, s, x, ps)), _fresh(new_s, (y, s, x, ps))), _marker(out)

    start = ltree.map(torch.clone, x) if injected else x  # x is also read in every step
    (y, new_st), _ = scan(step, (start, st), index)
    return y, new_st


def _marker(y: Any) -> torch.Tensor:
    """A per-step output of the scan besides the state: Inductor's lowering of ``scan``
    needs at least one, and an integer one breaks scan's autograd (torch 2.13)."""
    return ltree.leaves(y)[0].new_zeros(())


def _device(x: Any) -> torch.device:
    leaves = ltree.leaves(x)
    return leaves[0].device if leaves else torch.device("cpu")
