"""Transformations that wrap another one: :func:`multi_steps`, :func:`lookahead`,
:func:`apply_if_finite` and :func:`inject_hyperparams` (see :mod:`lux_torch.optim`).

Where a wrapper decides something per step (emit the accumulated update, synchronise the
slow weights, skip a non-finite update), it decides with :func:`cond`: in Python when the
flag is an ordinary eager tensor, with ``torch.where`` over both branches when traced or
vmapped (``jax.lax.cond``'s semantics under ``vmap``), so every wrapper stays pure,
compiles with ``fullgraph=True`` and maps over an ensemble.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

from ..tree import flatten, unflatten
from ..tree import map as tree_map
from . import foreach as fe
from ._base import (
    GradientTransformation,
    State,
    Tree,
    check_state,
    inc,
    leaves_like,
    new_count,
    plain_count,
    zeros_like_tree,
)
from .transforms import apply_updates

T = TypeVar("T")


def cond(flag: torch.Tensor, then: Callable[[], T], otherwise: Callable[[], T]) -> T:
    """``then()`` if ``flag`` else ``otherwise()``; both branches return trees of one
    structure. Eager: one branch runs (decided on the host). Traced or vmapped: both run
    and ``torch.where(flag, a, b)`` picks leaf by leaf (a NaN in the other branch does not
    leak)."""
    known = plain_count(flag)
    if known is not None:
        return then() if known else otherwise()
    a, b = then(), otherwise()
    return tree_map(lambda x, y: torch.where(flag, x, y), a, b)  # type: ignore[no-any-return]  # a tree like a


def _positive_int(name: str, value: int, fn: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be an int >= 1, got {value!r}")


def multi_steps(inner: GradientTransformation, every_k: int) -> GradientTransformation:
    """Gradient accumulation over ``every_k`` micro-batches (optax's ``MultiSteps``)::

        acc = acc + g
        u   = 0                                         (first k - 1 calls)
        u   = inner.update(acc / k)  then acc = 0       (every k-th call)

    The k-th call equals one ``inner`` step on the mean gradient exactly (the sum is taken
    in the order of the calls, then divided by ``k``); ``inner``'s state advances only then.

    Arguments:
        inner: the transformation to apply to the mean gradient.
        every_k: the number of micro-batches per step (an int >= 1).

    Returns:
        A :class:`GradientTransformation` with state ``{"mini_step": int64 (), "acc":
        tree, "inner": inner's state}``: the calls since the last step (0 to k - 1), the
        sum of their gradients (like ``ps``) and ``inner``'s state.

    Example:
        >>> opt = multi_steps(adam(1e-3), every_k=4)
    """
    _positive_int("every_k", every_k, "multi_steps")
    keys = ("mini_step", "acc", "inner")

    def init(ps: Tree) -> State:
        return {"mini_step": new_count(), "acc": zeros_like_tree(ps), "inner": inner.init(ps)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check_state(state, keys, "multi_steps")
        g, spec = leaves_like(grads, state["acc"], "grads (to multi_steps)")
        acc = fe.add(flatten(state["acc"])[0], g)
        mini_step = inc(state["mini_step"])
        zeros = [torch.zeros_like(a) for a in acc]

        def emit() -> tuple[Tree, State]:
            mean = unflatten(spec, fe.div(acc, every_k))
            u, inner_state = inner.update(mean, state["inner"], ps)
            reset = {"mini_step": torch.zeros_like(mini_step), "acc": unflatten(spec, zeros)}
            return u, {**reset, "inner": inner_state}

        def accumulate() -> tuple[Tree, State]:
            kept = {"mini_step": mini_step, "acc": unflatten(spec, acc)}
            return unflatten(spec, zeros), {**kept, "inner": state["inner"]}

        return cond(mini_step == every_k, emit, accumulate)

    return GradientTransformation(init, update)


def lookahead(
    inner: GradientTransformation, sync_period: int = 5, alpha: float = 0.5
) -> GradientTransformation:
    """Lookahead (Zhang et al., 2019, arXiv:1907.08610): ``inner`` moves the fast weights
    ``p``; every ``sync_period`` steps the slow weights move towards them and the fast
    weights restart from there::

        p    = p + inner.update(g)
        slow = slow + alpha * (p - slow);  p = slow        (every sync_period-th step)

    ``update`` returns ``p_new - p`` (so :func:`apply_updates` gives the new fast weights,
    up to one rounding at synchronisation); ``inner``'s state is kept across syncs.

    Arguments:
        inner: the fast optimizer.
        sync_period: ``k``, fast steps per synchronisation (an int >= 1).
        alpha: the slow step size in (0, 1].

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "slow": tree,
        "inner": inner's state}``: the steps done, the slow weights (a copy of ``ps`` at
        ``init``) and ``inner``'s state. ``update`` needs ``ps``.

    Example:
        >>> opt = lookahead(adam(1e-3), sync_period=6, alpha=0.5)
    """
    _positive_int("sync_period", sync_period, "lookahead")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"lux_torch.optim.lookahead: alpha must be in (0, 1], got {alpha}")
    keys = ("count", "slow", "inner")

    def init(ps: Tree) -> State:
        return {"count": new_count(), "slow": tree_map(torch.clone, ps), "inner": inner.init(ps)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        if ps is None:
            raise ValueError("lux_torch.optim.lookahead: update needs ps")
        check_state(state, keys, "lookahead")
        p, spec = leaves_like(ps, state["slow"], "ps (to lookahead)")
        u, inner_state = inner.update(grads, state["inner"], ps)
        count = inc(state["count"])

        def sync() -> tuple[Tree, Tree]:
            fast = flatten(apply_updates(ps, u))[0]
            slow = fe.lerp(flatten(state["slow"])[0], fast, alpha)
            return unflatten(spec, fe.sub(slow, p)), unflatten(spec, slow)

        def keep() -> tuple[Tree, Tree]:
            return u, state["slow"]

        u, slow = cond(count % sync_period == 0, sync, keep)
        return u, {"count": count, "slow": slow, "inner": inner_state}

    return GradientTransformation(init, update)


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int
) -> GradientTransformation:
    """Skip the steps whose gradients are not all finite (optax's ``apply_if_finite``).

    When a gradient element is NaN or infinite, the update is zero and ``inner``'s state
    is kept; after more than ``max_consecutive_errors`` such steps in a row the update is
    applied anyway (so that training fails visibly rather than stalling).

    Arguments:
        inner: the transformation to protect.
        max_consecutive_errors: the non-finite steps in a row to skip (an int >= 0).

    Returns:
        A :class:`GradientTransformation` with state ``{"notfinite_count": int64 (),
        "last_finite": bool (), "total_notfinite": int64 (), "inner": inner's state}``: the
        current run of non-finite steps, whether the last gradients were finite, the
        non-finite steps so far and ``inner``'s state.

    Example:
        >>> opt = apply_if_finite(adam(1e-3), max_consecutive_errors=5)
    """
    if (
        isinstance(max_consecutive_errors, bool)
        or not isinstance(max_consecutive_errors, int)
        or max_consecutive_errors < 0
    ):
        raise ValueError(
            "lux_torch.optim.apply_if_finite: max_consecutive_errors must be an int >= 0, "
            f"got {max_consecutive_errors!r}"
        )
    keys = ("notfinite_count", "last_finite", "total_notfinite", "inner")

    def init(ps: Tree) -> State:
        return {
            "notfinite_count": new_count(),
            "last_finite": torch.ones((), dtype=torch.bool),
            "total_notfinite": new_count(),
            "inner": inner.init(ps),
        }

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check_state(state, keys, "apply_if_finite")
        g = flatten(grads)[0]
        flags = [torch.isfinite(x).all().reshape(1) for x in g]
        finite = torch.cat(flags).all() if flags else torch.ones((), dtype=torch.bool)
        zero = torch.zeros_like(state["notfinite_count"])
        notfinite = torch.where(finite, zero, inc(state["notfinite_count"]))
        total = torch.where(finite, state["total_notfinite"], inc(state["total_notfinite"]))

        def apply() -> tuple[Tree, State]:
            return inner.update(grads, state["inner"], ps)

        def reject() -> tuple[Tree, State]:
            return tree_map(torch.zeros_like, grads), state["inner"]

        u, inner_state = cond(finite | (notfinite > max_consecutive_errors), apply, reject)
        new = {"notfinite_count": notfinite, "last_finite": finite, "total_notfinite": total}
        return u, {**new, "inner": inner_state}

    return GradientTransformation(init, update)


def _is_hyperparam(name: str, value: Any, static: Iterable[str]) -> bool:
    return name not in static and isinstance(value, float | int) and not isinstance(value, bool)


def inject_hyperparams(
    factory: Callable[..., GradientTransformation], static_args: Iterable[str] = ()
) -> Callable[..., GradientTransformation]:
    """Make the numeric hyperparameters of ``factory`` part of the optimizer state (optax's
    ``inject_hyperparams``; Lux's ``Optimisers.adjust!``), to change them between steps.

    ``inject_hyperparams(adam)(lr=1e-3, weight_decay=0.1)`` is ``adam(lr=1e-3,
    weight_decay=0.1)`` whose ``lr`` and ``weight_decay`` live in the state as 0-dim
    ``float64`` tensors: change them with :func:`set_hyperparams`. A compiled step takes
    them as inputs, so a new value does not recompile it. Every update builds
    ``factory(**values)`` with those tensors (the ``factory`` must compute with them: the
    built-in transformations and aliases do); when eager it also checks the current
    values as ``factory`` checks floats (e.g. ``lr >= 0``).

    A keyword argument is injected when it is a Python ``float`` or ``int`` (not ``bool``)
    and not named in ``static_args``; a callable is a schedule ``f(count) -> value``,
    evaluated at every update (not settable); anything else is passed through unchanged.
    Hyperparameters that change the structure of the state (``momentum=0`` in
    :func:`sgd` has none) are best passed as ``static_args``.

    Arguments:
        factory: the optimizer's constructor, e.g. :func:`adam`; called with keywords.
        static_args: the names of numeric arguments to keep out of the state.

    Returns:
        A constructor with ``factory``'s keywords, returning a
        :class:`GradientTransformation` with state ``{"count": int64 (), "hyperparams":
        {name: float64 ()}, "inner": the state of factory(...)}``.

    Example:
        >>> opt = inject_hyperparams(adam)(lr=1e-3)
        >>> state = opt.init({"w": torch.zeros(2)})
        >>> state = set_hyperparams(state, lr=1e-4)
    """
    static = tuple(static_args)

    def build(**kwargs: Any) -> GradientTransformation:
        numeric = {k: float(v) for k, v in kwargs.items() if _is_hyperparam(k, v, static)}
        schedules = {k: v for k, v in kwargs.items() if k not in numeric and callable(v)}
        fixed = {k: v for k, v in kwargs.items() if k not in numeric and k not in schedules}
        factory(**kwargs)  # checks the configuration now, with the initial values

        def values(count: torch.Tensor, hyperparams: dict[str, torch.Tensor]) -> dict[str, Any]:
            return {**{k: s(count) for k, s in schedules.items()}, **hyperparams}

        def init(ps: Tree) -> State:
            count = new_count()
            hyperparams = {k: torch.tensor(v, dtype=torch.float64) for k, v in numeric.items()}
            inner = factory(**fixed, **values(count, hyperparams))
            return {"count": count, "hyperparams": hyperparams, "inner": inner.init(ps)}

        def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
            check_state(state, ("count", "hyperparams", "inner"), "inject_hyperparams")
            current = values(state["count"], state["hyperparams"])
            if all(plain_count(v) is not None for v in current.values()):
                factory(**fixed, **{k: float(v) for k, v in current.items()})  # checks
            inner = factory(**fixed, **current)
            u, inner_state = inner.update(grads, state["inner"], ps)
            new = {"count": inc(state["count"]), "hyperparams": state["hyperparams"]}
            return u, {**new, "inner": inner_state}

        return GradientTransformation(init, update)

    return build


def set_hyperparams(state: State, **values: float | torch.Tensor) -> State:
    """A copy of the state of an :func:`inject_hyperparams` optimizer with new values of
    some hyperparameters (the state given is not modified).

    Arguments:
        state: the optimizer state (``{"count", "hyperparams", "inner"}``).
        values: ``name=value``: a float, or a tensor of the stored value's shape (e.g. one
            value per member of a vmapped ensemble).

    Returns:
        The new state.

    Raises:
        ValueError: a name that is not a settable hyperparameter of this state (schedules
            and ``static_args`` are not), or a value that is not finite.

    Example:
        >>> state = set_hyperparams(state, lr=1e-4)
    """
    hyperparams = state.get("hyperparams") if isinstance(state, dict) else None
    if not isinstance(hyperparams, dict):
        raise ValueError(
            "lux_torch.optim.set_hyperparams: not the state of an inject_hyperparams "
            "optimizer (no 'hyperparams' entry)"
        )
    new = dict(hyperparams)
    for name, value in values.items():
        if name not in hyperparams:
            raise ValueError(
                f"lux_torch.optim.set_hyperparams: {name!r} is not a settable "
                f"hyperparameter; the state holds {sorted(hyperparams)} (schedules and "
                "static_args are not settable)"
            )
        old = hyperparams[name]
        t = torch.as_tensor(value, dtype=old.dtype, device=old.device)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"lux_torch.optim.set_hyperparams: {name} must be finite, got {value}")
        new[name] = t.expand(old.shape).clone() if t.shape != old.shape else t.clone()
    return {**state, "hyperparams": new}
