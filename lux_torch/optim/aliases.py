"""The optimizer aliases (:func:`sgd`, :func:`adam`, ...) and :func:`step`, the one place
that runs a fused kernel where an optimizer's descriptor allows (see
:mod:`lux_torch.optim`)."""

from __future__ import annotations

from typing import Any

import torch

from .._graph import is_channels_last
from ..tree import flatten, unflatten
from . import foreach as fe
from ._base import (
    FusedAdam,
    FusedSGD,
    GradientTransformation,
    LeafUpdate,
    LearningRate,
    Reduced,
    Scalar,
    Schedule,
    State,
    Tree,
    along,
    check_lr,
    check_nonneg,
    check_shapes,
    described,
    flatten_checked,
    inc,
    leaves_up_to,
    plain_count,
)
from .transforms import (
    add_decayed_weights,
    apply_updates,
    chain,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_rms,
    trace,
)

# ----------------------------------------------------------------------------- aliases


def sgd(
    lr: LearningRate,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Stochastic gradient descent, equal to ``torch.optim.SGD`` (dampening 0)::

        g   = g + weight_decay * p
        buf = momentum * buf + g
        u   = -lr * buf              (-lr * (g + momentum * buf) with nesterov)

    With a constant learning rate or a schedule it carries an :class:`FusedSGD` descriptor:
    :func:`step` then runs torch's fused SGD kernel (eager, CPU or CUDA), in place on the
    given buffers with ``donate=True``.

    Arguments:
        lr: learning rate (float or schedule).
        momentum: momentum factor.
        nesterov: Nesterov momentum.
        weight_decay: L2 penalty added to the gradients.

    Returns:
        A :class:`GradientTransformation` with state ``((), {"buf"} or (), {"count"})``: the
        states of ``add_decayed_weights``, ``trace`` and ``scale_by_learning_rate``.

    Example:
        >>> opt = sgd(0.1, momentum=0.9)
    """
    check_lr(lr, "sgd")
    opt = chain(
        add_decayed_weights(weight_decay), trace(momentum, nesterov), scale_by_learning_rate(lr)
    )
    if not _fusable(lr, momentum, weight_decay):
        return opt
    return described(opt, FusedSGD(_rate(lr), float(momentum), nesterov, float(weight_decay)))


def adam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Adam, equal to ``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradients).

    Arguments:
        lr: learning rate (float or schedule).
        betas: moment decay rates.
        eps: numerical stabiliser.
        weight_decay: L2 penalty.

    Returns:
        A :class:`GradientTransformation` with state ``((), {"count", "mu", "nu"},
        {"count"})``: the states of ``add_decayed_weights``, ``scale_by_adam`` and
        ``scale_by_learning_rate``.

    Example:
        >>> opt = adam(1e-3)
    """
    check_lr(lr, "adam")
    opt = chain(
        add_decayed_weights(weight_decay), scale_by_adam(betas, eps), scale_by_learning_rate(lr)
    )
    if not _fusable(lr, eps, weight_decay):
        return opt
    return described(opt, FusedAdam(False, _rate(lr), betas, eps, weight_decay, 1))


def adamw(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> GradientTransformation:
    """AdamW (decoupled weight decay), equal to ``torch.optim.AdamW``.

    Arguments:
        lr: learning rate (float or schedule); also scales the decay.
        betas: moment decay rates.
        eps: numerical stabiliser.
        weight_decay: decoupled decay factor.

    Returns:
        A :class:`GradientTransformation` with state ``({"count", "mu", "nu"}, (),
        {"count"})``: the states of ``scale_by_adam``, ``add_decayed_weights`` and
        ``scale_by_learning_rate``.

    Example:
        >>> opt = adamw(1e-3, weight_decay=1e-2)
    """
    check_lr(lr, "adamw")
    opt = chain(
        scale_by_adam(betas, eps), add_decayed_weights(weight_decay), scale_by_learning_rate(lr)
    )
    if not _fusable(lr, eps, weight_decay):
        return opt
    return described(opt, FusedAdam(True, _rate(lr), betas, eps, weight_decay, 0))


def _fusable(lr: Any, *values: Any) -> bool:
    """Whether a fused kernel can take these hyperparameters: Python numbers and a number or
    schedule for ``lr`` (values injected by ``inject_hyperparams`` are tensors: ``update``)."""
    return all(isinstance(v, float | int) for v in (*values, *(() if callable(lr) else (lr,))))


def _rate(lr: LearningRate) -> float | Schedule:
    return lr if callable(lr) else float(lr)


_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_Leaves = list[torch.Tensor]


def step(
    optimizer: GradientTransformation, grads: Tree, state: State, ps: Tree, *, donate: bool = False
) -> tuple[Tree, State]:
    """``update`` then :func:`apply_updates` in one call: ``(new_ps, new_state)``.

    This is the one place that picks a fast path, from ``optimizer.descriptor``: for
    :func:`adam` and :func:`adamw` (a :class:`FusedAdam` descriptor) and :func:`sgd` (a
    :class:`FusedSGD`), with a constant learning rate or a schedule, in eager mode on CPU or
    CUDA, it runs torch's fused Adam or SGD kernel instead: one kernel, the same state,
    numerics equal up to floating-point rounding. A
    :class:`Reduced` optimizer (e.g. ``DistributedOptimizer``) reduces the gradients
    first, then steps its inner optimizer.

    Arguments:
        optimizer: the transformation.
        grads: gradients with the structure of ``ps``.
        state: the optimizer state.
        ps: the parameters.
        donate: allow the fused implementation to overwrite ``ps`` and ``state`` in place
            (like JAX's ``donate_argnums``): no copies, ``torch.optim``'s speed; the given
            ``ps`` and ``state`` must not be used afterwards. Ignored by the generic path.

    Returns:
        ``(new_ps, new_state)``; ``ps`` and ``state`` are not modified unless donated.

    Example:
        >>> ps, state = step(adam(1e-3), grads, state, ps)
    """
    return step_unchecked(optimizer, grads, state, ps, donate)


def step_unchecked(
    optimizer: GradientTransformation, grads: Tree, state: State, ps: Tree, donate: bool
) -> tuple[Tree, State]:
    """:func:`step` (which checks the structure of ``grads`` just the same)."""
    p, spec = flatten(ps)
    return _step(optimizer, grads, _grads_along(spec, grads, ps), state, ps, p, spec, donate)


def _grads_along(spec: Any, grads: Tree, ps: Tree) -> _Leaves:
    """The leaves of ``grads`` along ``spec``, the structure of ``ps``, or the named error."""
    g = along(spec, grads)
    return flatten_checked(grads, ps, "grads")[0] if g is None else g  # reorders or raises


def _step(
    optimizer: GradientTransformation,
    grads: Tree,
    g: _Leaves,
    state: State,
    ps: Tree,
    p: _Leaves,
    spec: Any,
    donate: bool,
) -> tuple[Tree, State]:
    """:func:`step` given also the leaves ``g`` and ``p`` of ``grads`` and ``ps`` along
    ``spec``, the structure of ``ps``: one flatten per step."""
    descriptor = optimizer.descriptor
    if isinstance(descriptor, Reduced):
        grads = descriptor.reduce(grads)
        g = _grads_along(spec, grads, ps)
        return _step(descriptor.inner, grads, g, state, ps, p, spec, donate)
    fused = None
    if isinstance(descriptor, FusedAdam):
        fused = _fused_adam(descriptor, g, state, p, spec, donate)
    elif isinstance(descriptor, FusedSGD):
        fused = _fused_sgd(descriptor, g, state, p, spec, donate)
    if fused is not None:
        return fused
    if isinstance(optimizer.update, LeafUpdate):  # a chain of them: update on the leaves
        out = optimizer.update.leaves(g, spec, state, p, False)
        if out is not None:
            u, state, owned = out
            check_shapes("updates", u, p, spec)
            # p + u, written into u where it is this update's temporary (u + p is p + u)
            return unflatten(spec, fe.add_(u, p) if owned else fe.add(p, u)), state
    updates, state = optimizer.update(grads, state, ps)
    return apply_updates(ps, updates), state


def has_fused_step(optimizer: GradientTransformation) -> bool:
    """Whether :func:`step` may run a fused in-place kernel for ``optimizer``."""
    descriptor = optimizer.descriptor
    if isinstance(descriptor, Reduced):
        return has_fused_step(descriptor.inner)
    return isinstance(descriptor, FusedAdam | FusedSGD)


def _fused_adam(
    adam: FusedAdam, g: _Leaves, state: State, p: _Leaves, spec: Any, donate: bool
) -> tuple[Tree, State] | None:
    """One step of torch's fused Adam kernel (``torch._fused_adam_`` / ``_fused_adamw_``)
    on copies of the parameters ``p`` and moments (inputs untouched), or on the given
    buffers themselves with ``donate=True``; ``None`` (use ``update``) when traced, under
    ``torch.func`` transforms, or for leaves the kernel does not take."""
    if not _kernel_may_run(p):
        return None
    leaves = _fusable_leaves(g, state, p, spec, adam.moments)
    if leaves is None:
        return None
    count, mu, nu = leaves
    lr = _learning_rate(adam.lr, state, p)
    if lr is None:
        return None
    g = _laid_out_as(g, p)
    steps = [torch.full((), count + 1, dtype=torch.float32, device=p[0].device)] * len(p)
    if not donate:  # the in-place kernel on copies: no copy of the gradients
        p, mu, nu = ([t.clone() for t in x] for x in (p, mu, nu))
    kernel = torch._fused_adamw_ if adam.decoupled else torch._fused_adam_
    kernel(
        p,
        g,
        mu,
        nu,
        [],
        steps,
        lr=lr,
        beta1=adam.betas[0],
        beta2=adam.betas[1],
        weight_decay=adam.weight_decay,
        eps=adam.eps,
        amsgrad=False,
        maximize=False,
    )
    new_state = list(state)  # the chain's state: the moments and both counts advanced
    moments = state[adam.moments]
    new_state[adam.moments] = {
        "count": inc(moments["count"]),
        "mu": unflatten(spec, mu),
        "nu": unflatten(spec, nu),
    }
    new_state[-1] = {"count": inc(state[-1]["count"])}
    return unflatten(spec, p), tuple(new_state)


def _kernel_may_run(p: _Leaves) -> bool:
    """Whether a fused kernel may update the parameters ``p``: there are some, none is
    recorded by autograd, and no Dynamo trace, ``torch.func`` transform or dispatch mode
    (make_fx, fake tensors) is active (the kernels have no batching rule, no derivative and
    are not traced)."""
    return (
        bool(p)
        and not torch.compiler.is_compiling()
        and torch._C._functorch.peek_interpreter_stack() is None
        and torch._C._len_torch_dispatch_stack() == 0
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in p))
    )


