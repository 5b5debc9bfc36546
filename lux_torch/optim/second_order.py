"""Sophia (Liu et al., 2023): clipped second-order steps with a diagonal Hessian estimate
(see :mod:`lux_torch.optim`).

The Hessian estimate differentiates the loss twice, so the update needs the loss: Sophia's
``update(grads, state, ps, *, obj_fn)`` takes ``obj_fn(ps) -> loss`` (the loss of the
current batch), as optax's ``sophia`` does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import random
from ..tree import flatten, unflatten
from ..tree import map as tree_map
from ._base import (
    GradientTransformation,
    LearningRate,
    State,
    Tree,
    inc,
    new_count,
    zeros_like_tree,
)
from ._checks import check_beta, check_int, check_lr, check_nonneg, check_positive, checked_leaves
from .transforms import add_decayed_weights, chain, scale_by_learning_rate

ObjFn = Callable[[Tree], torch.Tensor]


def hutchinson_diag_hessian(seed: int = 0) -> GradientTransformation:
    """Hutchinson's estimate of the Hessian's diagonal: ``u * (H u)`` with ``u`` Rademacher
    (independent signs, one draw per call), ``H u`` a Hessian-vector product of ``obj_fn``
    at ``ps`` (:func:`torch.func.jvp` of :func:`torch.func.grad`). Unbiased: ``E[u * H u] =
    diag(H)``; exact for a diagonal Hessian.

    ``update(grads, state, ps, *, obj_fn) -> (diag estimate, state)`` (``grads`` unused).

    Arguments:
        seed: the seed of the key that draws ``u`` (:mod:`lux_torch.random`).

    Returns:
        A :class:`GradientTransformation` with state ``{"key": the key}``, advanced by
        every update.

    Example:
        >>> est = hutchinson_diag_hessian(0)
        >>> d, st = est.update(g, est.init(ps), ps, obj_fn=loss)
    """

    def init(ps: Tree) -> State:
        return {"key": random.key(seed)}

    def update(
        grads: Tree, state: State, ps: Tree = None, *, obj_fn: ObjFn | None = None
    ) -> tuple[Tree, State]:
        if ps is None or obj_fn is None:
            raise ValueError("lux_torch.optim.hutchinson_diag_hessian: update needs ps and obj_fn")
        key, sub = random.split(state["key"])
        leaves, spec = flatten(ps)
        keys = random.split(sub, max(len(leaves), 1))
        signs = [
            random.bernoulli(keys[i], 0.5, tuple(p.shape)).to(p.dtype) * 2.0 - 1.0
            for i, p in enumerate(leaves)
        ]
        u = unflatten(spec, signs)
        hvp = torch.func.jvp(torch.func.grad(obj_fn), (ps,), (u,))[1]
        return tree_map(torch.mul, u, hvp), {"key": key}

    return GradientTransformation(init, update)


def _traced() -> bool:
    return torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is not None


def scale_by_sophia(
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
) -> GradientTransformation:
    """Sophia's direction: ``clip(m_hat / max(gamma * h, eps), clip_threshold)``.

    With ``t`` the step (1-based)::

        m     = b1 m + (1 - b1) g,          m_hat = m / (1 - b1^t)
        u     = clamp(m_hat / max(gamma h, eps), -clip_threshold, clip_threshold)
        h     = b2 h + (1 - b2) hess_diag(ps)     every update_interval steps (t = 1, 1 + k, ...),
                                                  after u is computed (as optax)

    ``hess_diag`` is ``hessian_diagonal_fn`` (default :func:`hutchinson_diag_hessian`,
    Sophia-H; a Gauss-Newton-Bartlett estimate, Sophia-G, is a transformation of the same
    shape that samples labels from the model). Semantics of optax's
    ``contrib.scale_by_sophia``. Eagerly the estimate is computed on its steps only; under
    ``torch.compile`` or ``vmap`` (a data-dependent branch is not traced) it is computed
    every step and selected, which costs a Hessian-vector product per step.

    Reference: Liu, Li, Hall, Liang, Ma, "Sophia: A Scalable Stochastic Second-order
    Optimizer for Language Model Pre-training", 2023, arXiv:2305.14342.

    Arguments:
        b1: decay of the gradient's moving average.
        b2: decay of the Hessian estimate's moving average (per estimate).
        eps: the denominator's lower bound (> 0).
        gamma: the Hessian's scale (the paper's ``gamma = rho * batch size``).
        clip_threshold: the bound of each update entry, or None.
        update_interval: estimate the Hessian every this many steps.
        hessian_diagonal_fn: the estimator, ``update(grads, state, ps, *, obj_fn)``.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree,
        "nu": tree, "hessian": the estimator's state}``; ``update(grads, state, ps, *,
        obj_fn)`` needs ``ps`` and ``obj_fn(ps) -> loss``.

    Example:
        >>> opt = chain(scale_by_sophia(), scale_by_learning_rate(1e-3))
    """
    fn = "scale_by_sophia"
    check_beta("b1", b1, fn)
    check_beta("b2", b2, fn)
    check_positive("eps", eps, fn)
    check_nonneg("gamma", gamma, fn)
    if clip_threshold is not None:
        check_positive("clip_threshold", clip_threshold, fn)
    check_int("update_interval", update_interval, fn, 1)
    estimator = hutchinson_diag_hessian() if hessian_diagonal_fn is None else hessian_diagonal_fn

    def init(ps: Tree) -> State:
        return {
            "count": new_count(),
            "mu": zeros_like_tree(ps),
            "nu": zeros_like_tree(ps),
            "hessian": estimator.init(ps),
        }

    def update(
        grads: Tree, state: State, ps: Tree = None, *, obj_fn: ObjFn | None = None
    ) -> tuple[Tree, State]:
        if ps is None or obj_fn is None:
            raise ValueError(
                f"lux_torch.optim.{fn}: update needs ps and obj_fn (ps -> the batch's loss), "
                "e.g. opt.update(grads, state, ps, obj_fn=loss)"
            )
        checked_leaves(grads, ps)
        checked_leaves(state["mu"], ps, "state mu")
        count = inc(state["count"])
        mu = tree_map(lambda g, m: torch.lerp(m, g, 1.0 - b1), grads, state["mu"])
        bc1 = 1.0 - torch.pow(torch.tensor(b1, dtype=torch.float64), count)

        def direction(m: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            u = (m / bc1.to(m.dtype)) / torch.clamp(gamma * h, min=eps)
            if clip_threshold is None:
                return u
            return torch.clamp(u, -clip_threshold, clip_threshold)

        updates = tree_map(direction, mu, state["nu"])
        due = state["count"] % update_interval == 0
        nu, hess_state = state["nu"], state["hessian"]
        if _traced() or bool(due):
            diag, new_hess = estimator.update(grads, hess_state, ps, obj_fn=obj_fn)
            nu = tree_map(lambda d, n: torch.where(due, torch.lerp(n, d, 1.0 - b2), n), diag, nu)
            hess_state = tree_map(lambda a, b: torch.where(due, a, b), new_hess, hess_state)
        return updates, {"count": count, "mu": mu, "nu": nu, "hessian": hess_state}

    return GradientTransformation(init, update)


def sophia(
    lr: LearningRate = 1e-3,
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
) -> GradientTransformation:
    """Sophia: ``p -= lr * (scale_by_sophia(g) + weight_decay * p)`` (optax's
    ``contrib.sophia``; Liu et al., 2023, arXiv:2305.14342).

    ``update(grads, state, ps, *, obj_fn)``: ``obj_fn(ps)`` is the current batch's loss,
    differentiated twice for the Hessian estimate (see :func:`scale_by_sophia`).

    Arguments:
        lr: learning rate or schedule; also scales the decay.
        b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn: see
            :func:`scale_by_sophia`.
        weight_decay: decoupled decay.

    Returns:
        A :class:`GradientTransformation`, ``chain(scale_by_sophia, add_decayed_weights,
        scale_by_learning_rate)``, with state ``({"count", "mu", "nu", "hessian"}, (),
        {"count"})``.

    Example:
        >>> opt = sophia(1e-3)
        >>> updates, state = opt.update(grads, state, ps, obj_fn=loss)
    """
    check_lr(lr, "sophia")
    parts = (
        scale_by_sophia(b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(lr),
    )
    inner = chain(*parts)

    def update(
        grads: Tree, state: State, ps: Tree = None, *, obj_fn: ObjFn | None = None
    ) -> tuple[Tree, State]:
        u, s0 = parts[0].update(grads, state[0], ps, obj_fn=obj_fn)
        u, s1 = parts[1].update(u, state[1], ps)
        u, s2 = parts[2].update(u, state[2], ps)
        return u, (s0, s1, s2)

    return GradientTransformation(inner.init, update)
