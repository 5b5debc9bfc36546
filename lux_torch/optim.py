"""Pure, optax-shaped optimizers on parameter trees.

An optimizer is a :class:`GradientTransformation`: a pair of pure functions

* ``init(ps) -> state`` builds the optimizer state, a tree of tensors (dicts/tuples of
  tensors, including 0-dim ``int64`` step counts), so it stacks, ``vmap`` s and
  ``torch.compile`` s exactly like ``ps``;
* ``update(grads, state, ps=None) -> (updates, new_state)`` turns gradients into updates.

:func:`apply_updates` adds the updates to the parameters. Nothing is mutated in place. The
aliases (:func:`sgd`, :func:`adam`, :func:`adamw`, :func:`rmsprop`, :func:`adagrad`) are
thin :func:`chain` s of small primitives and reproduce ``torch.optim`` step for step.
Leaf arithmetic uses ``torch._foreach_*`` (non-in-place) on the flattened leaf lists and
falls back to per-leaf ops where a foreach kernel is unavailable (e.g. under ``vmap``).

Example:
    >>> ps = {"w": torch.ones(3)}
    >>> opt = adam(1e-2)
    >>> state = opt.init(ps)
    >>> updates, state = opt.update({"w": torch.ones(3)}, state, ps)
    >>> ps = apply_updates(ps, updates)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import optree
import torch

from lux_torch.tree import NAMESPACE

__all__ = [
    "GradientTransformation",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "rmsprop",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "sgd",
    "trace",
]

Tree = Any
State = Any
Scalar = float | torch.Tensor
Schedule = Callable[[torch.Tensor], Scalar]
LearningRate = float | Schedule


class GradientTransformation(NamedTuple):
    """A pure optimizer: ``init(ps) -> state`` and ``update(grads, state, ps) -> (u, state)``."""

    init: Callable[[Tree], State]
    update: Callable[..., tuple[Tree, State]]


# ----------------------------------------------------------------------------- helpers


def _foreach(name: str, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
    """``torch._foreach_<name>`` (non-in-place) with a per-leaf fallback."""
    lists = [a for a in args if isinstance(a, list)]
    if lists and not lists[0]:
        return []
    fn = getattr(torch, f"_foreach_{name}", None)
    if fn is not None:
        try:
            return list(fn(*args, **kwargs))
        except (RuntimeError, NotImplementedError, TypeError):
            pass
    single = getattr(torch, name)
    n = len(lists[0])
    return [single(*(a[i] if isinstance(a, list) else a for a in args), **kwargs) for i in range(n)]


def _flatten(tree: Tree, like: Tree, what: str) -> tuple[list[torch.Tensor], Any]:
    """Leaves of ``tree``, checking that its structure equals that of ``like``."""
    leaves, spec = optree.tree_flatten(tree, namespace=NAMESPACE)
    like_spec = optree.tree_structure(like, namespace=NAMESPACE)
    if spec != like_spec:
        got = set(_paths(tree))
        want = set(_paths(like))
        missing, extra = sorted(want - got), sorted(got - want)
        raise ValueError(
            f"lux_torch.optim: {what} has a different structure from the parameters: "
            f"missing {missing}, unexpected {extra}; expected {like_spec}, got {spec}"
        )
    return leaves, spec


def _paths(tree: Tree) -> list[str]:
    return [".".join(map(str, p)) for p in optree.tree_paths(tree, namespace=NAMESPACE)]


def _unflatten(spec: Any, leaves: list[torch.Tensor]) -> Tree:
    return optree.tree_unflatten(spec, leaves)


def _zeros_like(ps: Tree, fill: float = 0.0) -> Tree:
    return optree.tree_map(lambda p: torch.full_like(p, fill), ps, namespace=NAMESPACE)


def _count() -> torch.Tensor:
    return torch.zeros((), dtype=torch.int64)


def _check_nonneg(name: str, value: float, fn: str) -> None:
    if value < 0.0:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be >= 0, got {value}")


def _check_lr(lr: LearningRate, fn: str) -> None:
    if not callable(lr):
        _check_nonneg("lr", float(lr), fn)


def _check_beta(name: str, value: float, fn: str) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be in [0, 1), got {value}")


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
    p_leaves, spec = optree.tree_flatten(ps, namespace=NAMESPACE)
    u_leaves, _ = _flatten(updates, ps, "updates")
    return _unflatten(spec, _foreach("add", p_leaves, u_leaves))


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Compose transformations left to right; the state is a tuple of their states.

    Arguments:
        transforms: the transformations, applied in order.

    Returns:
        A :class:`GradientTransformation`.

    Example:
        >>> opt = chain(clip_by_global_norm(1.0), scale(-0.1))
    """

    def init(ps: Tree) -> State:
        return tuple(t.init(ps) for t in transforms)

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        new_states = []
        for t, s in zip(transforms, state, strict=True):
            grads, s = t.update(grads, s, ps)
            new_states.append(s)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)


