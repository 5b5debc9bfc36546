"""The ``torch.optim`` namesakes: :func:`nadam`, :func:`radam`, :func:`adamax`,
:func:`adadelta`, :func:`rprop` and :func:`asgd` (see :mod:`lux_torch.optim`).

Each alias is a :func:`chain` of a ``scale_by_<name>`` direction and the shared primitives
(:func:`add_decayed_weights`, :func:`scale_by_learning_rate`, :func:`scale`) and equals the
``torch.optim`` class of the same name step for step, for every option that class has
(``foreach``, ``capturable`` and ``differentiable`` are implementation details of torch's).
The ``scale_by_*`` transformations are written as the maths, one line per state entry,
over the flattened leaf lists. Their scalar factors (bias corrections, momentum schedules)
are Python numbers in plain eager mode, as in ``torch.optim``, and ``float64`` tensors of
the step count when traced (``torch.compile``) or mapped (``torch.func.vmap`` over states),
so one code path serves all modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..tree import unflatten
from . import foreach as fe
from ._base import (
    GradientTransformation,
    LeafUpdate,
    LearningRate,
    State,
    Tree,
    along,
    check_beta,
    check_lr,
    check_nonneg,
    check_shapes,
    flatten_checked,
    inc,
    leaves_along,
    new_count,
    zeros_like_tree,
)
from .transforms import add_decayed_weights, chain, scale, scale_by_learning_rate

Number = int | float | torch.Tensor  # a scalar factor: Python in eager mode, else a tensor
Leaves = list[torch.Tensor]

# ----------------------------------------------------------------------------- helpers


def step_number(count: torch.Tensor) -> Number:
    """``count + 1``, the number of the update in progress: a Python ``int`` in plain eager
    mode (scalar factors are then Python floats, as in ``torch.optim``), else a ``float64``
    tensor (``torch.compile``, ``vmap``, ``make_fx``, fake tensors), so that the factors
    trace and map like the rest of the update."""
    if (
        torch.compiler.is_compiling()
        or type(count) is not torch.Tensor
        or torch._C._functorch.is_functorch_wrapped_tensor(count)
        or torch._C._len_torch_dispatch_stack() > 0
    ):
        return count.to(torch.float64) + 1
    return int(count) + 1


def where(cond: bool | torch.Tensor, a: Any, b: Any) -> Any:
    """``a if cond else b`` for a Python ``cond``, ``torch.where`` for a traced one."""
    if isinstance(cond, torch.Tensor):
        return torch.where(cond, a, b)
    return a if cond else b


def sqrt(x: Number) -> Number:
    return torch.sqrt(x) if isinstance(x, torch.Tensor) else math.sqrt(x)


def dtypes_of(values: Leaves, like: Leaves) -> Leaves:
    """``values`` in the dtypes of ``like``: a traced (``float64`` tensor) factor promotes
    the 0-dim leaves it multiplies (two 0-dim tensors promote, a 0-dim and a bigger one
    do not); a no-op for every other leaf."""
    return [v if v.dtype is x.dtype else v.to(x.dtype) for v, x in zip(values, like, strict=True)]


def moments_init(ps: Tree, *names: str) -> State:
    """``{"count": 0, name: zeros like ps, ...}``."""
    return {"count": new_count(), **{k: zeros_like_tree(ps) for k in names}}


def ema(old: Leaves, g: Leaves, decay: float) -> Leaves:
    """``decay * old + (1 - decay) * g``."""
    return list(fe.lerp(old, g, 1.0 - decay))


def ema_of_squares(old: Leaves, g: Leaves, decay: float) -> Leaves:
    """``decay * old + (1 - decay) * g ** 2``."""
    return list(fe.addcmul_(fe.mul(old, decay), g, g, value=1.0 - decay))


def finish(s: State, out: Leaves, g: Leaves, **new: Leaves | torch.Tensor) -> tuple[Leaves, State]:
    """``(out, new state)``: ``out`` in the gradients' dtypes; the state ``s`` with its count
    advanced and every other entry replaced by ``new[key]``, keys in the state's order."""
    return dtypes_of(out, g), {k: inc(v) if k == "count" else new[k] for k, v in s.items()}


