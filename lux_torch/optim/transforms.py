"""The primitive gradient transformations and :func:`masked` / :func:`partition`
(see :mod:`lux_torch.optim`).

Each transformation reads like its rule: ``init`` builds a named state, ``update`` takes
the leaves of the gradients and of the state trees and applies the formula to all of them
at once with the leaf-list ops of :mod:`lux_torch.optim.foreach` (``fe``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import optree
import torch

from ..tree import NAMESPACE, flatten, unflatten
from ..tree import map as tree_map
from . import foreach as fe
from ._base import (
    STATE,
    GradientTransformation,
    LeafUpdate,
    LearningRate,
    Leaves,
    Scalar,
    State,
    StateMismatch,
    Tree,
    along,
    check_beta,
    check_grads,
    check_lr,
    check_nonneg,
    check_shapes,
    check_state,
    exponent,
    flatten_checked,
    hoist,
    inc,
    is_zero,
    leaves_along,
    leaves_and_like,
    leaves_like,
    leaves_up_to,
    new_count,
    zeros_like_tree,
)

# -------------------------------------------------------------------------- primitives


def apply_updates(ps: Tree, updates: Tree) -> Tree:
    """Return ``ps + updates`` leaf by leaf (a new tree; ``ps`` is not modified).

    Arguments:
        ps: the parameter tree.
        updates: a tree of the same structure, e.g. from ``GradientTransformation.update``.

    Returns:
        The new parameter tree.

    Example:
        >>> apply_updates({"w": torch.ones(2)}, {"w": torch.ones(2)})
        {'w': tensor([2., 2.])}
    """
    u, p, spec = leaves_and_like(updates, ps, "updates")
    return unflatten(spec, fe.add(p, u))


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Compose transformations left to right; the state is a tuple of their states.

    Arguments:
        transforms: the transformations, applied in order.

    Returns:
        A :class:`GradientTransformation` with state ``(state_1, ..., state_n)``.

    Example:
        >>> opt = chain(clip_by_global_norm(1.0), scale(-0.1))
    """

    def init(ps: Tree) -> State:
        return tuple(t.init(ps) for t in transforms)

    def check(state: State) -> None:
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise StateMismatch(
                "lux_torch.optim.chain: the state does not fit this transformation and these "
                f"grads: expected a tuple of {len(transforms)} states, got "
                f"{type(state).__name__}"
            )

    def mismatch(i: int, e: StateMismatch) -> StateMismatch:
        return StateMismatch(
            "lux_torch.optim.chain: the state does not fit this transformation and these "
            f"grads: member {i}: {e}"
        )

    def on_trees(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check(state)
        new = []
        for i, t in enumerate(transforms):
            try:
                grads, s = t.update(grads, state[i], ps)
            except StateMismatch as e:
                raise mismatch(i, e) from e
            new.append(s)
        return grads, tuple(new)

    if not all(isinstance(t.update, LeafUpdate) for t in transforms):
        return GradientTransformation(init, on_trees)

    # every member a LeafUpdate: the chain is one too, handing its members leaf lists
    def leaves(
        g: Leaves, spec: Any, state: State, p: Leaves | None, owned: bool
    ) -> tuple[Leaves, State, bool] | None:
        check(state)
        new = []
        for i, t in enumerate(transforms):
            try:
                out = t.update.leaves(g, spec, state[i], p, owned)  # type: ignore[attr-defined]  # a LeafUpdate
            except StateMismatch as e:
                raise mismatch(i, e) from e
            if out is None:  # a state laid out otherwise: the tree path reorders or raises
                return None
            g, s, owned = out
            new.append(s)
        return g, tuple(new), owned

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        # one flatten: of ps when given (the grads are read along its structure)
        g: list[torch.Tensor] | None
        p: list[torch.Tensor] | None = None
        if ps is None:
            g, spec = flatten(grads)
        else:
            p, spec = flatten(ps)
            g = along(spec, grads)
        if g is not None:
            out = leaves(g, spec, state, p, False)
            if out is not None:
                return unflatten(spec, out[0]), out[1]
        return on_trees(grads, state, ps)  # reorders, or raises the named error

    return GradientTransformation(init, LeafUpdate(update, leaves))


def _empty(ps: Tree) -> State:
    return ()


def _identity(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
    return grads, state


def _identity_leaves(
    g: Leaves, spec: Any, state: State, p: Leaves | None, owned: bool
) -> tuple[Leaves, State, bool]:
    return g, state, owned


def identity() -> GradientTransformation:
    """Pass the updates through unchanged (state ``()``)."""
    return GradientTransformation(_empty, LeafUpdate(_identity, _identity_leaves))


def stateless(
    name: str, fn: Callable[[list[torch.Tensor]], Any], fresh: bool = False
) -> GradientTransformation:
    """A transformation without state: ``fn(leaves of grads) -> leaves of the updates``
    (``fresh``: ``fn`` always returns new tensors, which a next member may overwrite)."""

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        g, spec = check_grads(grads, ps)
        return unflatten(spec, fn(g)), state

    def leaves(
        g: Leaves, spec: Any, state: State, p: Leaves | None, owned: bool
    ) -> tuple[Leaves, State, bool]:
        if p is not None:
            check_shapes("grads", g, p, spec)
        return fn(list(g)), state, fresh

    return GradientTransformation(_empty, LeafUpdate(update, leaves))


def scale(step_size: Scalar) -> GradientTransformation:
    """Multiply updates by a constant: ``u = step_size * g`` (negative to descend).

    Arguments:
        step_size: the factor.

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``).

    Example:
        >>> opt = scale(-0.1)
    """
    factor = fe.Constant.of(step_size)
    return stateless("scale", lambda g: fe.mul(g, factor), fresh=True)


def set_to_zero() -> GradientTransformation:
    """Replace the updates by zeros (freezes what it is applied to; see :func:`partition`).

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``).

    Example:
        >>> opt = partition({"train": adam(1e-3), "frozen": set_to_zero()},
        ...                 {"encoder": "frozen", "head": "train"})
    """
    return stateless("set_to_zero", lambda g: [torch.zeros_like(x) for x in g])


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """Add ``weight_decay * ps`` to the updates (L2 regularisation / decoupled decay):
    ``u = g + weight_decay * p``.

    With ``weight_decay == 0`` it is the identity.

    Arguments:
        weight_decay: the decay factor (>= 0).

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``); ``update`` needs ``ps``.

    Example:
        >>> opt = chain(add_decayed_weights(1e-4), scale(-0.1))
    """
    check_nonneg("weight_decay", weight_decay, "add_decayed_weights")
    if is_zero(weight_decay):
        return identity()

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        if ps is None:
            raise ValueError("lux_torch.optim.add_decayed_weights: update needs ps")
        g, spec = leaves_like(grads, ps, "grads")
        return unflatten(spec, fe.add(g, flatten(ps)[0], alpha=weight_decay)), state

    def leaves(
        g: Leaves, spec: Any, state: State, p: Leaves | None, owned: bool
    ) -> tuple[Leaves, State, bool]:
        if p is None:
            raise ValueError("lux_torch.optim.add_decayed_weights: update needs ps")
        check_shapes("grads", g, p, spec)
        return fe.add(g, p, alpha=weight_decay), state, True

    return GradientTransformation(_empty, LeafUpdate(update, leaves))


def global_norm(leaves: list[torch.Tensor]) -> torch.Tensor:
    """``sqrt(sum of all squared elements)`` of a list of tensors."""
    return torch.sqrt(sum(torch.sum(x * x) for x in leaves))  # type: ignore[arg-type]  # sum() of tensors


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale updates so that their global L2 norm is at most ``max_norm``:
    ``u = g * min(1, max_norm / (||g|| + 1e-12))``.

    Arguments:
        max_norm: the largest allowed global norm (> 0).

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``).

    Example:
        >>> opt = chain(clip_by_global_norm(1.0), scale(-0.1))
    """
    if max_norm <= 0.0:
        raise ValueError(
            f"lux_torch.optim.clip_by_global_norm: max_norm must be > 0, got {max_norm}"
        )

    def clip(g: list[torch.Tensor]) -> Any:
        if not g:
            return g
        return fe.mul(g, hoist(torch.clamp(max_norm / (global_norm(g) + 1e-12), max=1.0)))

    return stateless("clip_by_global_norm", clip)


def scale_by_learning_rate(lr: LearningRate) -> GradientTransformation:
    """Multiply updates by ``-lr``; ``lr`` is a float or a schedule ``f(count) -> lr``.

    The schedule receives the number of updates done so far (0-dim ``int64`` tensor); see
    :mod:`lux_torch.schedules`.

    Arguments:
        lr: learning rate or schedule.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 ()}``, the number of
        updates done.

    Example:
        >>> opt = chain(scale_by_adam(), scale_by_learning_rate(1e-3))
    """
    check_lr(lr, "scale_by_learning_rate")
    neg_lr = fe.Constant(-lr) if isinstance(lr, float | int) else None  # made once

    def init(ps: Tree) -> State:
        return {"count": new_count()}

    def leaves(
        g: Leaves, spec: Any, state: State, p: Leaves | None, owned: bool
    ) -> tuple[Leaves, State, bool]:
        check_state(state, ("count",), "scale_by_learning_rate")
        if p is not None:
            check_shapes("grads", g, p, spec)
        count = state["count"]
        step = neg_lr if neg_lr is not None else hoist(-lr(count) if callable(lr) else -lr)
        # the multiply writes into the previous member's temporaries when it owns them
        u = fe.mul_(g, step) if owned else fe.mul(g, step)
        return u, {"count": inc(count)}, True

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check_state(state, ("count",), "scale_by_learning_rate")
        g, spec = check_grads(grads, ps)
        u, new, _ = leaves(g, spec, state, None, False)
        return unflatten(spec, u), new

    return GradientTransformation(init, LeafUpdate(update, leaves))


def _moments(
    grads: Tree, state: State, keys: tuple[str, ...], name: str
) -> tuple[Leaves, list[Leaves], Any]:
    """``(g, [leaves of state[k] for k in keys], spec)`` for a transformation whose state
    holds trees like ``ps`` under ``keys`` (``count`` aside): grads checked against them."""
    first, spec = flatten(state[keys[0]])
    g = leaves_up_to(spec, grads)
    if g is None:
        g = flatten_checked(grads, state[keys[0]], f"grads (to {name})")[0]  # or raises
    moments: list[Leaves] = [first, *(leaves_along(spec, state[k], name) for k in keys[1:])]
    check_shapes("grads", g, first, spec, of=STATE)
    return g, moments, spec


def _moments_along(
    spec: Any, g: Leaves, state: State, keys: tuple[str, ...], name: str
) -> list[Leaves] | None:
    """The leaves of ``state[k]`` for ``k`` in ``keys`` when they lie along ``spec`` (the
    gradients' structure), their shapes checked against ``g``; ``None`` when one does not
    (:func:`_moments` then reorders or raises)."""
    moments = [along(spec, state[k]) for k in keys]
    if any(m is None for m in moments):
        return None
    check_shapes("grads", g, moments[0], spec, of=STATE)  # type: ignore[arg-type]  # not None
    return moments  # type: ignore[return-value]  # not None


def scale_by_adam(
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> GradientTransformation:
    """Adam's bias-corrected direction (Kingma & Ba, 2014, arXiv:1412.6980; as
    ``torch.optim.Adam``)::

        mu = b1 * mu + (1 - b1) * g
        nu = b2 * nu + (1 - b2) * g^2
        u  = (mu / (1 - b1^t)) / (sqrt(nu) / sqrt(1 - b2^t) + eps)

    Arguments:
        betas: decay rates ``(b1, b2)`` of the first and second moments.
        eps: added to the bias-corrected root of the second moment.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree,
        "nu": tree}``: the number of updates done ``t``, and the running first and second
        moments of the gradients (trees like ``ps``).

    Example:
        >>> opt = chain(scale_by_adam(), scale_by_learning_rate(1e-3))
    """
    b1, b2 = betas
    check_beta("betas[0]", b1, "scale_by_adam")
    check_beta("betas[1]", b2, "scale_by_adam")
    check_nonneg("eps", eps, "scale_by_adam")
    keys = ("count", "mu", "nu")
    b2_ = fe.Constant.of(b2)  # its tensors made once

    def init(ps: Tree) -> State:
        return {"count": new_count(), "mu": zeros_like_tree(ps), "nu": zeros_like_tree(ps)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check_state(state, keys, "scale_by_adam")
        g, (mu, nu), spec = _moments(grads, state, ("mu", "nu"), "scale_by_adam")
        u, new = rule(g, mu, nu, state["count"], spec)
        return unflatten(spec, u), new

    def leaves(
        g: Leaves, spec: Any, state: State, p: Leaves | None, owned: bool
    ) -> tuple[Leaves, State, bool] | None:
        check_state(state, keys, "scale_by_adam")
        moments = _moments_along(spec, g, state, ("mu", "nu"), "scale_by_adam")
        if moments is None:
            return None
        mu, nu = moments
        u, new = rule(g, mu, nu, state["count"], spec)
        return u, new, True  # u: fe.div's new tensors

    def rule(
        g: Leaves, mu: Leaves, nu: Leaves, count: torch.Tensor, spec: Any
    ) -> tuple[Leaves, State]:
        count = inc(count)
        mu = fe.lerp(mu, g, 1.0 - b1)
        nu = fe.addcmul_(fe.mul(nu, b2_), g, g, value=1.0 - b2)
        t = exponent(count)
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        # u = (mu / c1) / (sqrt(nu / c2) + eps), as mu / (k * sqrt(nu) + c1 * eps) with
        # k = c1 / sqrt(c2); ``_`` ops write into this update's own temporaries
        k = c1 / math.sqrt(c2) if isinstance(c2, float) else c1 * torch.rsqrt(c2)
        denom = fe.add_(fe.mul_(fe.sqrt(nu), hoist(k)), hoist(c1 * eps))
        u = fe.div(mu, denom)
        new = {"count": count, "mu": unflatten(spec, mu), "nu": unflatten(spec, nu)}
        return u, new

    return GradientTransformation(init, LeafUpdate(update, leaves))


def scale_by_rms(
    alpha: float = 0.99, eps: float = 1e-8, centered: bool = False
) -> GradientTransformation:
    """RMSprop's direction (Hinton, 2012; as ``torch.optim.RMSprop``)::

        nu = alpha * nu + (1 - alpha) * g^2
        mu = alpha * mu + (1 - alpha) * g          (centered only)
        u  = g / (sqrt(nu - mu^2) + eps)           (``mu = 0`` unless centered)

    Arguments:
        alpha: smoothing constant of the running averages.
        eps: added after the square root.
        centered: subtract the squared running mean of the gradients.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree,
        "nu": tree}``: the number of updates done, the running mean of the gradients (only
        updated when ``centered``) and that of their squares (trees like ``ps``).

    Example:
        >>> opt = chain(scale_by_rms(), scale_by_learning_rate(1e-2))
    """
    check_beta("alpha", alpha, "scale_by_rms")
    check_nonneg("eps", eps, "scale_by_rms")
    keys = ("count", "mu", "nu")
    alpha_, eps_ = fe.Constant.of(alpha), fe.Constant.of(eps)  # their tensors made once

    def init(ps: Tree) -> State:
        return {"count": new_count(), "mu": zeros_like_tree(ps), "nu": zeros_like_tree(ps)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check_state(state, keys, "scale_by_rms")
        g, (mu, nu), spec = _moments(grads, state, ("mu", "nu"), "scale_by_rms")
        nu = fe.addcmul_(fe.mul(nu, alpha_), g, g, value=1.0 - alpha)
        if centered:
            mu = fe.lerp(mu, g, 1.0 - alpha)
            root = fe.sqrt_(fe.addcmul(nu, mu, mu, value=-1.0))
        else:
            root = fe.sqrt(nu)
        u = fe.div(g, fe.add_(root, eps_))  # root: a new tensor
        new = {"count": inc(state["count"]), "mu": unflatten(spec, mu), "nu": unflatten(spec, nu)}
        return unflatten(spec, u), new

    return GradientTransformation(init, update)


def scale_by_adagrad(
    eps: float = 1e-10, initial_accumulator_value: float = 0.0
) -> GradientTransformation:
    """Adagrad's direction (Duchi et al., 2011; as ``torch.optim.Adagrad``)::

        sum = sum + g^2
        u   = g / (sqrt(sum) + eps)

    Arguments:
        eps: added after the square root.
        initial_accumulator_value: starting value of the sum of squares.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "sum": tree}``:
        the number of updates done and the running sum of squared gradients (like ``ps``).

    Example:
        >>> opt = chain(scale_by_adagrad(), scale_by_learning_rate(1e-2))
    """
    check_nonneg("eps", eps, "scale_by_adagrad")
    check_nonneg("initial_accumulator_value", initial_accumulator_value, "scale_by_adagrad")
    keys = ("count", "sum")
    eps_ = fe.Constant.of(eps)  # its tensors made once

    def init(ps: Tree) -> State:
        return {"count": new_count(), "sum": zeros_like_tree(ps, initial_accumulator_value)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check_state(state, keys, "scale_by_adagrad")
        g, (acc,), spec = _moments(grads, state, ("sum",), "scale_by_adagrad")
        acc = fe.addcmul(acc, g, g)
        u = fe.div(g, fe.add_(fe.sqrt(acc), eps_))
        return unflatten(spec, u), {"count": inc(state["count"]), "sum": unflatten(spec, acc)}

    return GradientTransformation(init, update)


def scale_by_lion(betas: tuple[float, float] = (0.9, 0.99)) -> GradientTransformation:
    """Lion's direction (Chen et al., 2023, arXiv:2302.06675; as optax's ``scale_by_lion``)::

        u  = sign(b1 * mu + (1 - b1) * g)
        mu = b2 * mu + (1 - b2) * g

    Arguments:
        betas: ``(b1, b2)``: the interpolation factor of the direction and the decay rate
            of the momentum.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree}``:
        the number of updates done and the momentum (a tree like ``ps``).

    Example:
        >>> opt = chain(scale_by_lion(), scale_by_learning_rate(1e-4))
    """
    b1, b2 = betas
    check_beta("betas[0]", b1, "scale_by_lion")
    check_beta("betas[1]", b2, "scale_by_lion")
    keys = ("count", "mu")

    def init(ps: Tree) -> State:
        return {"count": new_count(), "mu": zeros_like_tree(ps)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check_state(state, keys, "scale_by_lion")
        g, (mu,), spec = _moments(grads, state, ("mu",), "scale_by_lion")
        u = fe.sign(fe.lerp(mu, g, 1.0 - b1))
        mu = fe.lerp(mu, g, 1.0 - b2)
        return unflatten(spec, u), {"count": inc(state["count"]), "mu": unflatten(spec, mu)}

    return GradientTransformation(init, update)


def trace(momentum: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum (as ``torch.optim.SGD`` with dampening 0)::

        buf = momentum * buf + g
        u   = buf                    (or g + momentum * buf with nesterov)

    With ``momentum == 0`` it is the identity with an empty state.

    Arguments:
        momentum: the momentum factor in [0, 1).
        nesterov: use Nesterov momentum.

    Returns:
        A :class:`GradientTransformation` with state ``{"buf": tree}`` (the momentum buffer,
        like ``ps``), or ``()`` when ``momentum == 0``.

    Example:
        >>> opt = chain(trace(0.9), scale_by_learning_rate(0.1))
    """
    check_beta("momentum", momentum, "trace")
    if nesterov and is_zero(momentum):
        raise ValueError("lux_torch.optim.trace: nesterov needs momentum > 0")
    if is_zero(momentum):
        return identity()

    momentum_ = fe.Constant.of(momentum)  # its tensors made once

    def init(ps: Tree) -> State:
        return {"buf": zeros_like_tree(ps)}

    def rule(g: Leaves, buf: Leaves) -> tuple[Leaves, Leaves, bool]:
        """``(u, new buf, u owned)``: ``u`` is the new state's ``buf`` without nesterov."""
        buf = fe.add_(fe.mul(buf, momentum_), g)  # into the product, a temporary of ours
        if nesterov:
            return fe.add(g, buf, alpha=momentum), buf, True
        return buf, buf, False

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check_state(state, ("buf",), "trace")
        g, (buf,), spec = _moments(grads, state, ("buf",), "trace")
        u, buf, _ = rule(g, buf)
        return unflatten(spec, u), {"buf": unflatten(spec, buf)}

    def leaves(
        g: Leaves, spec: Any, state: State, p: Leaves | None, owned: bool
    ) -> tuple[Leaves, State, bool] | None:
        check_state(state, ("buf",), "trace")
        moments = _moments_along(spec, g, state, ("buf",), "trace")
        if moments is None:
            return None
        u, buf, u_owned = rule(g, moments[0])
        return u, {"buf": unflatten(spec, buf)}, u_owned

    return GradientTransformation(init, LeafUpdate(update, leaves))