def _stateless(fn: Callable[[list[torch.Tensor], list[torch.Tensor] | None], list]) -> Any:
    def init(ps: Tree) -> State:
        return ()

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        if ps is None:
            g, spec = optree.tree_flatten(grads, namespace=NAMESPACE)
            p = None
        else:
            g, spec = _flatten(grads, ps, "grads")
            p = optree.tree_leaves(ps, namespace=NAMESPACE)
        return _unflatten(spec, fn(g, p)), state

    return GradientTransformation(init, update)


def scale(step_size: float) -> GradientTransformation:
    """Multiply updates by a constant ``step_size`` (use a negative value to descend).

    Arguments:
        step_size: the factor.

    Returns:
        A stateless :class:`GradientTransformation`.

    Example:
        >>> opt = scale(-0.1)
    """
    return _stateless(lambda g, p: _foreach("mul", g, step_size))


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """Add ``weight_decay * ps`` to the updates (L2 regularisation / decoupled decay).

    Arguments:
        weight_decay: the decay factor (>= 0).

    Returns:
        A stateless :class:`GradientTransformation`; ``update`` needs ``ps``.

    Example:
        >>> opt = chain(add_decayed_weights(1e-4), scale(-0.1))
    """
    _check_nonneg("weight_decay", weight_decay, "add_decayed_weights")

    def fn(g: list[torch.Tensor], p: list[torch.Tensor] | None) -> list[torch.Tensor]:
        if weight_decay == 0.0:
            return g
        if p is None:
            raise ValueError("lux_torch.optim.add_decayed_weights: update needs ps")
        return _foreach("add", g, p, alpha=weight_decay)

    return _stateless(fn)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale updates so that their global L2 norm is at most ``max_norm``.

    Arguments:
        max_norm: the largest allowed global norm (> 0).

    Returns:
        A stateless :class:`GradientTransformation`.

    Example:
        >>> opt = chain(clip_by_global_norm(1.0), scale(-0.1))
    """
    if max_norm <= 0.0:
        raise ValueError(
            f"lux_torch.optim.clip_by_global_norm: max_norm must be > 0, got {max_norm}"
        )

    def fn(g: list[torch.Tensor], p: list[torch.Tensor] | None) -> list[torch.Tensor]:
        if not g:
            return g
        norm = torch.sqrt(sum(torch.sum(x * x) for x in g))  # type: ignore[arg-type]
        factor = torch.clamp(max_norm / (norm + 1e-12), max=1.0)
        return _foreach("mul", g, factor)

    return _stateless(fn)


def scale_by_learning_rate(lr: LearningRate) -> GradientTransformation:
    """Multiply updates by ``-lr``; ``lr`` is a float or a schedule ``f(count) -> lr``.

    The schedule receives the number of updates done so far (0-dim ``int64`` tensor).

    Arguments:
        lr: learning rate or schedule.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 ()}``.

    Example:
        >>> opt = chain(scale_by_adam(), scale_by_learning_rate(1e-3))
    """
    _check_lr(lr, "scale_by_learning_rate")

    def init(ps: Tree) -> State:
        return {"count": _count()}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        g, spec = optree.tree_flatten(grads, namespace=NAMESPACE)
        count = state["count"]
        step = lr(count) if callable(lr) else lr
        return _unflatten(spec, _foreach("mul", g, -step)), {"count": count + 1}

    return GradientTransformation(init, update)


def _moment_update(
    name: str, grads: Tree, state: State, keys: tuple[str, ...]
) -> tuple[list[torch.Tensor], Any, list[list[torch.Tensor]], torch.Tensor]:
    g, spec = _flatten(grads, state[keys[0]], f"grads (to {name})")
    moments = [optree.tree_leaves(state[k], namespace=NAMESPACE) for k in keys]
    return g, spec, moments, state["count"] + 1


def scale_by_adam(
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> GradientTransformation:
    """Adam's bias-corrected ``m_hat / (sqrt(v_hat) + eps)`` direction (torch.optim.Adam).

    Arguments:
        betas: decay rates ``(beta1, beta2)`` of the first and second moments.
        eps: added to the bias-corrected root of the second moment.

    Returns:
        A :class:`GradientTransformation` with state ``{"count", "mu", "nu"}``.

    Example:
        >>> opt = chain(scale_by_adam(), scale_by_learning_rate(1e-3))
    """
    b1, b2 = betas
    _check_beta("betas[0]", b1, "scale_by_adam")
    _check_beta("betas[1]", b2, "scale_by_adam")
    _check_nonneg("eps", eps, "scale_by_adam")

    def init(ps: Tree) -> State:
        return {"count": _count(), "mu": _zeros_like(ps), "nu": _zeros_like(ps)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        g, spec, (mu, nu), count = _moment_update("scale_by_adam", grads, state, ("mu", "nu"))
        mu = _foreach("lerp", mu, g, 1.0 - b1)
        nu = _foreach("addcmul", _foreach("mul", nu, b2), g, g, value=1.0 - b2)
        step = count.to(torch.float64)
        bc1 = 1.0 - torch.pow(b1, step)
        bc2_sqrt = torch.sqrt(1.0 - torch.pow(b2, step))
        denom = _foreach("add", _foreach("div", _foreach("sqrt", nu), bc2_sqrt), eps)
        out = _foreach("div", _foreach("div", mu, denom), bc1)
        new = {"count": count, "mu": _unflatten(spec, mu), "nu": _unflatten(spec, nu)}
        return _unflatten(spec, out), new

    return GradientTransformation(init, update)


def scale_by_rms(alpha: float = 0.99, eps: float = 1e-8, centered: bool = False) -> Any:
    """RMSprop's ``g / (sqrt(E[g^2] - centered*E[g]^2) + eps)`` (torch.optim.RMSprop).

    Arguments:
        alpha: smoothing constant of the running averages.
        eps: added after the square root.
        centered: subtract the squared running mean of the gradients.

    Returns:
        A :class:`GradientTransformation` with state ``{"count", "nu", "mu"}``.

    Example:
        >>> opt = chain(scale_by_rms(), scale_by_learning_rate(1e-2))
    """
    _check_beta("alpha", alpha, "scale_by_rms")
    _check_nonneg("eps", eps, "scale_by_rms")

    def init(ps: Tree) -> State:
        return {"count": _count(), "nu": _zeros_like(ps), "mu": _zeros_like(ps)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        g, spec, (nu, mu), count = _moment_update("scale_by_rms", grads, state, ("nu", "mu"))
        nu = _foreach("addcmul", _foreach("mul", nu, alpha), g, g, value=1.0 - alpha)
        if centered:
            mu = _foreach("lerp", mu, g, 1.0 - alpha)
            var = _foreach("addcmul", nu, mu, mu, value=-1.0)
        else:
            var = nu
        out = _foreach("div", g, _foreach("add", _foreach("sqrt", var), eps))
        new = {"count": count, "nu": _unflatten(spec, nu), "mu": _unflatten(spec, mu)}
        return _unflatten(spec, out), new

    return GradientTransformation(init, update)


def scale_by_adagrad(eps: float = 1e-10, initial_accumulator_value: float = 0.0) -> Any:
    """Adagrad's ``g / (sqrt(sum g^2) + eps)`` (torch.optim.Adagrad, no lr decay).

    Arguments:
        eps: added after the square root.
        initial_accumulator_value: starting value of the sum of squares.

    Returns:
        A :class:`GradientTransformation` with state ``{"count", "sum"}``.

    Example:
        >>> opt = chain(scale_by_adagrad(), scale_by_learning_rate(1e-2))
    """
    _check_nonneg("eps", eps, "scale_by_adagrad")
    _check_nonneg("initial_accumulator_value", initial_accumulator_value, "scale_by_adagrad")

    def init(ps: Tree) -> State:
        return {"count": _count(), "sum": _zeros_like(ps, initial_accumulator_value)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        g, spec, (acc,), count = _moment_update("scale_by_adagrad", grads, state, ("sum",))
        acc = _foreach("addcmul", acc, g, g)
        out = _foreach("div", g, _foreach("add", _foreach("sqrt", acc), eps))
        return _unflatten(spec, out), {"count": count, "sum": _unflatten(spec, acc)}

    return GradientTransformation(init, update)


def trace(momentum: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum: ``buf = momentum * buf + g``; output ``buf`` (or ``g + momentum * buf``).

    With ``momentum == 0`` it is the identity with an empty state.

    Arguments:
        momentum: the momentum factor in [0, 1).
        nesterov: use Nesterov momentum.

    Returns:
        A :class:`GradientTransformation` with state ``{"buf": tree}`` (or ``()``).

    Example:
        >>> opt = chain(trace(0.9), scale_by_learning_rate(0.1))
    """
    _check_beta("momentum", momentum, "trace")
    if nesterov and momentum == 0.0:
        raise ValueError("lux_torch.optim.trace: nesterov needs momentum > 0")
    if momentum == 0.0:
        return _stateless(lambda g, p: g)

    def init(ps: Tree) -> State:
        return {"buf": _zeros_like(ps)}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        g, spec = _flatten(grads, state["buf"], "grads (to trace)")
        buf = optree.tree_leaves(state["buf"], namespace=NAMESPACE)
        buf = _foreach("add", _foreach("mul", buf, momentum), g)
        out = _foreach("add", g, buf, alpha=momentum) if nesterov else buf
        return _unflatten(spec, out), {"buf": _unflatten(spec, buf)}

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- aliases