def _laid_out_as(g: _Leaves, p: _Leaves) -> _Leaves:
    """The gradients laid out as the parameters: the fused kernels walk memory linearly,
    ignoring strides (a transposed gradient, as vmapped matmuls produce, silently updated
    the wrong elements), so each gradient is copied into its parameter's layout unless it
    is in it already (the dtype is kept)."""
    return [
        t if _walks_alike(t, q) else torch.empty_like(q, dtype=t.dtype).copy_(t)
        for t, q in zip(g, p, strict=True)
    ]


def _walks_alike(t: torch.Tensor, p: torch.Tensor) -> bool:
    """Whether a linear walk of ``t``'s memory meets its elements in the order of ``p``'s:
    both contiguous, or the same strides of a channels-last ``p`` (a 2-D/3-D convolution
    weight stored channels-last, as a compiled step's gradients come)."""
    if t.is_contiguous() and p.is_contiguous():
        return True
    return t.stride() == p.stride() and is_channels_last(p)


def _fused_sgd(
    sgd: FusedSGD, g: _Leaves, state: State, p: _Leaves, spec: Any, donate: bool
) -> tuple[Tree, State] | None:
    """One step of torch's fused SGD kernel (``torch._fused_sgd_``) on copies of the
    parameters ``p`` and momentum buffers (inputs untouched), or on the given buffers
    themselves with ``donate=True``; ``None`` (use ``update``) where :func:`_fused_adam`
    gives ``None``. The buffers start at zero (``trace``'s state), so every step is the
    kernel's non-first step: ``buf = momentum * buf + g`` is ``g`` on the first."""
    if not _kernel_may_run(p) or not _member(state, -1, "count"):  # count: on any device
        return None
    bufs: _Leaves | None = []
    if sgd.momentum != 0.0:
        bufs = leaves_up_to(spec, state[1]["buf"]) if _member(state, 1, "buf") else None
    if bufs is None or not _kernel_takes(p, g, *([bufs] if bufs else [])):
        return None
    lr = _learning_rate(sgd.lr, state, p)
    if lr is None:
        return None
    g = _laid_out_as(g, p)
    if not donate:  # the in-place kernel on copies: no copy of the gradients
        p, bufs = [t.clone() for t in p], [t.clone() for t in bufs]
    torch._fused_sgd_(
        p,
        g,
        bufs,
        weight_decay=sgd.weight_decay,
        momentum=sgd.momentum,
        lr=lr,
        dampening=0.0,
        nesterov=sgd.nesterov,
        maximize=False,
        is_first_step=False,
    )
    trace_state = {"buf": unflatten(spec, bufs)} if bufs else state[1]
    return unflatten(spec, p), (state[0], trace_state, {"count": inc(state[-1]["count"])})


