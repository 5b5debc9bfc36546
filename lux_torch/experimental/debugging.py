"""NaN/Inf checks that name the layer path: :func:`debug` and :class:`DebugLayer`.

Lux's ``DebugLayer`` applied to every layer of a model, for eager debugging.
"""

from __future__ import annotations

from typing import Any

import optree
import torch

from .. import tree as ltree
from .._graph import assume_constant_result
from ..core import Layer, Params, State, map_children
from ..display import short_repr


class _GradCheck(torch.autograd.Function):
    """Identity whose backward checks the incoming gradient for NaN/Inf."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, where: str, what: str) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.where, ctx.what = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        _check_finite(grad, ctx.where, ctx.what)
        return grad, None, None

    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor, *_: Any) -> torch.Tensor:
        return tangent.view_as(tangent)  # forward mode: the identity's (nothing to check)


def _check_finite(t: Any, where: str, what: str) -> None:
    """Raise ``FloatingPointError`` naming ``where`` if ``t`` holds NaN or Inf."""
    if not ltree.is_inexact(t):
        return
    try:
        ok = bool(torch.isfinite(t).all())
    except RuntimeError as err:  # e.g. under torch.func.vmap: values cannot be read
        raise RuntimeError(
            f"lux.debug: {where}: cannot read {what} to check it ({err}). A debug model "
            "reads values on the host and runs eagerly only: not under torch.func.vmap "
            "or torch.compile"
        ) from err
    if ok:
        return
    nan, inf = int(t.isnan().sum()), int(t.isinf().sum())
    counts = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "Inf")) if n)
    raise FloatingPointError(f"lux.debug: {where}: {counts} of {t.numel()} elements in {what}")


def _named_leaves(tree: Any, root: str) -> list[tuple[str, Any]]:
    paths, leaves, _ = optree.tree_flatten_with_path(tree, namespace=ltree.NAMESPACE)
    names = [root + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in p) for p in paths]
    return list(zip(names, leaves, strict=True))


def _wrap_grads(tree: Any, root: str, where: str, what: str) -> Any:
    """``tree`` with each floating tensor passed through :class:`_GradCheck`; ``what``
    describes its gradient (``{name}`` is replaced by the leaf's name)."""
    paths, leaves, spec = optree.tree_flatten_with_path(tree, namespace=ltree.NAMESPACE)
    out = []
    for p, leaf in zip(paths, leaves, strict=True):
        if ltree.is_inexact(leaf):
            name = root + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in p)
            leaf = _GradCheck.apply(leaf, where, what.format(name=name))  # type: ignore[no-untyped-call]  # unannotated in torch
        out.append(leaf)
    return optree.tree_unflatten(spec, out)


class _EagerOnlyError(RuntimeError, AssertionError):
    """A debug model traced by Dynamo where the trace must be one graph.

    A ``RuntimeError``; also an ``AssertionError`` only because Dynamo re-raises assertion
    errors from code it runs (rather than traces) unchanged, where it would replace any
    other exception by its own ("Observed exception", or an internal error) with this
    message buried in the details.
    """


