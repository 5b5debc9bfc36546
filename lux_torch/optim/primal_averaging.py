"""Schedule-free optimization (Defazio et al., 2024): :func:`schedule_free`,
:func:`schedule_free_sgd`, :func:`schedule_free_adamw` and
:func:`schedule_free_eval_params` (see :mod:`lux_torch.optim`)."""

from __future__ import annotations

import torch

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
from ._checks import check_beta, check_int, check_lr, check_nonneg, checked_leaves
from .transforms import add_decayed_weights, chain, scale_by_learning_rate

_F64 = torch.float64


def _as_f64(x: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=_F64, device=like.device)


def schedule_free(
    base: GradientTransformation,
    lr: LearningRate,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    r: float = 0.0,
) -> GradientTransformation:
    """Make ``base`` (an optimizer without momentum) schedule-free.

    The parameters the gradients are taken at are ``y``; the optimizer keeps ``z`` (the
    base optimizer's iterates) and the average ``x`` is implied by ``y = b1 x + (1 - b1) z``.
    With ``u_t`` the base optimizer's update (``-lr_t g_t`` for SGD), step ``t = 1, 2, ...``::

        z_{t+1} = z_t + u_t
        w_t     = t ** r * max(lr_1..lr_t) ** weight_lr_power,   c_{t+1} = w_t / sum(w_1..w_t)
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}
        y_{t+1} = b1 x_{t+1} + (1 - b1) z_{t+1}
                = y_t + c_{t+1} (z_t - y_t) + (1 - b1 (1 - c_{t+1})) u_t

    (the last form is what is computed: no division by ``b1``). Evaluate the model at ``x``:
    :func:`schedule_free_eval_params`. ``lr`` (a schedule: warmup, then constant) must be
    the one the base optimizer uses; it is called with the number of updates done, as
    :func:`scale_by_learning_rate` calls it (optax calls it here with that number plus one
    and in the base optimizer without, an off-by-one this avoids; the facebookresearch
    reference also uses one count).

    Reference: Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky, "The Road Less
    Scheduled", 2024, arXiv:2405.15682 (Algorithm 1); optax.contrib.schedule_free.

    Arguments:
        base: the base optimizer (its own momentum switched off).
        lr: the base optimizer's learning rate or schedule.
        b1: the interpolation ``beta`` in (0, 1).
        weight_lr_power: the power of the largest learning rate so far in the weights.
        r: the power of ``t`` in the weights (0: the paper's default).

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "b1": float64
        (), "weight_sum": float64 (), "max_lr": float64 (), "z": tree, "base": base's
        state}``; ``update`` needs ``ps`` (``y``).

    Example:
        >>> opt = schedule_free(chain(scale_by_learning_rate(1.0)), 1.0)
    """
    fn = "schedule_free"
    check_lr(lr, fn)
    check_beta("b1", b1, fn)
    if b1 == 0.0:
        raise ValueError(f"lux_torch.optim.{fn}: b1 must be in (0, 1), got 0.0")
    check_nonneg("weight_lr_power", weight_lr_power, fn)
    check_nonneg("r", r, fn)

    def init(ps: Tree) -> State:
        zero = torch.zeros((), dtype=_F64)
        return {
            "count": new_count(),
            "b1": torch.full((), b1, dtype=_F64),
            "weight_sum": zero,
            "max_lr": zero.clone(),
            "z": tree_map(torch.clone, ps),
            "base": base.init(ps),
        }

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        if ps is None:
            raise ValueError(f"lux_torch.optim.{fn}: update needs ps (the point y)")
        checked_leaves(grads, ps)
        checked_leaves(state["z"], ps, "state z")
        count = state["count"]
        lr_t = _as_f64(lr(count) if callable(lr) else lr, state["max_lr"])
        max_lr = torch.maximum(state["max_lr"], lr_t)
        t = (count + 1).to(_F64)
        weight = t**r * max_lr**weight_lr_power
        weight_sum = state["weight_sum"] + weight
        ck = torch.where(weight_sum > 0, weight / torch.where(weight_sum > 0, weight_sum, 1.0), 0.0)
        u, base_state = base.update(grads, state["base"], ps)
        b1_t: torch.Tensor = state["b1"]
        zk = 1.0 - b1_t * (1.0 - ck)

        def step(y: torch.Tensor, z: torch.Tensor, du: torch.Tensor) -> torch.Tensor:
            return (z - y) * ck.to(y.dtype) + du * zk.to(y.dtype)

        updates = tree_map(step, ps, state["z"], u)
        new = {
            "count": inc(count),
            "b1": state["b1"],
            "weight_sum": weight_sum,
            "max_lr": max_lr,
            "z": tree_map(torch.add, state["z"], u),
            "base": base_state,
        }
        return updates, new

    return GradientTransformation(init, update)