def _learning_rate(lr: float | Schedule, state: State, p: _Leaves) -> float | torch.Tensor | None:
    """The learning rate of this step for a fused kernel: the constant, or the schedule at
    the count of ``scale_by_learning_rate`` (the chain's last state), which is what
    ``update`` multiplies by; a CPU value as a float (read without a device sync), a 0-dim
    floating tensor on the parameters' device as it is; ``None`` (use ``update``) for any
    other value the schedule gives."""
    if not callable(lr):
        return lr
    value = lr(state[-1]["count"])
    if not isinstance(value, torch.Tensor):
        return float(value)
    if value.dim() != 0 or not value.is_floating_point():
        return None
    if value.device.type == "cpu":
        return float(value)
    return value if value.device == p[0].device else None


def _member(state: State, at: int, key: str) -> bool:
    """Whether ``state``, a chain's state of three members, has ``key`` in member ``at``."""
    return (
        isinstance(state, tuple)
        and len(state) == 3
        and isinstance(state[at], dict)
        and key in state[at]
    )


def _fusable_leaves(
    g: _Leaves, state: State, p: _Leaves, spec: Any, at: int
) -> tuple[int, _Leaves, _Leaves] | None:
    """``(count, mu, nu)``, the moments flat along ``spec``, for one fused Adam step;
    ``None`` where the kernel cannot run: a state of another layout, a traced or batched
    step count, or leaves the kernel does not take (:func:`_kernel_takes`)."""
    if not all(_member(state, at, k) for k in ("count", "mu", "nu")):
        return None
    if not _member(state, -1, "count"):
        return None
    moments = state[at]
    count = plain_count(moments["count"])
    if count is None:
        return None
    mu, nu = leaves_up_to(spec, moments["mu"]), leaves_up_to(spec, moments["nu"])
    if mu is None or nu is None or not _kernel_takes(p, g, mu, nu):
        return None
    return count, mu, nu


