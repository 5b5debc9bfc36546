"""Adaptive and layer-wise optimizers that ``torch.optim`` lacks: :func:`adabelief`,
:func:`novograd`, :func:`lamb` and :func:`lars` (see :mod:`lux_torch.optim`).

Each follows optax's function of the same name: its defaults, its composition of
primitives and its semantics (where optax and the paper differ, the docstring says so);
the tests check each against a reference written from the published rule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..tree import flatten, unflatten
from ._base import (
    GradientTransformation,
    LearningRate,
    State,
    Tree,
    check_lr,
    check_nonneg,
    check_shapes,
    flatten_checked,
)
from .torch_like import (
    Leaves,
    check_eps,
    check_moments,
    dtypes_of,
    ema,
    ema_of_squares,
    finish,
    moments_init,
    needs_ps,
    step_number,
    transformation,
    where,
)
from .transforms import (
    add_decayed_weights,
    chain,
    masked,
    scale_by_adam,
    scale_by_learning_rate,
    trace,
)

Mask = Tree | Callable[[Tree], Tree]


def _decay(weight_decay: float, mask: Mask | None, fn: str) -> GradientTransformation:
    """``add_decayed_weights(weight_decay)``, on the leaves ``mask`` selects (all if None)."""
    check_nonneg("weight_decay", weight_decay, fn)
    decay = add_decayed_weights(weight_decay)
    return decay if mask is None or weight_decay == 0.0 else masked(decay, mask)


# --------------------------------------------------------------------------- AdaBelief


def scale_by_belief(
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief's direction (Zhuang et al., 2020, "AdaBelief Optimizer: Adapting Stepsizes
    by the Belief in Observed Gradients", arXiv:2010.07468), as optax's ``scale_by_belief``.

    At update ``t``::

        m   = b1 * m + (1 - b1) * g
        s   = b2 * s + (1 - b2) * (g - m) ** 2 + eps_root
        m^  = m / (1 - b1 ** t)
              (nesterov: b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t))
        out = m^ / (sqrt(s / (1 - b2 ** t)) + eps)

    Arguments:
        betas: ``(b1, b2)`` in [0, 1).
        eps: added to the root of the bias-corrected ``s`` (>= 0).
        eps_root: added to ``s`` at every step (>= 0; the paper's algorithm has it, as
            ``eps``; it must be > 0 to differentiate through the update).
        nesterov: Nesterov momentum in the bias-corrected first moment.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree,
        "nu": tree}``: the number of updates done, ``m`` and ``s`` (like ``ps``).

    Example:
        >>> opt = chain(scale_by_belief(), scale_by_learning_rate(1e-3))
    """
    name = "scale_by_belief"
    b1, b2 = check_moments(betas, eps, name)
    check_nonneg("eps_root", eps_root, name)

    def init(ps: Tree) -> State:
        return moments_init(ps, "mu", "nu")

    def update(g: Leaves, s: State, p: Leaves | None) -> tuple[Leaves, State]:
        t = step_number(s["count"])
        bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
        mu = ema(s["mu"], g, b1)
        surprise = [x - m for x, m in zip(g, mu, strict=True)]
        nu = [v + eps_root for v in ema_of_squares(s["nu"], surprise, b2)]
        if nesterov:
            c_mom, c_grad = b1 / (1.0 - b1 ** (t + 1)), (1.0 - b1) / bc1
            mu_hat = [m * c_mom + x * c_grad for m, x in zip(mu, g, strict=True)]
        else:
            mu_hat = [m / bc1 for m in mu]
        out = [m / ((v / bc2).sqrt() + eps) for m, v in zip(mu_hat, nu, strict=True)]
        return finish(s, out, g, mu=mu, nu=nu)

    return transformation(name, init, update, ("mu", "nu"))