def at_least(x: Number, low: float) -> Number:
    return torch.clamp(x, min=low) if isinstance(x, torch.Tensor) else max(x, low)


def as_state(x: Number) -> torch.Tensor:
    """A scalar factor kept in the state: a 0-dim ``float64`` tensor."""
    if isinstance(x, torch.Tensor):
        return x.to(torch.float64)
    return torch.tensor(x, dtype=torch.float64)


def state_value(x: torch.Tensor, t: Number) -> Number:
    """A 0-dim state scalar as a Python float when ``t`` is one (eager), else the tensor."""
    return x if isinstance(t, torch.Tensor) else float(x)


def leaves_of(
    name: str, grads: Tree, like: Tree, ps: Tree = None
) -> tuple[Leaves, Any, Leaves | None]:
    """``(grads leaves, spec, ps leaves or None)`` for an update of ``name``.

    ``like`` is a tree of the state with the parameters' structure and shapes (a moment).
    A gradient of another structure or shape than ``like``, and ``ps`` (pass it where the
    update reads it) of another structure or shape than the gradients, are refused, naming
    the path: element-wise ops would broadcast a ``(1,)`` gradient silently.
    """
    g, spec = flatten_checked(grads, like, f"grads (to {name})")
    p = None
    if ps is not None:
        p = flatten_checked(ps, like, f"ps (to {name})")[0]
        check_shapes("grads", g, p, spec)
    check_shapes("grads", g, leaves_along(spec, like, name), spec, of=f"{name} state")
    return g, spec, p


Rule = Callable[[Leaves, State, "Leaves | None"], tuple[Leaves, State]]


def transformation(
    name: str,
    init: Callable[[Tree], State],
    rule: Rule,
    trees: tuple[str, ...],
    uses_ps: bool = False,
    fresh: bool = True,
) -> GradientTransformation:
    """The :class:`GradientTransformation` of an update written on leaf lists.

    ``rule(g, s, p) -> (out, new)``: ``g`` the leaves of the gradients, ``s`` the state
    with its entries ``trees`` (trees like ``ps``) as leaf lists along them, ``p`` the
    leaves of ``ps`` (``uses_ps``; else ``None``); ``new`` the next state, laid out as ``s``.
    ``update`` refuses, by named errors, a state that is not a dict with ``init``'s keys
    (e.g. another optimizer's state) and gradients (or ``ps``) unlike the state; it is a
    :class:`~lux_torch.optim._base.LeafUpdate`: a :func:`chain` hands it leaf lists.
    ``fresh``: ``out`` are new tensors that ``new`` does not hold (the next member of a
    chain may write into them).
    """
    keys = list(init({}))

    def check_keys(state: State) -> None:
        if not isinstance(state, dict) or list(state) != keys:
            got = list(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"lux_torch.optim.{name}: the state must be a dict with keys {keys} (from "
                f"init), got {got}"
            )

    def run(g: Leaves, spec: Any, state: State, read: list[Leaves], p: Leaves | None) -> Any:
        out, new = rule(g, {**state, **dict(zip(trees, read, strict=True))}, p)
        return out, {k: unflatten(spec, v) if k in trees else v for k, v in new.items()}

    def leaves(
        g: Leaves, spec: Any, state: State, p: Leaves | None, owned: bool
    ) -> tuple[Leaves, State, bool] | None:
        check_keys(state)
        read = [along(spec, state[k]) for k in trees]
        if any(r is None for r in read):
            return None  # the tree path reorders or raises
        check_shapes("grads", g, read[0], spec, of=f"{name} state")  # type: ignore[arg-type]  # not None
        if uses_ps:
            needs_ps(name, p)
            check_shapes("grads", g, p, spec)  # type: ignore[arg-type]  # not None
        out, new = run(g, spec, state, read, p if uses_ps else None)  # type: ignore[arg-type]  # not None
        return out, new, fresh

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        check_keys(state)
        if uses_ps:
            needs_ps(name, ps)
        g, spec, p = leaves_of(name, grads, state[trees[0]], ps if uses_ps else None)
        read = [leaves_along(spec, state[k], name) for k in trees]
        out, new = run(g, spec, state, read, p)
        return unflatten(spec, out), new

    return GradientTransformation(init, LeafUpdate(update, leaves))