def _kernel_takes(p: _Leaves, g: _Leaves, *moments: _Leaves) -> bool:
    """Whether a fused kernel takes these leaves: plain strided tensors on one CPU or CUDA
    device, in a float dtype, of the parameters' shapes, with parameters contiguous or
    channels-last and moments (or momentum buffers) laid out as their parameters."""
    device = p[0].device
    if device.type not in ("cpu", "cuda"):
        return False
    shapes = [t.shape for t in p]
    if any([t.shape for t in x] != shapes for x in (g, *moments)):
        return False
    cpu = device.type == "cpu"  # is_cpu: no device object per tensor
    kept = [t for x in moments for t in x]
    return all(
        type(t) is torch.Tensor
        and (t.is_cpu if cpu else t.device == device)
        and t.dtype in _FUSED_DTYPES
        and t.layout is torch.strided
        for t in (*p, *g, *kept)
    ) and all(
        (q.is_contiguous() or is_channels_last(q)) and all(_walks_alike(m[i], q) for m in moments)
        for i, q in enumerate(p)
    )


def rmsprop(
    lr: LearningRate = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
    centered: bool = False,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """RMSprop, equal to ``torch.optim.RMSprop``.

    Arguments:
        lr: learning rate (float or schedule).
        alpha: smoothing constant.
        eps: added after the square root.
        momentum: momentum factor applied to the scaled gradient.
        centered: normalise by the estimated variance.
        weight_decay: L2 penalty added to the gradients.

    Returns:
        A :class:`GradientTransformation` with state ``((), {"count", "mu", "nu"},
        {"buf"} or (), {"count"})``: the states of ``add_decayed_weights``,
        ``scale_by_rms``, ``trace`` and ``scale_by_learning_rate``.

    Example:
        >>> opt = rmsprop(1e-2, centered=True)
    """
    check_lr(lr, "rmsprop")
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_rms(alpha, eps, centered),
        trace(momentum),
        scale_by_learning_rate(lr),
    )


