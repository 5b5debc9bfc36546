"""Automatic-differentiation helpers over a layer call (Lux's ``jacobian_vector_product``,
``vector_jacobian_product``, ``batched_jacobian``), built on :mod:`torch.func`.

Every function takes the call's arguments ``(model, x, ps, st, ...)`` and differentiates
``y = model(x, ps, st)[0]`` with respect to the input (``wrt="x"``, the default) or the
parameters (``wrt="ps"``), the state held fixed; it returns the values and the new state
of that call, as the call itself does::

    y, jv, st = lux.ad.jvp(model, x, ps, st, v)             # J v, forward mode
    y, vj, st = lux.ad.vjp(model, x, ps, st, w)             # J^T w, reverse mode
    jac, st = lux.ad.batched_jacobian(model, x, ps, st)     # (batch, out..., in...)
    value, hv, st = lux.ad.hessian_vector_product(model, x, ps, st, v, loss=loss)

The differentiated argument (``x`` or ``ps``) may be a tensor or a tree of tensors; all its
leaves must be floating-point (pass integer data, masks, ... inside ``x`` only with
``wrt="ps"``). Tangents and cotangents have the structure, shapes and dtypes of what they
stand for: a tangent like the differentiated argument, a cotangent like ``y``.

Forward mode runs every built-in layer (the ``jvp`` check of
:func:`lux_torch.testing.check_layer` keeps it so); the exceptions are configurations that
no ``torch.func`` transform can enter: ``DEQ(grad="implicit")``, ``NeuralODE`` with an
adaptive solver or regularization, ``HamiltonianNN(ad="autograd")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from . import tree as ltree
from ._graph import tracing
from .core import Layer, Params, State
from .display import short_repr

__all__ = [
    "batched_jacobian",
    "hessian_vector_product",
    "jacobian_vector_product",
    "jvp",
    "vector_jacobian_product",
    "vjp",
]

Wrt = Literal["x", "ps"]


def _owner(model: Layer, fn: str) -> str:
    return f"lux_torch.ad.{fn}({short_repr(model)})"


def _function(
    model: Layer, x: Any, ps: Params, st: State, wrt: Any, fn: str
) -> tuple[Callable[[Any], tuple[Any, State]], Any]:
    """``(f, primal)``: the call as a function of ``x`` or ``ps`` returning ``(y, new_st)``,
    and the argument it differentiates; the argument checked."""
    if wrt not in ("x", "ps"):
        raise ValueError(f"{_owner(model, fn)}: wrt must be 'x' or 'ps', got {wrt!r}")
    primal = x if wrt == "x" else ps
    for path, leaf in zip(ltree.paths(primal), ltree.leaves(primal), strict=True):
        if not (isinstance(leaf, torch.Tensor) and ltree.is_inexact(leaf)):
            what = type(leaf).__name__ if not isinstance(leaf, torch.Tensor) else leaf.dtype
            name = f"{wrt}.{path}" if path else wrt
            raise TypeError(
                f"{_owner(model, fn)}: every leaf of {wrt} must be a floating-point tensor to "
                f"differentiate with respect to it; {name} is {what}"
                + (
                    " (use wrt='ps' for inputs that hold integer data or masks)"
                    if wrt == "x"
                    else ""
                )
            )
    if not ltree.leaves(primal):
        raise ValueError(f"{_owner(model, fn)}: {wrt} has no tensors to differentiate")
    if wrt == "x":
        return (lambda v: model(v, ps, st)), primal
    return (lambda p: model(x, p, st)), primal


def _check_like(model: Layer, fn: str, what: str, given: Any, like: Any, like_name: str) -> None:
    """``given`` (a tangent or cotangent) has the structure, shapes and dtypes of ``like``."""
    if ltree.structure(given) != ltree.structure(like):
        raise ValueError(
            f"{_owner(model, fn)}: the {what} must have the structure of {like_name}: "
            f"got {ltree.structure(given)}, expected {ltree.structure(like)}"
        )
    for path, g, e in zip(ltree.paths(like), ltree.leaves(given), ltree.leaves(like), strict=True):
        name = f"{what}.{path}" if path else what
        if not isinstance(g, torch.Tensor) or not isinstance(e, torch.Tensor):
            raise TypeError(f"{_owner(model, fn)}: {name} must be a tensor, got {type(g).__name__}")
        if g.shape != e.shape or g.dtype != e.dtype:
            raise ValueError(
                f"{_owner(model, fn)}: {name} has shape {tuple(g.shape)} and dtype {g.dtype}; "
                f"{like_name} has {tuple(e.shape)} and {e.dtype}"
            )


def jacobian_vector_product(
    model: Layer, x: Any, ps: Params, st: State, tangent: Any, *, wrt: Wrt = "x"
) -> tuple[Any, Any, State]:
    """``J v`` by forward mode (:func:`torch.func.jvp`): Lux's ``jacobian_vector_product``.

    Arguments:
        model, x, ps, st: the call ``model(x, ps, st)``.
        tangent: ``v``, shaped like ``x`` (``wrt="x"``) or like ``ps`` (``wrt="ps"``).
        wrt: differentiate with respect to the input ``"x"`` or the parameters ``"ps"``;
            the state is held fixed.

    Returns:
        ``(y, jv, new_st)``: the output, ``J v`` shaped like ``y``, and the new state.

    Raises:
        ValueError, TypeError: a bad ``wrt``, a non-floating leaf in the differentiated
            argument, or a tangent whose structure, shapes or dtypes differ from it.
    """
    f, primal = _function(model, x, ps, st, wrt, "jacobian_vector_product")
    _check_like(model, "jacobian_vector_product", "tangent", tangent, primal, wrt)
    out: Any = torch.func.jvp(f, (primal,), (tangent,), has_aux=True)
    y, jv, new_st = out
    return y, jv, new_st


def vector_jacobian_product(
    model: Layer, x: Any, ps: Params, st: State, cotangent: Any, *, wrt: Wrt = "x"
) -> tuple[Any, Any, State]:
    """``J^T w`` by reverse mode (:func:`torch.func.vjp`): Lux's ``vector_jacobian_product``.

    Arguments:
        model, x, ps, st: the call ``model(x, ps, st)``.
        cotangent: ``w``, shaped like the output ``y``.
        wrt: differentiate with respect to the input ``"x"`` or the parameters ``"ps"``.

    Returns:
        ``(y, vj, new_st)``: the output, ``J^T w`` shaped like ``x`` (or ``ps``), and the new
        state.

    Raises:
        ValueError, TypeError: a bad ``wrt``, a non-floating leaf in the differentiated
            argument, or a cotangent whose structure, shapes or dtypes differ from ``y``.
    """
    f, primal = _function(model, x, ps, st, wrt, "vector_jacobian_product")
    out: Any = torch.func.vjp(f, primal, has_aux=True)
    y, pullback, new_st = out
    _check_like(model, "vector_jacobian_product", "cotangent", cotangent, y, "the output y")
    (vj,) = pullback(cotangent)
    return y, vj, new_st


#: Lux's short names.
jvp = jacobian_vector_product
vjp = vector_jacobian_product


def _batch_problem(model: Layer, x: Any, y: Any) -> None:
    fn = "batched_jacobian"
    if not isinstance(y, torch.Tensor) or not ltree.is_inexact(y):
        raise TypeError(
            f"{_owner(model, fn)}: the output must be one floating-point tensor, got "
            f"{type(y).__name__ if not isinstance(y, torch.Tensor) else y.dtype}"
        )
    if y.dim() == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{_owner(model, fn)}: the output must keep the batch dimension first: input "
            f"{tuple(x.shape)}, output {tuple(y.shape)}"
        )


def batched_jacobian(
    model: Layer,
    x: torch.Tensor,
    ps: Params,
    st: State,
    *,
    wrt: Wrt = "x",
    mode: Literal["forward", "reverse"] = "forward",
) -> tuple[Any, State]:
    """The Jacobian of every sample (Lux's ``batched_jacobian``, batch first).

    With ``wrt="x"`` the samples must be independent (output sample ``b`` depends on input
    sample ``b`` only, as in Lux), so the Jacobian of the whole batch is block diagonal and
    only its blocks are computed: ``J[b] = d y[b] / d x[b]``, with one forward-mode pass per
    input feature (``mode="forward"``) or one reverse-mode pass per output feature
    (``mode="reverse"``), each over the whole batch at once (vectorised by
    :func:`torch.func.vmap`). A layer that mixes samples (BatchNorm in training mode,
    attention over the wrong dimension) is refused: one extra pass with sample 0 perturbed
    alone must leave the other samples' outputs untouched.

    With ``wrt="ps"`` every sample depends on the same parameters: the result is, for each
    leaf of ``ps``, ``d y / d ps_leaf`` of shape ``(batch, out..., *leaf.shape)`` (per-sample
    Jacobians; no independence needed).

    Arguments:
        model, x, ps, st: the call; ``x`` one floating tensor ``(batch, in...)``, the
            output ``y`` one floating tensor ``(batch, out...)``.
        wrt: ``"x"`` or ``"ps"``.
        mode: ``"forward"`` (:func:`torch.func.jvp`, cheaper when the input is smaller than
            the output) or ``"reverse"`` (:func:`torch.func.vjp`).

    Returns:
        ``(jacobian, new_st)``: ``jacobian`` is ``(batch, out..., in...)`` for ``wrt="x"``;
        a tree like ``ps`` of ``(batch, out..., *leaf.shape)`` for ``wrt="ps"``.

    Raises:
        ValueError, TypeError: bad arguments, an output without the batch dimension, or
            (``wrt="x"``) a layer whose output samples depend on other input samples
            (``RuntimeError`` from the compiled graph's assertion under ``torch.compile``).
    """
    fn = "batched_jacobian"
    if mode not in ("forward", "reverse"):
        raise ValueError(f"{_owner(model, fn)}: mode must be 'forward' or 'reverse', got {mode!r}")
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise TypeError(
            f"{_owner(model, fn)}: x must be one tensor with a leading batch dimension, got "
            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else 'a scalar tensor'}"
        )
    f, primal = _function(model, x, ps, st, wrt, fn)
    if wrt == "ps":
        jac_fn = torch.func.jacfwd if mode == "forward" else torch.func.jacrev
        jac, (y, new_st) = jac_fn(lambda p: _with_value(f, p), has_aux=True)(primal)
        _batch_problem(model, x, y)
        return jac, new_st
    if mode == "forward":
        return _blocks_forward(model, f, x)
    return _blocks_reverse(model, f, x)


def _with_value(f: Callable[[Any], tuple[Any, State]], p: Any) -> tuple[Any, tuple[Any, State]]:
    y, new_st = f(p)
    return y, (y.detach() if isinstance(y, torch.Tensor) else y, new_st)


def _probe(like: torch.Tensor) -> torch.Tensor:
    """A direction for sample 0 only: ones there, zeros in every other sample."""
    probe = torch.zeros_like(like)
    probe[:1] = 1.0
    return probe


def _coupling_problem(model: Layer, leak: torch.Tensor) -> None:
    """``leak`` holds samples ``1:`` of the derivative that sample 0's probe caused: it
    must be zero. (Under ``torch.compile`` the check runs in the graph, as an assertion.)"""
    message = (
        f"{_owner(model, 'batched_jacobian')}: the samples are not independent (changing "
        "input sample 0 changes other output samples), so the per-sample Jacobians are "
        "not the blocks of the batch's Jacobian; put normalisation layers in test mode "
        "(lux.test_mode(st)) or differentiate the whole batch with torch.func.jacrev"
    )
    if tracing():
        torch._assert_async((leak == 0).all(), message)
    elif bool((leak != 0).any()):
        raise ValueError(message)


def _blocks_forward(
    model: Layer, f: Callable[[Any], tuple[Any, State]], x: torch.Tensor
) -> tuple[torch.Tensor, State]:
    batch, in_shape = x.shape[0], x.shape[1:]
    n_in = in_shape.numel()
    # tangent k: input feature k of every sample; the last one probes sample 0 alone
    eye = torch.eye(n_in, dtype=x.dtype, device=x.device).reshape(n_in, 1, *in_shape)
    tangents = torch.cat([eye.expand(n_in, batch, *in_shape), _probe(x)[None]])

    def push(v: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, State]]:
        out: Any = torch.func.jvp(f, (x,), (v,), has_aux=True)
        y, jv, new_st = out
        return jv, (y, new_st)

    columns, (ys, new_sts) = torch.func.vmap(push, out_dims=(0, None))(tangents)  # type: ignore[arg-type]
    _batch_problem(model, x, ys)
    _coupling_problem(model, columns[-1, 1:])
    out_dims = ys.dim() - 1
    # (n_in, batch, out...) -> (batch, out..., in...)
    jac = columns[:-1].permute(*range(1, out_dims + 2), 0)
    return jac.reshape(*ys.shape, *in_shape), new_sts


def _blocks_reverse(
    model: Layer, f: Callable[[Any], tuple[Any, State]], x: torch.Tensor
) -> tuple[torch.Tensor, State]:
    out: Any = torch.func.vjp(f, x, has_aux=True)
    y, pullback, new_st = out
    _batch_problem(model, x, y)
    batch, out_shape = y.shape[0], y.shape[1:]
    n_out = out_shape.numel()
    eye = torch.eye(n_out, dtype=y.dtype, device=y.device).reshape(n_out, 1, *out_shape)
    cotangents = torch.cat([eye.expand(n_out, batch, *out_shape), _probe(y)[None]])
    (rows,) = torch.func.vmap(pullback)(cotangents)  # (n_out + 1, batch, in...)
    _coupling_problem(model, rows[-1, 1:])
    jac = rows[:-1].movedim(0, 1)  # (batch, n_out, in...)
    return jac.reshape(batch, *out_shape, *x.shape[1:]), new_st


def hessian_vector_product(
    model: Layer,
    x: Any,
    ps: Params,
    st: State,
    vector: Any,
    *,
    loss: Callable[[Any], torch.Tensor] | None = None,
    wrt: Wrt = "x",
) -> tuple[torch.Tensor, Any, State]:
    """``H v`` of the scalar ``loss(y)`` (forward over reverse: :func:`torch.func.jvp` of
    :func:`torch.func.grad`), without forming the Hessian.

    Arguments:
        model, x, ps, st: the call ``model(x, ps, st)``.
        vector: ``v``, shaped like ``x`` (``wrt="x"``) or ``ps`` (``wrt="ps"``).
        loss: maps the output ``y`` to a scalar tensor; ``None``: ``y`` itself must be a
            tensor with one element.
        wrt: ``"x"`` or ``"ps"``; the state is held fixed.

    Returns:
        ``(value, hv, new_st)``: the scalar value, ``H v`` shaped like ``vector``, and the
        new state.

    Raises:
        ValueError, TypeError: bad arguments, or a value that is not a scalar.
    """
    fn = "hessian_vector_product"
    f, primal = _function(model, x, ps, st, wrt, fn)
    _check_like(model, fn, "vector", vector, primal, wrt)

    def value(p: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, State]]:
        y, new_st = f(p)
        out = y if loss is None else loss(y)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"{_owner(model, fn)}: the value must be a scalar tensor, got {got}; pass "
                "loss=... to reduce the output to a scalar"
            )
        out = out.reshape(())
        return out, (out.detach(), new_st)

    gradient = torch.func.grad(value, has_aux=True)
    out: Any = torch.func.jvp(gradient, (primal,), (vector,), has_aux=True)
    _, hv, (val, new_st) = out
    return val, hv, new_st
