"""Activation checkpointing (rematerialisation): ``Checkpoint(layer)``.

A :class:`Checkpoint` runs its layer without keeping the layer's intermediate activations
for the backward pass; the backward recomputes them from the saved *inputs* (``x``, ``ps``
and ``st``), trading one more forward of the layer for the memory of its activations
(Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost", arXiv:1604.06174; JAX's
``jax.checkpoint``, Equinox's ``filter_checkpoint``).

How
---
``torch.utils.checkpoint(use_reentrant=False)`` drops activations through saved-tensor
hooks, which ``torch.func.grad`` refuses ("don't yet support saved tensor hooks"), and its reentrant
variant is an ``autograd.Function`` without ``setup_context``, which torch.func refuses as
well. So eagerly and under ``make_fx`` tracing (``train_step(compile=True, ad="func")``)
the layer runs inside an ``autograd.Function`` with ``setup_context`` that saves only its
input tensors and whose ``backward`` recomputes the layer under :func:`torch.func.vjp`:
that works with ``torch.autograd``, ``torch.func.grad``/``vjp``/``vmap`` alike.

Under Dynamo (``torch.compile``, ``train_step(compile=True, ad="autograd")``) the same
``autograd.Function`` would be traced into one joint graph, where the partitioner merges the
recomputation with the forward and saves the activations after all; there the call goes
through ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``, which Dynamo turns into
its ``tag_activation_checkpoint`` operator and the partitioner recomputes.

Memory
------
Measured on CPU (peak RSS growth during the first ``lux.train_step`` in a fresh process, 8
blocks ``Linear(64 => 256, tanh), Linear(256 => 256, tanh), Linear(256 => 64)``, batch
32768, float32, SGD; a step takes about 1.5x the plain step's time eagerly):

======================  =====================  ===================
path                    plain                  every block wrapped
======================  =====================  ===================
``ad="autograd"``       644 MiB                245 MiB
``compile=True``,       696 MiB                250 MiB
``ad="autograd"``
``ad="func"``           1671 MiB               1717 MiB
``compile=True``,       706 MiB                716 MiB
``ad="func"``
======================  =====================  ===================

The gradients are right on every path, but only the ``torch.autograd`` paths save memory:
``torch.func.grad`` always differentiates with ``create_graph=True`` (for higher-order
transforms), so the backward keeps its own intermediates, the recomputed activations
among them, until the gradient call returns; and the traced ``ad="func"`` graph is one
forward graph that Inductor schedules without a recompute decision. Hence
:attr:`Checkpoint.requires_autograd` is ``True``: ``train_step(ad="auto")`` (the default)
takes the autograd path, compiled or not. An explicit ``ad="func"`` still computes the
same gradients.

Randomness is a function of the keys in ``st`` (see :mod:`lux_torch.random`), so the
recomputation draws exactly the forward's dropout masks: no RNG state to stash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from .. import tree as ltree
from ..core import Layer, Params, State

__all__ = ["Checkpoint"]


class _Out:
    """Where the forward leaves the output's tree structure and its non-tensor leaves
    (``autograd.Function.forward`` returns tensors only). One object per call."""

    spec: Any = None
    leaves: tuple[Any, ...] = ()


_Fn = Callable[[tuple[torch.Tensor, ...]], tuple[Any, list[Any]]]


class _Remat(torch.autograd.Function):
    """``fn(tensors)``'s tensor outputs, saving only ``tensors``; the backward recomputes
    ``fn`` under :func:`torch.func.vjp`. ``fn`` returns ``(tree spec, leaves)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(fn: _Fn, out: _Out, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out.spec, leaves = fn(tensors)
        out.leaves = tuple(None if isinstance(v, torch.Tensor) else v for v in leaves)
        given = {id(t) for t in tensors}  # an input returned as is (a state in test mode)
        # must leave as a view: autograd refuses to save an output that is an input
        return tuple(
            v.view_as(v) if id(v) in given else v for v in leaves if isinstance(v, torch.Tensor)
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.fn = inputs[0]
        ctx.save_for_backward(*inputs[2:])
        ctx.save_for_forward(*inputs[2:])
        ctx.floating = [o.is_floating_point() or o.is_complex() for o in output]
        constant = [o for o, f in zip(output, ctx.floating, strict=True) if not f]
        if constant:
            ctx.mark_non_differentiable(*constant)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> Any:
        tensors = ctx.saved_tensors
        wanted = [i for i, needs in enumerate(ctx.needs_input_grad[2:]) if needs]
        outputs = _floating_outputs(ctx, tensors, wanted)
        outs, pullback = torch.func.vjp(outputs, *[tensors[i] for i in wanted])[:2]
        floating = [g for g, f in zip(grads, ctx.floating, strict=True) if f]
        cotangents = tuple(
            torch.zeros_like(o) if g is None else g for g, o in zip(floating, outs, strict=True)
        )
        result: list[torch.Tensor | None] = [None] * len(tensors)
        for i, g in zip(wanted, pullback(cotangents), strict=True):
            result[i] = g
        return (None, None, *result)

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        """Forward mode (``torch.func.jvp``, ``jacfwd``, ``hessian``): runs the layer again
        under :func:`torch.func.jvp`."""
        tensors = ctx.saved_tensors
        wanted = [i for i, t in enumerate(tangents[2:]) if _carries(t)]
        outputs = _floating_outputs(ctx, tensors, wanted)
        primals = tuple(tensors[i] for i in wanted)
        inputs = tuple(tangents[2 + i] for i in wanted)
        it = iter(torch.func.jvp(outputs, primals, inputs)[1])
        return tuple(next(it) if f else None for f in ctx.floating)


def _carries(tangent: torch.Tensor | None) -> bool:
    """Whether a tangent the forward rule was given can change the result. torch hands an
    input that has no tangent (a BatchNorm's running statistics in ``st``) a tensor of
    zeros; dropping an exactly zero tangent is exact (the JVP is linear in it) and keeps
    such inputs plain, as ops like ``batch_norm`` require. A tangent whose values cannot be
    read here (batched under ``vmap``) is kept."""
    if tangent is None:
        return False
    try:
        return bool(tangent.any())
    except RuntimeError:  # under vmap: a value cannot reach Python
        return True


def _floating_outputs(
    ctx: Any, tensors: tuple[torch.Tensor, ...], wanted: list[int]
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The floating and complex outputs of ``ctx.fn`` as a function of ``tensors[wanted]``."""

    def outputs(*diff: torch.Tensor) -> tuple[torch.Tensor, ...]:
        full = list(tensors)
        for i, d in zip(wanted, diff, strict=True):
            full[i] = d
        _, leaves = ctx.fn(tuple(full))
        outs = [v for v in leaves if isinstance(v, torch.Tensor)]
        return tuple(o for o, f in zip(outs, ctx.floating, strict=True) if f)

    return outputs


def _rematerialised(layer: Layer, x: Any, ps: Params, st: State) -> tuple[Any, State]:
    """``layer(x, ps, st)`` through :class:`_Remat`."""
    leaves, spec = ltree.flatten((x, ps, st))
    where = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]

    def fn(tensors: tuple[torch.Tensor, ...]) -> tuple[Any, list[Any]]:
        if all(t is leaves[i] for i, t in zip(where, tensors, strict=True)):
            # the given trees themselves (an eager forward): error notes find the layer's
            # path in the model by the identity of its ps
            y, new_st = layer(x, ps, st)
        else:
            full = list(leaves)
            for i, t in zip(where, tensors, strict=True):
                full[i] = t
            y, new_st = layer(*ltree.unflatten(spec, full))
        out, out_spec = ltree.flatten((y, new_st))
        return out_spec, out

    out = _Out()
    outputs = _Remat.apply(fn, out, *[leaves[i] for i in where])  # type: ignore[no-untyped-call]  # torch's
    tensors = iter(outputs)
    result = [next(tensors) if v is None else v for v in out.leaves]
    y, new_st = ltree.unflatten(out.spec, result)
    return y, new_st


class _UnannotatedCall:
    """Holds :class:`Checkpoint`'s ``__call__``. Defined outside the Layer subclass, it is
    not wrapped by core's shape checks and error notes: the wrapped layer does both, and
    errors keep the wrapped layer's paths."""

    def __call__(self: Any, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        layer: Layer = self.layer
        if torch.compiler.is_compiling():  # Dynamo: its own checkpoint operator
            out: tuple[Any, State] = torch_checkpoint(layer, x, ps, st, use_reentrant=False)
            return out
        return _rematerialised(layer, x, ps, st)


class Checkpoint(_UnannotatedCall, Layer):
    """``layer``, whose activations are recomputed in the backward pass instead of stored.

    Activation checkpointing (rematerialisation): the forward keeps only the layer's
    inputs (``x``, ``ps``, ``st``); the backward runs the layer again to rebuild what it
    needs. Peak memory of a deep model drops from every layer's activations to those of
    one checkpointed block at a time, for about one more forward pass of compute.
    Outputs, new state and gradients are those of ``layer`` (same maths, same order).

    Gives the plain layer's gradients with ``torch.autograd``, ``torch.func`` (``grad``,
    ``vjp``, ``jvp``, ``vmap``, ``hessian``) and :func:`lux_torch.train_step` on every path
    (``ad="func"``, ``ad="autograd"``, ``compile=True``); memory is saved on the autograd
    paths, which ``ad="auto"`` picks (see the module docstring for how and the figures).
    Dropout inside draws the same masks in the recomputation: they are functions of the
    keys in ``st``. Forward mode (``jvp``) runs the layer twice.

    Arguments:
        layer: the layer to checkpoint (often a block of a ``Chain``).

    Input:
        Whatever ``layer`` accepts.

    Returns:
        ``layer``'s output and new state.

    **Parameters** / **States**
        Exactly ``layer``'s (the wrapper is transparent, like Lux's wrapper layers):
        ``setup`` gives the same trees for ``Checkpoint(layer)`` and ``layer``.

    Example:
        >>> block = lux.Chain(lux.Linear(64, 64, activation=torch.tanh), lux.Linear(64, 64))
        >>> model = lux.Chain(*[Checkpoint(block) for _ in range(8)])  # doctest: +SKIP
    """

    layer: Layer

    @property
    def requires_autograd(self) -> bool:
        """``True``: checkpointing saves memory on the ``torch.autograd`` paths only (see the
        module docstring), so :func:`lux_torch.train_step` with ``ad="auto"`` takes them."""
        return True

    def __post_init__(self) -> None:
        if not isinstance(self.layer, Layer):
            raise TypeError(
                f"Checkpoint: layer must be a lux_torch Layer, got {type(self.layer).__name__}"
            )

    def init_params(self, key: torch.Tensor) -> Params:
        return self.layer.init_params(key)

    def init_state(self, key: torch.Tensor) -> State:
        return self.layer.init_state(key)