def clip(max_delta: float) -> GradientTransformation:
    """Clip every update element to ``[-max_delta, max_delta]``: ``u = clamp(g, -max_delta,
    max_delta)`` (optax's ``clip``; ``torch.nn.utils.clip_grad_value_``).

    Arguments:
        max_delta: the largest allowed magnitude (> 0).

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``).

    Example:
        >>> opt = chain(clip(1.0), scale(-0.1))
    """
    if not max_delta > 0.0:
        raise ValueError(f"lux_torch.optim.clip: max_delta must be > 0, got {max_delta}")
    return stateless("clip", lambda g: fe.clamp(g, -max_delta, max_delta))


def centralize() -> GradientTransformation:
    """Gradient centralization (Yong et al., 2020, arXiv:2004.01461; optax's ``centralize``):
    from every leaf with more than one dimension subtract its mean over all dimensions but
    the first, ``u = g - mean(g, dims=1..)``; vectors and scalars pass unchanged.

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``).

    Example:
        >>> opt = chain(centralize(), adam(1e-3))
    """

    def centered(x: torch.Tensor) -> torch.Tensor:
        if x.dim() <= 1:
            return x
        return x - x.mean(dim=tuple(range(1, x.dim())), keepdim=True)

    return stateless("centralize", lambda g: [centered(x) for x in g])