def adabelief(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    weight_decay: float = 0.0,
    weight_decay_mask: Mask | None = None,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief (Zhuang et al., 2020, arXiv:2010.07468), as optax's ``adabelief``:
    ``p -= lr * (scale_by_belief(g) + weight_decay * p)``.

    Defaults are optax's (``eps = eps_root = 1e-16``); the paper's are ``eps = 1e-8`` and
    ``eps_root = 0`` (its ``eps`` is added inside the running ``s``, i.e. ``eps_root``
    here). The decay is decoupled and scaled by the learning rate, as in optax and torch's
    AdamW.

    Arguments:
        lr: learning rate (float or schedule).
        betas: moment decay rates.
        eps: added to the root of ``s``.
        eps_root: added to ``s`` at every step.
        weight_decay: decoupled decay factor (>= 0).
        weight_decay_mask: which leaves to decay: a tree of bools like ``ps`` (or a prefix
            of it), or a callable ``ps -> tree`` (see :func:`masked`); None decays all.
        nesterov: Nesterov momentum.

    Returns:
        A :class:`GradientTransformation`: the :func:`chain` of ``scale_by_belief``,
        ``add_decayed_weights`` (in :func:`masked` when a mask is given) and
        ``scale_by_learning_rate``; its state is the tuple of theirs.

    Example:
        >>> opt = adabelief(1e-3, weight_decay=1e-4)
    """
    check_lr(lr, "adabelief")
    return chain(
        scale_by_belief(betas, eps, eps_root, nesterov),
        _decay(weight_decay, weight_decay_mask, "adabelief"),
        scale_by_learning_rate(lr),
    )


# ---------------------------------------------------------------------------- NovoGrad


def scale_by_novograd(
    betas: tuple[float, float] = (0.9, 0.25),
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """NovoGrad's direction (Ginsburg et al., 2019, "Stochastic Gradient Methods with
    Layer-wise Adaptive Moments for Training of Deep Networks", arXiv:1905.11286), as
    optax's ``scale_by_novograd``: a second moment per leaf (layer), not per element.

    At update ``t``, for each leaf with gradient ``g`` and parameter ``p``::

        v   = ||g||^2                            at t = 1
        v   = b2 * v + (1 - b2) * ||g||^2        after
        m   = b1 * m + g / (sqrt(v + eps_root) + eps) + weight_decay * p   (m starts at 0)
        out = m

    Arguments:
        betas: ``(b1, b2)`` in [0, 1).
        eps: added to the root of ``v`` (>= 0).
        eps_root: added to ``v`` inside the root (>= 0).
        weight_decay: decay factor added inside the momentum (>= 0); ``update`` then
            needs ``ps``.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "mu": tree,
        "nu": tree}``: the number of updates done, ``m`` (like ``ps``) and ``v`` (a 0-dim
        tensor per leaf, in the leaf's dtype).

    Example:
        >>> opt = chain(scale_by_novograd(), scale_by_learning_rate(1e-3))
    """
    name = "scale_by_novograd"
    b1, b2 = check_moments(betas, eps, name)
    check_nonneg("eps_root", eps_root, name)
    check_nonneg("weight_decay", weight_decay, name)

    def init(ps: Tree) -> State:
        nu = unflatten(flatten(ps)[1], [p.new_zeros(()) for p in flatten(ps)[0]])
        return {**moments_init(ps, "mu"), "nu": nu}

    def update(g: Leaves, s: State, p: Leaves | None) -> tuple[Leaves, State]:
        t = step_number(s["count"])
        # the first update starts v at ||g||^2; the first m is the first term (m starts at 0)
        keep = (
            (t > 1).to(torch.float64) * b2 if isinstance(t, torch.Tensor) else where(t > 1, b2, 0.0)
        )
        nu = [v * keep + (1.0 - keep) * (x * x).sum() for v, x in zip(s["nu"], g, strict=True)]
        nu = dtypes_of(nu, g)
        mu = [
            m * b1 + x / ((v + eps_root).sqrt() + eps)
            for m, x, v in zip(s["mu"], g, nu, strict=True)
        ]
        if p is not None:
            mu = [m + weight_decay * w for m, w in zip(mu, p, strict=True)]
        return finish(s, mu, g, mu=mu, nu=nu)

    # the updates are the new first moment itself: not fresh
    trees = ("mu", "nu")
    return transformation(name, init, update, trees, uses_ps=weight_decay != 0.0, fresh=False)


def novograd(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.25),
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """NovoGrad (Ginsburg et al., 2019, arXiv:1905.11286), as optax's ``novograd``:
    ``p -= lr * scale_by_novograd(g)``.

    Defaults are optax's (``betas = (0.9, 0.25)``, ``eps = 1e-6``); the paper's algorithm
    is the same, with the weight decay inside the momentum.

    Arguments:
        lr: learning rate (float or schedule).
        betas: decay rates of the momentum and of the per-leaf second moment.
        eps: added to the root of the second moment.
        eps_root: added to the second moment inside the root.
        weight_decay: decay factor (>= 0).

    Returns:
        A :class:`GradientTransformation`: the :func:`chain` of ``scale_by_novograd`` and
        ``scale_by_learning_rate``; its state is the tuple of theirs.

    Example:
        >>> opt = novograd(1e-2, weight_decay=1e-3)
    """
    check_lr(lr, "novograd")
    return chain(scale_by_novograd(betas, eps, eps_root, weight_decay), scale_by_learning_rate(lr))


# ---------------------------------------------------------------------- LAMB and LARS


def scale_by_trust_ratio(
    min_norm: float = 0.0, trust_coefficient: float = 1.0, eps: float = 0.0
) -> GradientTransformation:
    """Scale each leaf's update by its trust ratio (You et al., 2017 and 2019), as optax's
    ``scale_by_trust_ratio``::

        out = u * trust_coefficient * max(||p||, min_norm) / (max(||u||, min_norm) + eps)

    per leaf (layer), with the ratio 1 where either norm is 0 (a zero-initialised bias
    would otherwise never move).

    Arguments:
        min_norm: lower bound of both norms (>= 0).
        trust_coefficient: multiplies the ratio (>= 0).
        eps: added to the update's norm (>= 0).

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``); ``update`` needs ``ps``.

    Example:
        >>> opt = chain(scale_by_adam(), scale_by_trust_ratio(), scale_by_learning_rate(1e-3))
    """
    name = "scale_by_trust_ratio"
    check_nonneg("min_norm", min_norm, name)
    check_nonneg("trust_coefficient", trust_coefficient, name)
    check_eps(eps, name)

    def init(ps: Tree) -> State:
        return ()

    def scaled(u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        p_norm = torch.linalg.vector_norm(p).clamp(min=min_norm)
        u_norm = torch.linalg.vector_norm(u).clamp(min=min_norm)
        ratio = trust_coefficient * p_norm / (u_norm + eps)
        return u * torch.where((p_norm == 0) | (u_norm == 0), torch.ones_like(ratio), ratio)

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        needs_ps(name, ps)
        u, spec = flatten_checked(grads, ps, f"grads (to {name})")
        p = flatten(ps)[0]
        check_shapes("grads", u, p, spec)
        return unflatten(spec, [scaled(a, b) for a, b in zip(u, p, strict=True)]), state

    return GradientTransformation(init, update)


def lamb(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    """LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning: Training BERT in
    76 minutes", arXiv:1904.00962), as optax's ``lamb``. Per leaf (layer)::

        r   = adam_direction(g) + weight_decay * p        (bias-corrected, as Adam)
        p  -= lr * ||p|| / ||r|| * r                       (ratio 1 where a norm is 0)

    Defaults are optax's. The paper's trust ratio is ``phi(||p||) / ||r||`` with a scaling
    function ``phi`` (optax and here: the identity); the ratio uses the decayed update.

    Arguments:
        lr: learning rate (float or schedule).
        betas: Adam's moment decay rates.
        eps: Adam's ``eps``.
        weight_decay: decoupled decay factor inside the trust ratio (>= 0).
        mask: which leaves to decay (exclude biases and norm scales): a tree of bools like
            ``ps`` (or a prefix of it) or a callable ``ps -> tree`` (see :func:`masked`);
            None decays all.

    Returns:
        A :class:`GradientTransformation`: the :func:`chain` of ``scale_by_adam``,
        ``add_decayed_weights`` (in :func:`masked` when a mask is given),
        ``scale_by_trust_ratio`` and ``scale_by_learning_rate``; its state is the tuple of
        theirs; ``update`` needs ``ps``.

    Example:
        >>> opt = lamb(1e-3, weight_decay=1e-2, mask=lambda ps: lux.tree.map(
        ...     lambda p: p.ndim > 1, ps))
    """
    check_lr(lr, "lamb")
    return chain(
        scale_by_adam(betas, eps),
        _decay(weight_decay, mask, "lamb"),
        scale_by_trust_ratio(),
        scale_by_learning_rate(lr),
    )


def lars(
    lr: LearningRate,
    weight_decay: float = 0.0,
    weight_decay_mask: Mask | None = None,
    trust_coefficient: float = 1e-3,
    eps: float = 0.0,
    trust_ratio_mask: Mask | None = None,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    """LARS (You et al., 2017, "Large Batch Training of Convolutional Networks",
    arXiv:1708.03888), as optax's ``lars``. Per leaf (layer)::

        d   = g + weight_decay * p
        d   = trust_coefficient * ||p|| / (||d|| + eps) * d   (ratio 1 where a norm is 0)
        buf = momentum * buf - lr * d                         (or Nesterov)
        p  += buf

    Defaults are optax's. The paper's local learning rate is ``trust_coefficient * ||p|| /
    (||g|| + weight_decay * ||p||)``; optax (and this) divide by the norm of the decayed
    gradient ``||g + weight_decay * p||`` instead, and accumulate the learning-rate-scaled
    update in the momentum (as the paper does).

    Arguments:
        lr: learning rate (float or schedule).
        weight_decay: L2 decay added to the gradients (>= 0).
        weight_decay_mask: which leaves to decay (see :func:`masked`); None: all.
        trust_coefficient: the trust coefficient ``eta`` (>= 0).
        eps: added to the norm in the trust ratio (>= 0).
        trust_ratio_mask: which leaves get the trust ratio (exclude biases and norm
            scales); None: all.
        momentum: momentum in [0, 1).
        nesterov: Nesterov momentum.

    Returns:
        A :class:`GradientTransformation`: the :func:`chain` of ``add_decayed_weights``,
        ``scale_by_trust_ratio`` (each in :func:`masked` when given a mask),
        ``scale_by_learning_rate`` and ``trace``; its state is the tuple of theirs;
        ``update`` needs ``ps``.

    Example:
        >>> opt = lars(0.1, weight_decay=1e-4, trust_ratio_mask=lambda ps: lux.tree.map(
        ...     lambda p: p.ndim > 1, ps))
    """
    check_lr(lr, "lars")
    trust = scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps)
    return chain(
        _decay(weight_decay, weight_decay_mask, "lars"),
        trust if trust_ratio_mask is None else masked(trust, trust_ratio_mask),
        scale_by_learning_rate(lr),
        trace(momentum, nesterov),
    )