def adagrad(
    lr: LearningRate = 1e-2,
    eps: float = 1e-10,
    initial_accumulator_value: float = 0.0,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Adagrad, equal to ``torch.optim.Adagrad``.

    The step size after ``count`` updates is ``lr / (1 + count * lr_decay)``.

    Arguments:
        lr: learning rate (float or schedule).
        eps: added after the square root.
        initial_accumulator_value: starting sum of squares.
        lr_decay: learning-rate decay (>= 0).
        weight_decay: L2 penalty added to the gradients.

    Returns:
        A :class:`GradientTransformation` with state ``((), {"count", "sum"}, {"count"})``:
        the states of ``add_decayed_weights``, ``scale_by_adagrad`` and
        ``scale_by_learning_rate``.

    Example:
        >>> opt = adagrad(1e-2, lr_decay=1e-3)
    """
    check_lr(lr, "adagrad")
    check_nonneg("lr_decay", lr_decay, "adagrad")
    step: LearningRate = lr
    if lr_decay != 0.0:

        def decayed(count: torch.Tensor) -> Scalar:
            base = lr(count) if callable(lr) else lr
            return base / (1.0 + count.to(torch.float64) * lr_decay)

        step = decayed
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_adagrad(eps, initial_accumulator_value),
        scale_by_learning_rate(step),
    )


def lion(
    lr: LearningRate = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Lion (Chen et al., 2023): sign updates with decoupled weight decay, as in optax.

    ``p -= lr * (sign(b1 * mu + (1 - b1) * g) + weight_decay * p)``, then
    ``mu = b2 * mu + (1 - b2) * g``.

    Arguments:
        lr: learning rate (float or schedule); also scales the decay. Lion wants a learning
            rate 3-10x smaller than AdamW's.
        betas: ``(beta1, beta2)`` of :func:`scale_by_lion`.
        weight_decay: decoupled decay factor.

    Returns:
        A :class:`GradientTransformation` with state ``({"count", "mu"}, (), {"count"})``:
        the states of ``scale_by_lion``, ``add_decayed_weights`` and
        ``scale_by_learning_rate``.

    Example:
        >>> opt = lion(1e-4, weight_decay=1.0)
    """
    check_lr(lr, "lion")
    return chain(
        scale_by_lion(betas), add_decayed_weights(weight_decay), scale_by_learning_rate(lr)
    )