@assume_constant_result
def _refuse_one_graph(message: str) -> bool:
    """Raise ``message`` when the running Dynamo trace must be one graph
    (``fullgraph=True``, ``torch._dynamo.error_on_graph_break``); else ``False``.

    ``assume_constant_result`` makes Dynamo run this function while tracing instead of
    tracing it, so the exception reaches the user as raised. Dynamo's trace state is
    private: where it cannot be read this returns ``False`` (the error then comes from the
    traced ``raise`` in the caller, wrapped by Dynamo)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
        one_graph = bool(tx.one_graph or tx.error_on_graph_break)
    except (ImportError, AttributeError):
        return False
    if one_graph:
        raise _EagerOnlyError(message)
    return False


class _UnannotatedCall:
    """Holds :class:`DebugLayer`'s ``__call__``. Defined outside the Layer subclass, it is
    not wrapped by core's error annotation, so a debug wrapper adds no frame of its own
    and errors raised inside the model keep the wrapped model's layer paths."""

    def __call__(self: Any, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        if torch.compiler.is_compiling():
            message = (
                f"lux.debug: {self.where()}: a debug model checks values on the host at every "
                "layer and runs eagerly only; call it without torch.compile (or compile=True)"
            )
            # fullgraph=True: raised as is; otherwise Dynamo breaks the graph at the raise
            # below and runs this call eagerly
            _refuse_one_graph(message)
            raise RuntimeError(message)
        out: tuple[Any, State] = _checked_call(self, x, ps, st)
        return out


@torch.compiler.disable  # type: ignore[untyped-decorator]  # unannotated in torch
def _checked_call(layer: DebugLayer, x: Any, ps: Params, st: State) -> tuple[Any, State]:
    """The checks and the wrapped call, never traced by Dynamo (see :func:`debug`)."""
    where = layer.where()
    root = layer.path == ""
    if layer.forward:
        if root:
            for name, leaf in _named_leaves(ps, "ps"):
                _check_finite(leaf, where, f"the parameter {name}")
            for name, leaf in _named_leaves(st, "st"):
                _check_finite(leaf, where, f"the state {name}")
        for name, leaf in _named_leaves(x, "x"):
            _check_finite(leaf, where, f"the input {name}")
    if layer.backward:
        # parameters once, at the root: their dicts stay shared below, so errors raised
        # inside the model keep naming the layer paths (core matches ps by identity)
        if root:
            ps = _wrap_grads(
                ps, "ps", where, "the gradient w.r.t. the parameter {name} (summed over its uses)"
            )
        x = _wrap_grads(
            x,
            "x",
            where,
            "the gradient w.r.t. the input {name} (computed by the backward of this layer)",
        )
    y, new_st = layer.layer(x, ps, st)
    if layer.forward:
        for name, leaf in _named_leaves(y, "y"):
            _check_finite(leaf, where, f"the output {name}")
        for name, leaf in _named_leaves(new_st, "st"):
            _check_finite(leaf, where, f"the returned state {name}")
    return y, new_st


class DebugLayer(_UnannotatedCall, Layer):
    """``layer`` with NaN/Inf checks around its call (Lux's ``DebugLayer``); see :func:`debug`.

    Arguments:
        layer: the layer to check.
        path: its dotted path in the model (``""``: the root, which also checks every
            parameter and state tensor and the gradients of the parameters).
        forward: check inputs, outputs and returned states in the forward pass.
        backward: check the gradients with respect to the inputs (and, at the root, the
            parameters) that the backward pass computes.

    Input:
        Whatever ``layer`` accepts.

    Returns:
        ``layer``'s output and new state, after the checks.

    **Parameters** / **States**
        Exactly ``layer``'s: the wrapper is transparent.

    Raises:
        FloatingPointError: a NaN/Inf, naming the path, the layer and the tensor.
    """

    layer: Layer
    path: str = ""
    forward: bool = True
    backward: bool = True

    def init_params(self, key: torch.Tensor) -> Params:
        return self.layer.init_params(key)

    def init_state(self, key: torch.Tensor) -> State:
        return self.layer.init_state(key)

    def where(self) -> str:
        """``"layer_2.layer_1 (Linear(16 => 1))"``; ``"model (...)"`` for the root."""
        return f"{self.path or 'model'} ({short_repr(self.layer)})"


def _instrument(layer: Layer, path: str, forward: bool, backward: bool) -> Layer:
    inner = map_children(
        layer,
        lambda name, child: _instrument(
            child, f"{path}.{name}" if path else name, forward, backward
        ),
    )
    return DebugLayer(inner, path, forward, backward)


def debug(model: Layer, *, forward: bool = True, backward: bool = True) -> DebugLayer:
    """A copy of ``model`` whose every layer checks for NaN/Inf and names its path.

    Lux's ``DebugLayer`` applied to every layer. Each layer (containers included) is
    wrapped in a transparent :class:`DebugLayer` that, in the forward pass, checks its
    inputs, its outputs and the state it returns, and, in the backward pass, the gradient
    that its backward computes with respect to its inputs (through an identity
    ``torch.autograd.Function``, so ``torch.autograd``, ``torch.func.grad`` and
    :func:`lux_torch.train_step` all trigger it). The root also checks every parameter and
    state tensor, and the gradients of the parameters (named by their paths).

    The first problem raises ``FloatingPointError`` naming the layer, e.g.
    ``lux.debug: layer_2.layer_1 (Linear(16 => 1)): 3 NaN of 4 elements in the output y``
    or ``lux.debug: layer_2 (WrappedFunction(sqrt)): 2 Inf of 32 elements in the gradient
    w.r.t. the input x (computed by the backward of this layer)``. The backward check
    reports every non-finite gradient a layer produces, also one that a later operation
    would mask (an Inf multiplied by ``relu``'s zero derivative). Other errors, such as
    shape errors, keep the notes that name the failing layer's path, as without
    ``debug``. ``ps`` and ``st`` are those of ``model`` (``setup`` gives the same trees).

    **For eager debugging only**: every check reads values on the host (a device sync
    per tensor and layer). Under ``torch.compile(fullgraph=True)`` (and
    ``train_step(compile=True)``) the debug model raises while tracing, and the exception
    that reaches the caller is lux's ``RuntimeError('lux.debug: ... runs eagerly only ...')``
    (not Dynamo's "Observed exception" wrapper). Without ``fullgraph``, Dynamo
    runs the debug model eagerly (``torch.compiler.disable``), with every check. Under
    ``torch.func.vmap`` values cannot be read: the checks raise ``RuntimeError`` naming
    the layer, so layers that ``vmap`` their children (``Ensemble``) cannot be debugged
    inside; debug their member layer instead.

    Arguments:
        model: the model.
        forward: check the forward pass.
        backward: check the backward pass.

    Returns:
        The instrumented model (a :class:`DebugLayer`).

    Example:
        >>> y, _ = lux.debug(model)(x, ps, st)  # doctest: +SKIP
    """
    if not isinstance(model, Layer):
        raise TypeError(f"debug: model must be a lux_torch Layer, got {type(model).__name__}")
    out = _instrument(model, "", forward, backward)
    assert isinstance(out, DebugLayer)
    return out