def sgd(
    lr: LearningRate,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Stochastic gradient descent, equal to ``torch.optim.SGD`` (dampening 0).

    Arguments:
        lr: learning rate (float or schedule).
        momentum: momentum factor.
        nesterov: Nesterov momentum.
        weight_decay: L2 penalty added to the gradients.

    Returns:
        A :class:`GradientTransformation`.

    Example:
        >>> opt = sgd(0.1, momentum=0.9)
    """
    _check_lr(lr, "sgd")
    return chain(
        add_decayed_weights(weight_decay), trace(momentum, nesterov), scale_by_learning_rate(lr)
    )


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
        A :class:`GradientTransformation`.

    Example:
        >>> opt = adam(1e-3)
    """
    _check_lr(lr, "adam")
    return chain(
        add_decayed_weights(weight_decay), scale_by_adam(betas, eps), scale_by_learning_rate(lr)
    )


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
        A :class:`GradientTransformation`.

    Example:
        >>> opt = adamw(1e-3, weight_decay=1e-2)
    """
    _check_lr(lr, "adamw")
    return chain(
        scale_by_adam(betas, eps), add_decayed_weights(weight_decay), scale_by_learning_rate(lr)
    )


def rmsprop(
    lr: LearningRate = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
    centered: bool = False,
) -> GradientTransformation:
    """RMSprop, equal to ``torch.optim.RMSprop``.

    Arguments:
        lr: learning rate (float or schedule).
        alpha: smoothing constant.
        eps: added after the square root.
        momentum: momentum factor applied to the scaled gradient.
        centered: normalise by the estimated variance.

    Returns:
        A :class:`GradientTransformation`.

    Example:
        >>> opt = rmsprop(1e-2, centered=True)
    """
    _check_lr(lr, "rmsprop")
    return chain(scale_by_rms(alpha, eps, centered), trace(momentum), scale_by_learning_rate(lr))


def adagrad(
    lr: LearningRate = 1e-2, eps: float = 1e-10, initial_accumulator_value: float = 0.0
) -> GradientTransformation:
    """Adagrad, equal to ``torch.optim.Adagrad`` (``lr_decay=0``).

    Arguments:
        lr: learning rate (float or schedule).
        eps: added after the square root.
        initial_accumulator_value: starting sum of squares.

    Returns:
        A :class:`GradientTransformation`.

    Example:
        >>> opt = adagrad(1e-2)
    """
    _check_lr(lr, "adagrad")
    return chain(scale_by_adagrad(eps, initial_accumulator_value), scale_by_learning_rate(lr))