def ema(decay: float, debias: bool = True) -> GradientTransformation:
    """Exponential moving average of the values it is given (optax's ``ema``)::

        ema = decay * ema + (1 - decay) * x       (ema starts at 0)
        u   = ema / (1 - decay^t)                 (debias; else u = ema)

    Given updates, it smooths them (momentum without a learning rate); given parameters,
    it averages them (Polyak averaging): :class:`lux_torch.TrainState` does that with
    ``ema=``, see ``TrainState.ema_params``.

    Arguments:
        decay: the decay rate in [0, 1).
        debias: divide by ``1 - decay^t`` (``t`` values seen), removing the bias towards
            the initial 0: the average of the first value is that value.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "ema": tree}``:
        the number of values averaged ``t`` and the (biased) running average, like ``ps``.

    Example:
        >>> smooth = ema(0.9)
        >>> avg, state = smooth.update({"w": torch.ones(2)}, smooth.init({"w": torch.ones(2)}))
        >>> avg
        {'w': tensor([1., 1.])}
    """
    check_beta("decay", decay, "ema")
    keys = ("count", "ema")

    def init(ps: Tree) -> State:
        return {"count": new_count(), "ema": zeros_like_tree(ps)}

    def update(values: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check_state(state, keys, "ema")
        x, (avg,), spec = _moments(values, state, ("ema",), "ema")
        count = inc(state["count"])
        avg = fe.lerp(avg, x, 1.0 - decay)
        out = fe.div(avg, hoist(1.0 - decay ** exponent(count))) if debias else avg
        return unflatten(spec, out), {"count": count, "ema": unflatten(spec, avg)}

    return GradientTransformation(init, update)


# ------------------------------------------------------------------ masked / partition

_EMPTY: Any = object()  # marks a subtree that keeps no leaf


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _expand(
    prefix: Tree, tree: Tree, fn: str, what: str, valid: Callable[[Any], bool]
) -> tuple[Tree, list[str]]:
    """``prefix`` broadcast to the structure of ``tree`` (a value covers a whole subtree).

    Returns the broadcast tree and ``path=value`` for every value that is not ``valid``.
    """
    bad: list[str] = []

    def fail(path: str, message: str) -> ValueError:
        where = f"'{path}'" if path else "the root"
        return ValueError(
            f"lux_torch.optim.{fn}: the {what} tree does not match the parameters at "
            f"{where}: {message}"
        )

    def expand(pre: Any, node: Any, path: str) -> Tree:
        if isinstance(pre, dict):
            if not isinstance(node, dict):
                raise fail(path, f"a dict where the parameters have {type(node).__name__}")
            missing = sorted(str(k) for k in node if k not in pre)
            extra = sorted(str(k) for k in pre if k not in node)
            if missing or extra:
                raise fail(path, f"missing {missing}, unexpected {extra}")
            return {k: expand(pre[k], v, _join(path, k)) for k, v in node.items()}
        if type(pre) in (list, tuple):
            if type(node) is not type(pre) or len(node) != len(pre):
                raise fail(path, f"{pre!r} where the parameters have {type(node).__name__}")
            return type(pre)(
                expand(a, b, _join(path, i)) for i, (a, b) in enumerate(zip(pre, node, strict=True))
            )
        if not valid(pre):
            bad.append(f"{path or '<root>'}={pre!r}")
        return tree_map(lambda _: pre, node)

    return expand(prefix, tree, ""), bad


def _invalid(prefix: Tree, valid: Callable[[Any], bool]) -> list[str]:
    """``path=value`` for every leaf of a mask or label tree that is not ``valid``."""
    paths, values, _ = optree.tree_flatten_with_path(prefix, none_is_leaf=True, namespace=NAMESPACE)
    return [
        f"{'.'.join(map(str, path)) or '<root>'}={value!r}"
        for path, value in zip(paths, values, strict=True)
        if not valid(value)
    ]


def _select(node: Tree, full: Tree, keep: Callable[[Any], bool]) -> Tree:
    """The subtree of ``node`` whose values in ``full`` are kept (empty dicts dropped)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            sub = _select(v, full[k], keep)
            if sub is not _EMPTY:
                out[k] = sub
        return out or _EMPTY
    if type(node) in (list, tuple):
        kept = [s for s in map(lambda v, m: _select(v, m, keep), node, full) if s is not _EMPTY]
        return type(node)(kept) if kept else _EMPTY
    flags = [keep(v) for v in flatten(full)[0]]
    if flags and all(flags):
        return node
    if not any(flags):
        return _EMPTY
    raise ValueError(
        f"lux_torch.optim: cannot split a {type(node).__name__} node between transformations"
    )


def _subtree(node: Tree, full: Tree, keep: Callable[[Any], bool]) -> Tree:
    sub = _select(node, full, keep)
    return {} if sub is _EMPTY else sub


def _split_apply(
    t: GradientTransformation,
    keep: Callable[[Any], bool],
    values: list[Any],
    full: Tree,
    grads: Tree,
    state: State,
    ps: Tree,
    out: list[torch.Tensor],
) -> State:
    """Run ``t`` on the kept part of ``grads``; write its updates into ``out``; new state."""
    sub_ps = None if ps is None else _subtree(ps, full, keep)
    sub_u, state = t.update(_subtree(grads, full, keep), state, sub_ps)
    where = [i for i, v in enumerate(values) if keep(v)]
    for i, u in zip(where, flatten(sub_u)[0], strict=True):
        out[i] = u
    return state


def masked(
    inner: GradientTransformation, mask: Tree | Callable[[Tree], Tree]
) -> GradientTransformation:
    """Apply ``inner`` to the masked leaves only; the other updates pass through unchanged.

    ``inner`` sees the *masked sub-tree*: ``ps`` (and ``grads``) with every leaf whose mask is
    ``False`` removed, and dicts left without leaves removed too, so its state holds the
    masked leaves only. Semantics of optax's ``masked``.

    Arguments:
        inner: the transformation to apply.
        mask: a tree of Python bools with the structure of ``ps``, or a prefix of it (a bool
            at a dict covers the whole subtree, e.g. ``{"encoder": False, "head": True}``), or
            a callable returning one. The callable gets ``ps`` in ``init`` and ``ps`` (or,
            when ``update`` gets none, ``grads``) in ``update``; it should depend on their
            structure and shapes only, e.g. ``lambda ps: lux.tree.map(lambda p: p.ndim > 1,
            ps)``.

    Returns:
        A :class:`GradientTransformation` whose state is ``inner``'s state for the masked
        sub-tree.

    Example:
        >>> decay_matrices = masked(add_decayed_weights(1e-4), lambda ps: lux.tree.map(
        ...     lambda p: p.ndim > 1, ps))
    """

    def is_bool(v: Any) -> bool:
        return isinstance(v, bool)

    def not_bools(bad: list[str]) -> ValueError:
        return ValueError(
            f"lux_torch.optim.masked: mask values must be Python bools, got {', '.join(bad)}"
        )

    if not callable(mask) and (bad := _invalid(mask, is_bool)):
        raise not_bools(bad)

    def expand(tree: Tree, ref: Tree) -> Tree:
        full, bad = _expand(mask(ref) if callable(mask) else mask, tree, "masked", "mask", is_bool)
        if bad:
            raise not_bools(bad)
        return full

    def keep(v: bool) -> bool:
        return v

    def init(ps: Tree) -> State:
        return inner.init(_subtree(ps, expand(ps, ps), keep))

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        g, spec = flatten(grads) if ps is None else flatten_checked(grads, ps, "grads")
        full = expand(grads, grads if ps is None else ps)
        out = list(g)
        state = _split_apply(inner, keep, flatten(full)[0], full, grads, state, ps, out)
        return unflatten(spec, out), state

    return GradientTransformation(init, update)


def partition(
    transforms: Mapping[str, GradientTransformation], labels: Tree | Callable[[Tree], Tree]
) -> GradientTransformation:
    """Apply a different transformation to each labelled part of the tree (optax semantics).

    Every leaf of ``ps`` gets a label; ``transforms[label]`` sees the sub-tree of the leaves
    with that label (as in :func:`masked`). Freeze a sub-model with :func:`set_to_zero`.

    Arguments:
        transforms: ``{label: transformation}``. A label no leaf carries gets the (empty)
            state of its transformation on an empty tree.
        labels: a tree of ``str`` labels with the structure of ``ps``, or a prefix of it (a
            label at a dict covers the whole subtree), or a callable returning one (called
            as the mask of :func:`masked`).

    Returns:
        A :class:`GradientTransformation` with state ``{label: state of transforms[label]}``.

    Example:
        >>> opt = partition({"train": adam(1e-3), "frozen": set_to_zero()},
        ...                 {"encoder": "frozen", "head": "train"})
    """
    names = sorted(transforms)
    if not names:
        raise ValueError("lux_torch.optim.partition: transforms is empty")

    def known(v: Any) -> bool:
        return isinstance(v, str) and v in transforms

    def unknown_error(bad: list[str]) -> ValueError:
        return ValueError(
            f"lux_torch.optim.partition: unknown labels {', '.join(bad)}; the labels of "
            f"transforms are {names}"
        )

    if not callable(labels) and (bad := _invalid(labels, known)):
        raise unknown_error(bad)

    def expand(tree: Tree, ref: Tree) -> Tree:
        prefix = labels(ref) if callable(labels) else labels
        full, bad = _expand(prefix, tree, "partition", "label", known)
        if bad:
            raise unknown_error(bad)
        return full

    def init(ps: Tree) -> State:
        full = expand(ps, ps)
        return {k: transforms[k].init(_subtree(ps, full, k.__eq__)) for k in names}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        if not isinstance(state, dict) or sorted(state) != names:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"lux_torch.optim.partition: the state must have one entry per label "
                f"{names}, got {got}"
            )
        g, spec = flatten(grads) if ps is None else flatten_checked(grads, ps, "grads")
        full = expand(grads, grads if ps is None else ps)
        values = flatten(full)[0]
        out = list(g)
        new = {
            k: _split_apply(transforms[k], k.__eq__, values, full, grads, state[k], ps, out)
            for k in names
        }
        return unflatten(spec, out), new

    return GradientTransformation(init, update)