def schedule_free_eval_params(state: State, ps: Tree) -> Tree:
    """The averaged parameters ``x = (y - (1 - b1) z) / b1`` to evaluate the model at.

    Arguments:
        state: the state of :func:`schedule_free` (or of its aliases).
        ps: the current parameters ``y`` (what training updates).

    Returns:
        A tree like ``ps``.

    Example:
        >>> eval_ps = schedule_free_eval_params(state, ps)
    """
    if not (isinstance(state, dict) and "z" in state and "b1" in state):
        raise ValueError(
            "lux_torch.optim.schedule_free_eval_params: state must be the state of "
            "schedule_free / schedule_free_sgd / schedule_free_adamw (a dict with 'z', 'b1')"
        )
    checked_leaves(state["z"], ps, "state z")
    b1: torch.Tensor = state["b1"]

    def x(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (y - (1.0 - b1.to(y.dtype)) * z) / b1.to(y.dtype)

    return tree_map(x, ps, state["z"])


def warmup_lr(lr: LearningRate, warmup_steps: int) -> LearningRate:
    """``lr * min(1, (count + 1) / warmup_steps)``: the facebookresearch reference's linear
    warmup (the first update uses ``lr / warmup_steps``); ``lr`` itself for 0 steps."""
    check_int("warmup_steps", warmup_steps, "schedule_free", 0)
    if warmup_steps == 0:
        return lr

    def schedule(count: torch.Tensor) -> torch.Tensor:
        base = lr(count) if callable(lr) else lr
        ramp = torch.clamp((torch.as_tensor(count).to(_F64) + 1.0) / warmup_steps, max=1.0)
        return ramp * base

    return schedule


def schedule_free_sgd(
    lr: LearningRate = 1.0,
    warmup_steps: int = 0,
    b1: float = 0.9,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    r: float = 0.0,
) -> GradientTransformation:
    """Schedule-free SGD: :func:`schedule_free` around ``u = -lr_t (g + weight_decay * y)``.

    Arguments:
        lr: learning rate (float or schedule; warmup is added by ``warmup_steps``).
        warmup_steps: linear warmup length, :func:`warmup_lr`.
        b1, weight_lr_power, r: see :func:`schedule_free`.
        weight_decay: L2 decay at ``y`` (scaled by ``lr``, as in the reference).

    Returns:
        A :class:`GradientTransformation`; state as :func:`schedule_free` with ``"base"``
        ``((), {"count"})``.

    Example:
        >>> opt = schedule_free_sgd(1.0, warmup_steps=10)
    """
    check_lr(lr, "schedule_free_sgd")
    lr_t = warmup_lr(lr, warmup_steps)
    base = chain(add_decayed_weights(weight_decay), scale_by_learning_rate(lr_t))
    return schedule_free(base, lr_t, b1, weight_lr_power, r)


def scale_by_debiased_rms(b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """``g / (sqrt(v / (1 - b2^t)) + eps)`` with ``v = b2 v + (1 - b2) g^2``: Adam without
    first moment (what schedule-free AdamW preconditions with; optax's ``scale_by_rms(...,
    eps_in_sqrt=False, bias_correction=True)``).

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "nu": tree}``.
    """
    fn = "scale_by_debiased_rms"
    check_beta("b2", b2, fn)
    check_nonneg("eps", eps, fn)

    def init(ps: Tree) -> State:
        return {"count": new_count(), "nu": zeros_like_tree(ps)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        checked_leaves(grads, state["nu"])
        count = inc(state["count"])
        bc2 = 1.0 - torch.pow(torch.tensor(b2, dtype=_F64), count)
        nu = tree_map(lambda g, v: torch.lerp(v, g * g, 1.0 - b2), grads, state["nu"])

        def scaled(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return g / (torch.sqrt(v / bc2.to(v.dtype)) + eps)

        return tree_map(scaled, grads, nu), {"count": count, "nu": nu}

    return GradientTransformation(init, update)


def schedule_free_adamw(
    lr: LearningRate = 0.0025,
    warmup_steps: int = 0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    r: float = 0.0,
) -> GradientTransformation:
    """Schedule-free AdamW: :func:`schedule_free` around
    ``u = -lr_t (g / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * y)``
    (facebookresearch's ``AdamWScheduleFree``; optax.contrib.schedule_free_adamw).

    Arguments:
        lr: learning rate (float or schedule; warmup is added by ``warmup_steps``).
        warmup_steps: linear warmup length, :func:`warmup_lr`.
        b1, weight_lr_power, r: see :func:`schedule_free`.
        b2, eps: see :func:`scale_by_debiased_rms`.
        weight_decay: decoupled decay at ``y`` (scaled by ``lr``).

    Returns:
        A :class:`GradientTransformation`; state as :func:`schedule_free` with ``"base"``
        ``({"count", "nu"}, (), {"count"})``.

    Example:
        >>> opt = schedule_free_adamw(1e-3, warmup_steps=100)
    """
    check_lr(lr, "schedule_free_adamw")
    lr_t = warmup_lr(lr, warmup_steps)
    base = chain(
        scale_by_debiased_rms(b2, eps),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(lr_t),
    )
    return schedule_free(base, lr_t, b1, weight_lr_power, r)