def needs_ps(name: str, ps: Any) -> None:
    if ps is None:
        raise ValueError(f"lux_torch.optim.{name}: update needs ps")


def check_range(name: str, value: float, low: float, high: float, fn: str) -> None:
    if not low <= value <= high:
        raise ValueError(f"lux_torch.optim.{fn}: {name} must be in [{low}, {high}], got {value}")


def check_eps(eps: float, fn: str) -> None:
    check_nonneg("eps", eps, fn)


def check_moments(betas: tuple[float, float], eps: float, fn: str) -> tuple[float, float]:
    """Check ``betas`` (each in [0, 1)) and ``eps`` (>= 0); return the betas."""
    check_beta("betas[0]", betas[0], fn)
    check_beta("betas[1]", betas[1], fn)
    check_eps(eps, fn)
    return betas


def maximizing(maximize: bool, *rest: GradientTransformation) -> GradientTransformation:
    """``chain(*rest)``, after negating the gradients when ``maximize`` (as torch does)."""
    return chain(scale(-1.0), *rest) if maximize else chain(*rest)


def l2_or_decoupled(
    direction: GradientTransformation, weight_decay: float, decoupled: bool, fn: str
) -> list[GradientTransformation]:
    """``[L2 decay, direction]`` or ``[direction, decoupled decay]`` (decay scaled by lr)."""
    check_nonneg("weight_decay", weight_decay, fn)
    decay = add_decayed_weights(weight_decay)
    return [direction, decay] if decoupled else [decay, direction]


# ------------------------------------------------------------------------------- NAdam


def scale_by_nadam(
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, momentum_decay: float = 4e-3
) -> GradientTransformation:
    """NAdam's direction (Dozat, 2016, "Incorporating Nesterov Momentum into Adam"), as
    ``torch.optim.NAdam``, with its momentum schedule.

    At update ``t`` (1, 2, ...), with ``psi = momentum_decay``::

        mu_t  = b1 * (1 - 0.5 * 0.96 ** (t * psi)),   prod_t = prod_{i <= t} mu_i
        m     = b1 * m + (1 - b1) * g
        v     = b2 * v + (1 - b2) * g ** 2
        denom = sqrt(v / (1 - b2 ** t)) + eps
        out   = (1 - mu_t) / (1 - prod_t) * g / denom
                + mu_{t+1} / (1 - prod_t * mu_{t+1}) * m / denom

    This is not optax's ``scale_by_adam(nesterov=True)``, which has no momentum schedule.

    Arguments:
        betas: ``(b1, b2)``, decay rates of the first and second moments, in [0, 1).
        eps: added to the bias-corrected root of the second moment (>= 0).
        momentum_decay: ``psi`` of the momentum schedule (>= 0).

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu_product":
        float64 (), "mu": tree, "nu": tree}``: the number of updates done, ``prod_t``, and the
        first and second moments (trees like ``ps``).

    Example:
        >>> opt = chain(scale_by_nadam(), scale_by_learning_rate(2e-3))
    """
    name = "scale_by_nadam"
    b1, b2 = check_moments(betas, eps, name)
    check_nonneg("momentum_decay", momentum_decay, name)

    def init(ps: Tree) -> State:
        state = moments_init(ps, "mu", "nu")
        return {
            "count": state.pop("count"),
            "mu_product": torch.ones((), dtype=torch.float64),
            **state,
        }

    def update(g: Leaves, s: State, p: Leaves | None) -> tuple[Leaves, State]:
        t = step_number(s["count"])
        mu_t = b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        product = state_value(s["mu_product"], t) * mu_t
        c_grad = (1.0 - mu_t) / (1.0 - product)
        c_mom = mu_next / (1.0 - product * mu_next)
        bc2 = 1.0 - b2**t
        mu, nu = ema(s["mu"], g, b1), ema_of_squares(s["nu"], g, b2)
        # (g * c_grad + mu * c_mom) / (sqrt(nu / bc2) + eps); ``_`` ops: own temporaries
        numerator = fe.add_(fe.mul(g, c_grad), fe.mul(mu, c_mom))
        out = fe.div_(numerator, fe.add_(fe.sqrt_(fe.div(nu, bc2)), eps))
        return finish(s, list(out), g, mu_product=as_state(product), mu=mu, nu=nu)

    return transformation(name, init, update, ("mu", "nu"))


