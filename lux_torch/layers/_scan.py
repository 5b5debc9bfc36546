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
and strides (torch raises otherwise); no output aliases an input or another output (a state
entry the block returns unchanged is copied, and so is the carry, see :func:`_copies`;
copies are exact); the loop runs ``n`` times (an index ``0..n-1`` is always scanned, so a
block without parameters or state still runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import tree as ltree
from .._graph import assume_constant_result
from ..core import Layer, Params, State

__all__ = ["repeated_calls", "scan_active", "stacked_calls"]


def _transform_active() -> bool:
    """Whether a ``torch.func`` transform is active."""
    return torch._C._functorch.peek_interpreter_stack() is not None


# read for real while Dynamo traces (Dynamo's own answer for the stack is an opaque object)
_in_transform: Callable[[], bool] = assume_constant_result(_transform_active)


def scan_active(*trees: Any) -> bool:
    """Whether the loop over ``trees`` (inputs, parameters, state) runs as one ``scan``:
    Dynamo is tracing, outside ``torch.func`` transforms, and every leaf is a tensor."""
    if not torch.compiler.is_dynamo_compiling() or _in_transform():
        return False
    return all(isinstance(leaf, torch.Tensor) for leaf in ltree.leaves(trees))


def _fresh(tree: Any, inputs: Any) -> list[torch.Tensor]:
    """The leaves of ``tree``, those that are leaves of ``inputs`` copied (a scan's outputs
    may not alias its inputs; the operator's outputs are tensors, so the structure, static
    flags included, is rebuilt outside)."""
    seen = ltree.leaves(inputs)
    return [t.clone() if any(t is u for u in seen) else t for t in ltree.leaves(tree)]


def _copies(carry: Any) -> list[torch.Tensor]:
    """The carry's leaves, copied: with Inductor's partitioner the backward may save the
    block's output itself, and an output of the scan's forward may then alias another
    ("scan might be aliasing", torch 2.13, e.g. a block ending in ``tanh``). Exact; Inductor
    writes the copy in the same kernel."""
    return [t.clone() for t in ltree.leaves(carry)]


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
    x_spec, st_spec = ltree.structure(x), ltree.structure(st)
    index = torch.arange(n, device=_device(x))

    def step(h: list[torch.Tensor], xs: tuple[Params, State, torch.Tensor]) -> Any:
        p, s, _ = xs
        carry = ltree.unflatten(x_spec, h)
        y, new_s = layer(carry, p, s)
        _check_structure(owner, y, carry, new_s, s)
        return _copies(y), (_fresh(new_s, (h, p, s)), _marker(y))

    from torch._higher_order_ops.scan import scan  # imports Dynamo: only when tracing

    y, (new_st, _) = scan(step, ltree.leaves(x), (ps, st, index))
    return ltree.unflatten(x_spec, y), ltree.unflatten(st_spec, new_st) if new_st else st


def repeated_calls(
    owner: Layer, layer: Layer, x: Any, ps: Params, st: State, n: int, *, injected: bool
) -> tuple[Any, State]:
    """``y, st = layer((y, x) if injected else y, ps, st)`` ``n`` times from ``y = x``,
    the same ``ps`` every time, as one ``scan`` (under Dynamo, see :func:`scan_active`)."""
    x_spec, st_spec = ltree.structure(x), ltree.structure(st)
    n_x = len(ltree.leaves(x))
    index = torch.arange(n, device=_device(x))

    def step(carry: list[torch.Tensor], _: torch.Tensor) -> Any:
        y = ltree.unflatten(x_spec, carry[:n_x])
        s = ltree.unflatten(st_spec, carry[n_x:])
        out, new_s = layer((y, x) if injected else y, ps, s)
        _check_structure(owner, out, y, new_s, s)
        inputs = (carry, x, ps)
        return _copies(out) + _fresh(new_s, inputs), _marker(out)

    start = ltree.leaves(x)
    if injected:  # x is also read in every step: the carry may not alias it
        start = [t.clone() for t in start]
    from torch._higher_order_ops.scan import scan  # imports Dynamo: only when tracing

    final, _ = scan(step, start + ltree.leaves(st), index)
    return ltree.unflatten(x_spec, final[:n_x]), ltree.unflatten(st_spec, final[n_x:])


def _marker(y: Any) -> torch.Tensor:
    """A per-step output of the scan besides the state: Inductor's lowering of ``scan``
    needs at least one, and an integer one breaks scan's autograd (torch 2.13)."""
    first: torch.Tensor = ltree.leaves(y)[0]
    return first.new_zeros(())


def _device(x: Any) -> torch.device:
    leaves = ltree.leaves(x)
    return leaves[0].device if leaves else torch.device("cpu")