def nadam(
    lr: LearningRate = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """NAdam (Dozat, 2016), equal to ``torch.optim.NAdam`` with every option.

    ``p -= lr * scale_by_nadam(g + weight_decay * p)``; with ``decoupled_weight_decay``
    (NAdamW) ``p -= lr * (scale_by_nadam(g) + weight_decay * p)`` instead. See
    :func:`scale_by_nadam` for the direction.

    Arguments:
        lr: learning rate (float or schedule).
        betas: moment decay rates.
        eps: numerical stabiliser.
        weight_decay: L2 penalty added to the gradients, or the decoupled decay factor.
        momentum_decay: the momentum schedule's ``psi``.
        decoupled_weight_decay: decay the weights as AdamW does.
        maximize: ascend the objective (the gradients are negated first).

    Returns:
        A :class:`GradientTransformation`: a :func:`chain` of ``scale(-1)`` (only when
        ``maximize``), ``add_decayed_weights`` and ``scale_by_nadam`` (in the order of the
        decay mode), and ``scale_by_learning_rate``; its state is the tuple of theirs.

    Example:
        >>> opt = nadam(2e-3, weight_decay=1e-2, decoupled_weight_decay=True)
    """
    check_lr(lr, "nadam")
    direction = scale_by_nadam(betas, eps, momentum_decay)
    members = l2_or_decoupled(direction, weight_decay, decoupled_weight_decay, "nadam")
    return maximizing(maximize, *members, scale_by_learning_rate(lr))


# ------------------------------------------------------------------------------- RAdam


def scale_by_radam(
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> GradientTransformation:
    """RAdam's rectified direction (Liu et al., 2019, "On the Variance of the Adaptive
    Learning Rate and Beyond", arXiv:1908.03265), as ``torch.optim.RAdam``.

    At update ``t``::

        m     = b1 * m + (1 - b1) * g
        v     = b2 * v + (1 - b2) * g ** 2
        rho_inf = 2 / (1 - b2) - 1,   rho_t = rho_inf - 2 t b2 ** t / (1 - b2 ** t)
        r_t   = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
        out   = m / (1 - b1 ** t) * r_t * sqrt(1 - b2 ** t) / (sqrt(v) + eps)  if rho_t > 5
                m / (1 - b1 ** t)                                               otherwise

    (optax's ``scale_by_radam`` adds ``eps`` to the bias-corrected root and has a
    ``threshold`` argument; this follows torch.)

    Arguments:
        betas: ``(b1, b2)`` in [0, 1).
        eps: added to the root of the second moment (>= 0).

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree,
        "nu": tree}``: the number of updates done and the two moments (like ``ps``).

    Example:
        >>> opt = chain(scale_by_radam(), scale_by_learning_rate(1e-3))
    """
    name = "scale_by_radam"
    b1, b2 = check_moments(betas, eps, name)
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def init(ps: Tree) -> State:
        return moments_init(ps, "mu", "nu")

    def update(g: Leaves, s: State, p: Leaves | None) -> tuple[Leaves, State]:
        t = step_number(s["count"])
        bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
        rho_t = rho_inf - 2.0 * t * b2**t / bc2
        rectified = rho_t > 5.0
        if isinstance(rho_t, torch.Tensor):  # traced: both branches, the ratio clamped
            ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            factor = sqrt(torch.clamp(ratio, min=0.0) * bc2)
        elif rectified:
            factor = sqrt(
                (rho_t - 4) * (rho_t - 2) * rho_inf * bc2 / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            )
        else:
            factor = 1.0
        mu, nu = ema(s["mu"], g, b1), ema_of_squares(s["nu"], g, b2)
        if isinstance(rectified, torch.Tensor):  # traced: both branches, selected per step
            out = [
                where(rectified, m / bc1 * factor / (v.sqrt() + eps), m / bc1)
                for m, v in zip(mu, nu, strict=True)
            ]
        elif rectified:  # m / bc1 * factor / (sqrt(v) + eps); ``_`` ops: own temporaries
            scaled = fe.mul_(fe.div(mu, bc1), factor)
            out = list(fe.div_(scaled, fe.add_(fe.sqrt(nu), eps)))
        else:
            out = list(fe.div(mu, bc1))
        return finish(s, out, g, mu=mu, nu=nu)

    return transformation(name, init, update, ("mu", "nu"))


def radam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """RAdam (Liu et al., 2019, arXiv:1908.03265), equal to ``torch.optim.RAdam``.

    ``p -= lr * scale_by_radam(g + weight_decay * p)``; with ``decoupled_weight_decay``
    ``p -= lr * (scale_by_radam(g) + weight_decay * p)``.

    Arguments:
        lr: learning rate (float or schedule).
        betas: moment decay rates.
        eps: numerical stabiliser.
        weight_decay: L2 penalty, or the decoupled decay factor.
        decoupled_weight_decay: decay the weights as AdamW does.
        maximize: ascend the objective.

    Returns:
        A :class:`GradientTransformation`: the :func:`chain` of (``scale(-1)`` when
        ``maximize``), ``add_decayed_weights`` and ``scale_by_radam`` (in the order of the
        decay mode) and ``scale_by_learning_rate``; its state is the tuple of theirs.

    Example:
        >>> opt = radam(1e-3)
    """
    check_lr(lr, "radam")
    members = l2_or_decoupled(
        scale_by_radam(betas, eps), weight_decay, decoupled_weight_decay, "radam"
    )
    return maximizing(maximize, *members, scale_by_learning_rate(lr))


# ------------------------------------------------------------------------------ Adamax


def scale_by_adamax(
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> GradientTransformation:
    """Adamax's direction (Kingma & Ba, 2014, "Adam: A Method for Stochastic Optimization",
    arXiv:1412.6980, section 7.1), as ``torch.optim.Adamax``::

        m   = b1 * m + (1 - b1) * g
        u   = max(b2 * u, |g| + eps)
        out = m / ((1 - b1 ** t) * u)

    (optax's ``scale_by_adamax`` adds ``eps`` outside the maximum; this follows torch.)

    Arguments:
        betas: ``(b1, b2)`` in [0, 1).
        eps: added to ``|g|`` inside the maximum (>= 0).

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree,
        "nu": tree}``: the number of updates done, the first moment and the exponentially
        weighted infinity norm ``u`` (like ``ps``).

    Example:
        >>> opt = chain(scale_by_adamax(), scale_by_learning_rate(2e-3))
    """
    name = "scale_by_adamax"
    b1, b2 = check_moments(betas, eps, name)

    def init(ps: Tree) -> State:
        return moments_init(ps, "mu", "nu")

    def update(g: Leaves, s: State, p: Leaves | None) -> tuple[Leaves, State]:
        t = step_number(s["count"])
        inv_bc1 = 1.0 / (1.0 - b1**t)
        mu = ema(s["mu"], g, b1)
        # max(b2 * nu, |g| + eps); ``_`` ops write into this update's own temporaries
        weighted = fe.mul(s["nu"], b2)
        nu = list(fe.maximum_(weighted, fe.add_(fe.op("abs", g), eps)))
        out = fe.mul_(fe.div(mu, nu), inv_bc1)
        return finish(s, list(out), g, mu=mu, nu=nu)

    return transformation(name, init, update, ("mu", "nu"))


def adamax(
    lr: LearningRate = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Adamax (Kingma & Ba, 2014), equal to ``torch.optim.Adamax``:
    ``p -= lr * scale_by_adamax(g + weight_decay * p)``.

    Arguments:
        lr: learning rate (float or schedule).
        betas: decay rates of the first moment and of the infinity norm.
        eps: numerical stabiliser.
        weight_decay: L2 penalty added to the gradients.
        maximize: ascend the objective.

    Returns:
        A :class:`GradientTransformation`: the :func:`chain` of (``scale(-1)`` when
        ``maximize``), ``add_decayed_weights``, ``scale_by_adamax`` and
        ``scale_by_learning_rate``; its state is the tuple of theirs.

    Example:
        >>> opt = adamax(2e-3)
    """
    check_lr(lr, "adamax")
    members = l2_or_decoupled(scale_by_adamax(betas, eps), weight_decay, False, "adamax")
    return maximizing(maximize, *members, scale_by_learning_rate(lr))


# ---------------------------------------------------------------------------- Adadelta


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> GradientTransformation:
    """Adadelta's direction (Zeiler, 2012, "ADADELTA: An Adaptive Learning Rate Method",
    arXiv:1212.5701), as ``torch.optim.Adadelta`` (and optax's ``scale_by_adadelta``)::

        v     = rho * v + (1 - rho) * g ** 2
        delta = sqrt(a + eps) / sqrt(v + eps) * g
        a     = rho * a + (1 - rho) * delta ** 2
        out   = delta

    Arguments:
        rho: decay rate of both running averages, in [0, 1].
        eps: added inside both square roots (>= 0).

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "square_avg":
        tree, "acc_delta": tree}``: the number of updates done and the running averages of
        ``g ** 2`` and ``delta ** 2`` (like ``ps``).

    Example:
        >>> opt = chain(scale_by_adadelta(), scale_by_learning_rate(1.0))
    """
    name = "scale_by_adadelta"
    check_range("rho", rho, 0.0, 1.0, name)
    check_eps(eps, name)

    def init(ps: Tree) -> State:
        return moments_init(ps, "square_avg", "acc_delta")

    def update(g: Leaves, s: State, p: Leaves | None) -> tuple[Leaves, State]:
        square_avg = ema_of_squares(s["square_avg"], g, rho)
        acc = s["acc_delta"]
        # sqrt(acc + eps) / sqrt(square_avg + eps) * g; mul_ into its own temporaries
        root_acc = fe.sqrt_(fe.add(acc, eps))
        delta = list(fe.mul_(fe.div_(root_acc, fe.sqrt_(fe.add(square_avg, eps))), g))
        acc_delta = ema_of_squares(s["acc_delta"], delta, rho)
        return finish(s, delta, g, square_avg=square_avg, acc_delta=acc_delta)

    return transformation(name, init, update, ("square_avg", "acc_delta"))


def adadelta(
    lr: LearningRate = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Adadelta (Zeiler, 2012), equal to ``torch.optim.Adadelta``:
    ``p -= lr * scale_by_adadelta(g + weight_decay * p)``.

    Arguments:
        lr: learning rate (float or schedule); the paper's rule has ``lr = 1``.
        rho: decay rate of the running averages.
        eps: numerical stabiliser.
        weight_decay: L2 penalty added to the gradients.
        maximize: ascend the objective.

    Returns:
        A :class:`GradientTransformation`: the :func:`chain` of (``scale(-1)`` when
        ``maximize``), ``add_decayed_weights``, ``scale_by_adadelta`` and
        ``scale_by_learning_rate``; its state is the tuple of theirs.

    Example:
        >>> opt = adadelta(1.0, rho=0.95)
    """
    check_lr(lr, "adadelta")
    members = l2_or_decoupled(scale_by_adadelta(rho, eps), weight_decay, False, "adadelta")
    return maximizing(maximize, *members, scale_by_learning_rate(lr))


# ------------------------------------------------------------------------------- Rprop


def scale_by_rprop(
    lr: float = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50.0),
) -> GradientTransformation:
    """Rprop's direction (Riedmiller & Braun, 1993, "A Direct Adaptive Method for Faster
    Backpropagation Learning: The RPROP Algorithm"), as ``torch.optim.Rprop``.

    Per element, with ``s = g * prev``::

        step = clamp(step * (eta_plus if s > 0 else eta_minus if s < 0 else 1), lo, hi)
        g'   = 0 if s < 0 else g
        out  = sign(g') * step,   prev = g'

    (optax's ``scale_by_rprop`` leaves the step size unclamped where ``s == 0`` and keeps
    other values in ``prev``; this follows torch.)

    Arguments:
        lr: the initial step size of every element (> 0).
        etas: ``(eta_minus, eta_plus)`` with ``0 < eta_minus < 1 < eta_plus``.
        step_sizes: ``(lo, hi)``, the bounds of the step sizes, ``0 <= lo <= hi``.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "prev": tree,
        "step_size": tree}``: the number of updates done, the previous (masked) gradient and
        the per-element step sizes (like ``ps``).

    Example:
        >>> opt = chain(scale_by_rprop(1e-2), scale(-1.0))
    """
    name = "scale_by_rprop"
    if callable(lr):
        raise ValueError(
            f"lux_torch.optim.{name}: lr is the initial step size (as in torch.optim.Rprop, "
            "a changed learning rate has no effect after the first step); a schedule is not "
            "supported"
        )
    check_lr(lr, name)
    eta_minus, eta_plus = etas
    if not 0.0 < eta_minus < 1.0 < eta_plus:
        raise ValueError(
            f"lux_torch.optim.{name}: etas must satisfy 0 < etas[0] < 1 < etas[1], got {etas}"
        )
    lo, hi = step_sizes
    if not 0.0 <= lo <= hi:
        raise ValueError(
            f"lux_torch.optim.{name}: step_sizes must satisfy 0 <= step_sizes[0] <= "
            f"step_sizes[1], got {step_sizes}"
        )

    def init(ps: Tree) -> State:
        return {**moments_init(ps, "prev"), "step_size": zeros_like_tree(ps, lr)}

    def update(g: Leaves, s: State, p: Leaves | None) -> tuple[Leaves, State]:
        steps, prevs, out = [], [], []
        for x, prev, step in zip(g, s["prev"], s["step_size"], strict=True):
            sign = x * prev
            step = torch.where(
                sign > 0, step * eta_plus, torch.where(sign < 0, step * eta_minus, step)
            )
            step = step.clamp(lo, hi)
            x = torch.where(sign < 0, torch.zeros_like(x), x)
            steps.append(step)
            prevs.append(x)
            out.append(x.sign() * step)
        return finish(s, out, g, prev=prevs, step_size=steps)

    return transformation(name, init, update, ("prev", "step_size"))


def rprop(
    lr: float = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50.0),
    maximize: bool = False,
) -> GradientTransformation:
    """Rprop (Riedmiller & Braun, 1993), equal to ``torch.optim.Rprop``:
    ``p -= scale_by_rprop(g)``.

    Arguments:
        lr: the initial step size (a float: Rprop adapts its step sizes itself).
        etas: ``(eta_minus, eta_plus)``, the multiplicative decrease and increase factors.
        step_sizes: ``(min, max)`` allowed step sizes.
        maximize: ascend the objective.

    Returns:
        A :class:`GradientTransformation`: the :func:`chain` of (``scale(-1)`` when
        ``maximize``), ``scale_by_rprop`` and ``scale(-1)``; its state is the tuple of
        theirs.

    Example:
        >>> opt = rprop(1e-2, etas=(0.5, 1.2))
    """
    return maximizing(maximize, scale_by_rprop(lr, etas, step_sizes), scale(-1.0))


# -------------------------------------------------------------------------------- ASGD


def asgd(
    lr: LearningRate = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Averaged SGD (Polyak & Juditsky, 1992, "Acceleration of Stochastic Approximation by
    Averaging"), equal to ``torch.optim.ASGD``, which also keeps the averaged parameters.

    At update ``t`` (1, 2, ...), with ``lr_t`` the learning rate at ``count = t - 1``::

        eta = lr_t / (1 + lambd * lr_t * (t - 1)) ** alpha
        p'  = p * (1 - lambd * eta) - eta * (g + weight_decay * p)
        ax  = ax + max(1, t - 1 - t0) ** -1 * (p' - ax)

    so ``ax`` is ``p'`` up to step ``t0 + 1`` and the running mean of the iterates after
    it. Read it with :func:`asgd_averaged_params`. With a constant learning rate this is
    torch's rule exactly; with a schedule, ``eta`` uses the learning rate of the current
    step, where torch's uses the one of the previous step (torch computes ``eta`` for the
    next step at the end of each step).

    Arguments:
        lr: learning rate (float or schedule), >= 0.
        lambd: decay term (>= 0).
        alpha: power of the ``eta`` decay (>= 0).
        t0: the step after which averaging starts (>= 0).
        weight_decay: L2 penalty added to the gradients.
        maximize: ascend the objective.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "ax": tree}``:
        the number of updates done and the averaged parameters (like ``ps``); ``update``
        needs ``ps``.

    Example:
        >>> opt = asgd(1e-2, t0=100)
        >>> state = opt.init(ps)
        >>> ax = asgd_averaged_params(state)
    """
    name = "asgd"
    check_lr(lr, name)
    check_nonneg("lambd", lambd, name)
    check_nonneg("alpha", alpha, name)
    check_nonneg("t0", t0, name)
    check_nonneg("weight_decay", weight_decay, name)
    sign = -1.0 if maximize else 1.0

    def init(ps: Tree) -> State:
        return moments_init(ps, "ax")

    def update(g: Leaves, s: State, p: Leaves | None) -> tuple[Leaves, State]:
        assert p is not None  # uses_ps
        t = step_number(s["count"])
        rate = lr(s["count"]) if callable(lr) else lr
        eta = rate / (1.0 + lambd * rate * (t - 1)) ** alpha
        weight = 1.0 / at_least(t - 1 - t0, 1.0)  # 1 (ax = p') up to step t0 + 1
        decay, step = eta * (lambd + weight_decay), eta * sign
        # -(p * decay + g * step), then ax + (p + out - ax) * weight; ``_`` ops write into
        # this update's own temporaries
        out = dtypes_of(list(fe.op("neg", fe.add_(fe.mul(p, decay), fe.mul(g, step)))), g)
        ax_old = s["ax"]
        ax = fe.add(ax_old, fe.mul_(fe.sub(fe.add(p, out), ax_old), weight))
        return finish(s, out, g, ax=dtypes_of(list(ax), g))

    return transformation(name, init, update, ("ax",), uses_ps=True)


def asgd_averaged_params(state: State) -> Tree:
    """The averaged parameters ``ax`` of an :func:`asgd` state (``torch.optim.ASGD``'s
    ``state[p]["ax"]``): evaluate the model with these.

    Arguments:
        state: the state of :func:`asgd` (``opt.init(ps)`` or an ``update``'s).

    Returns:
        A tree like ``ps``.

    Example:
        >>> ax = asgd_averaged_params(state)
    """
    if not isinstance(state, dict) or "ax" not in state:
        raise ValueError(
            "lux_torch.optim.asgd_averaged_params: expected the state of lux_torch.optim.asgd "
            f"(a dict with 'count' and 'ax'), got {type(state).__name__}"
        )
    return state["ax"]
