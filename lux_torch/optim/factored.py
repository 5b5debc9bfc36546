"""Adafactor: factored second moments (see :mod:`lux_torch.optim`), with optax's
semantics and the block-RMS transforms it is made of."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..tree import map as tree_map
from ..tree import paths, unflatten
from ._base import (
    GradientTransformation,
    LearningRate,
    Scalar,
    State,
    Tree,
    flatten_checked,
    inc,
    new_count,
)
from ._checks import check_beta, check_int, check_lr, check_nonneg, check_positive, checked_leaves
from .transforms import add_decayed_weights, chain, scale, scale_by_learning_rate, trace

KEYS = ("v_row", "v_col", "v")
DecayRateFn = Callable[[torch.Tensor, float], Scalar]


def _decay_rate_pow(t: torch.Tensor, exponent: float) -> torch.Tensor:
    """``1 - t ** -exponent`` for the 1-based step ``t``: Adafactor's second-moment decay."""
    return 1.0 - t.to(torch.float64) ** (-exponent)


def factored_dims(
    shape: torch.Size, factored: bool, min_dim_size_to_factor: int
) -> tuple[int, int] | None:
    """The two largest dims ``(d1, d0)`` (``d0`` the largest) of a leaf whose second moment
    is factored, or ``None``: vectors, scalars, and leaves whose second-largest dim is below
    ``min_dim_size_to_factor`` keep a full second moment (optax's rule)."""
    if not factored or len(shape) < 2:
        return None
    order = sorted(range(len(shape)), key=lambda i: shape[i])
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return order[-2], order[-1]


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    eps: float = 1e-30,
    decay_rate_fn: DecayRateFn | None = None,
) -> GradientTransformation:
    """Scale by a factored estimate of the gradients' RMS (Adafactor's second moment).

    With ``t = count + 1 - step_offset`` and ``beta_t = 1 - t ** -decay_rate``, for a leaf
    whose two largest dims are ``d1 <= d0`` (see :func:`factored_dims`) and ``G = g^2 + eps``::

        R = beta_t R + (1 - beta_t) mean(G, d0)       (a row statistic, d0 removed)
        C = beta_t C + (1 - beta_t) mean(G, d1)       (a column statistic, d1 removed)
        u = g / sqrt(R C / mean(R))                   (R, C broadcast back)

    and for the other leaves ``V = beta_t V + (1 - beta_t) G``, ``u = g / sqrt(V)``. The
    memory is ``rows + cols`` instead of ``rows * cols`` per matrix. optax's
    ``scale_by_factored_rms``.

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", 2018, arXiv:1804.04235.

    Arguments:
        factored: factor the second moment of matrices (else every leaf keeps a full one).
        decay_rate: the exponent of ``beta_t`` (> 0; the paper's 0.8).
        step_offset: subtracted from the step (fine-tuning restarts the schedule).
        min_dim_size_to_factor: factor only where the second-largest dim is this large.
        eps: added to the squared gradients (> 0).
        decay_rate_fn: ``f(t, decay_rate) -> beta_t`` instead of ``1 - t ** -decay_rate``
            (e.g. capped, as in Zhai et al., 2021); ``t`` is the 1-based step, an int64
            tensor.

    Returns:
        A :class:`GradientTransformation` with state ``{"count": int64 (), "v_row": tree,
        "v_col": tree, "v": tree}``: per leaf, ``v_row``/``v_col`` the factored statistics
        (the leaf's shape without ``d0`` / ``d1``) and ``v`` a zero ``(1,)``, or ``v`` the
        full second moment (the leaf's shape) and zero ``(1,)`` factors. ``update`` needs
        ``ps``.

    Example:
        >>> opt = chain(scale_by_factored_rms(), scale_by_learning_rate(1e-2))
    """
    fn = "scale_by_factored_rms"
    check_positive("decay_rate", decay_rate, fn)
    check_positive("eps", eps, fn)
    check_int("min_dim_size_to_factor", min_dim_size_to_factor, fn, 1)
    check_int("step_offset", step_offset, fn, 0)
    beta_of = _decay_rate_pow if decay_rate_fn is None else decay_rate_fn

    def dims(p: torch.Tensor) -> tuple[int, int] | None:
        return factored_dims(p.shape, factored, min_dim_size_to_factor)

    def shapes(p: torch.Tensor) -> tuple[list[int], list[int], list[int]]:
        """The shapes of ``v_row``, ``v_col`` and ``v`` for a leaf like ``p``."""
        d, shape = dims(p), list(p.shape)
        if d is None:
            return [1], [1], shape
        return (
            [n for i, n in enumerate(shape) if i != d[1]],
            [n for i, n in enumerate(shape) if i != d[0]],
            [1],
        )

    def init(ps: Tree) -> State:
        def zeros(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda p: p.new_zeros(shapes(p)[k])

        return {"count": new_count(), **{key: tree_map(zeros(k), ps) for k, key in enumerate(KEYS)}}

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        if ps is None:
            raise ValueError(f"lux_torch.optim.{fn}: update needs ps")
        beta64 = torch.as_tensor(beta_of(state["count"] + 1 - step_offset, decay_rate))
        betas: dict[torch.dtype, torch.Tensor] = {}

        def one(
            g: torch.Tensor, r: torch.Tensor, c: torch.Tensor, v: torch.Tensor
        ) -> tuple[torch.Tensor, ...]:
            g2 = (g * g).add_(eps)  # a temporary of this update: in place
            d = dims(g)
            beta = betas.get(g.dtype)
            if beta is None:
                beta = betas[g.dtype] = beta64.to(g.dtype)
            if d is None:
                v = torch.lerp(g2, v, beta)
                return g * v.rsqrt(), r, c, v
            d1, d0 = d
            r = torch.lerp(g2.mean(d0), r, beta)
            c = torch.lerp(g2.mean(d1), c, beta)
            row_factor = (r / r.mean(d1 - 1 if d1 > d0 else d1, keepdim=True)).rsqrt()
            return g * row_factor.unsqueeze(d0) * c.rsqrt().unsqueeze(d1), r, c, v

        g, _, spec = checked_leaves(grads, ps)
        stats = [flatten_checked(state[k], ps, "state")[0] for k in KEYS]
        for i, leaf in enumerate(g):  # a state made for other parameters would broadcast
            need = shapes(leaf)
            for k, key in enumerate(KEYS):
                if list(stats[k][i].shape) != need[k]:
                    raise ValueError(
                        f"lux_torch.optim.{fn}: state '{key}.{paths(ps)[i]}' has shape "
                        f"{tuple(stats[k][i].shape)}, but these gradients need "
                        f"{tuple(need[k])}: was it made by init() for other parameters?"
                    )
        out = [one(*leaf) for leaf in zip(g, *stats, strict=True)]
        u, r, c, v = (unflatten(spec, list(x)) for x in zip(*out, strict=True))
        new = {"count": inc(state["count"]), "v_row": r, "v_col": c, "v": v}
        return u, new

    return GradientTransformation(init, update)


def _rms(x: torch.Tensor) -> torch.Tensor:
    norm: torch.Tensor = torch.linalg.vector_norm(x)
    return norm / math.sqrt(max(x.numel(), 1))


def clip_by_block_rms(threshold: float) -> GradientTransformation:
    """Divide each leaf's update by ``max(1, rms(u) / threshold)``: its RMS is at most
    ``threshold`` (Adafactor's update clipping, ``d`` in the paper; optax's
    ``clip_by_block_rms``).

    Arguments:
        threshold: the largest RMS of a leaf's update (> 0).

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``).

    Example:
        >>> opt = chain(clip_by_block_rms(1.0), scale(-0.1))
    """
    check_positive("threshold", threshold, "clip_by_block_rms")

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        if ps is not None:
            checked_leaves(grads, ps)
        return tree_map(lambda u: u / torch.clamp(_rms(u) / threshold, min=1.0), grads), state

    return GradientTransformation(lambda ps: (), update)


def scale_by_param_block_rms(min_scale: float = 1e-3) -> GradientTransformation:
    """Multiply each leaf's update by ``max(rms(p), min_scale)``: steps relative to the
    parameter's own scale (Adafactor's ``multiply_by_parameter_scale``, ``epsilon_2`` in the
    paper; optax's ``scale_by_param_block_rms``).

    Arguments:
        min_scale: the smallest scale (>= 0), so parameters at zero still move.

    Returns:
        A stateless :class:`GradientTransformation` (state ``()``); ``update`` needs ``ps``.

    Example:
        >>> opt = chain(scale_by_param_block_rms(), scale(-1e-2))
    """
    check_nonneg("min_scale", min_scale, "scale_by_param_block_rms")

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        if ps is None:
            raise ValueError("lux_torch.optim.scale_by_param_block_rms: update needs ps")
        checked_leaves(grads, ps)
        return tree_map(lambda u, p: u * torch.clamp(_rms(p), min=min_scale), grads, ps), state

    return GradientTransformation(lambda ps: (), update)


def relative_step_size(lr: LearningRate = 1e-2) -> Callable[[torch.Tensor], torch.Tensor]:
    """Adafactor's relative step ``rho_t = min(lr, 1 / sqrt(t))`` (``t = count + 1``) as a
    schedule; with :func:`scale_by_param_block_rms` the step is ``rho_t * max(rms(p),
    eps_2)``, the paper's (and ``torch.optim.Adafactor``'s) step size."""
    check_lr(lr, "relative_step_size")

    def schedule(count: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(count).to(torch.float64) + 1.0
        base = lr(count) if callable(lr) else lr
        return torch.minimum(torch.rsqrt(t), torch.as_tensor(base, dtype=torch.float64))

    return schedule


def adafactor(
    lr: LearningRate | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    weight_decay_rate: float | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    relative_step: bool = False,
    min_scale: float = 1e-3,
) -> GradientTransformation:
    """Adafactor (Shazeer & Stern, 2018, arXiv:1804.04235), as optax's ``adafactor``.

    ``u = scale_by_factored_rms(g)`` (:func:`scale_by_factored_rms`), clipped to block RMS
    ``clipping_threshold`` (:func:`clip_by_block_rms`), times the step size ``lr`` (a float,
    a schedule, ``min(lr, 1/sqrt(t))`` with ``relative_step``, or 1 when ``lr`` is None),
    times ``max(rms(p), min_scale)`` when ``multiply_by_parameter_scale``; then optionally
    an exponential moving average ``m = momentum * m + (1 - momentum) * u`` (no debiasing),
    plus ``weight_decay_rate * p`` (not scaled by ``lr``, as in optax); ``p -= u``.

    With ``lr=1e-2, relative_step=True, min_dim_size_to_factor=1`` it is
    ``torch.optim.Adafactor(lr=1e-2)`` for matrices and vectors (torch factors the last two
    dims of larger leaves, optax the two largest; torch's weight decay is scaled by ``lr``).

    Arguments:
        lr: learning rate or schedule; ``None``: 1 (optax's default, the parameter scale
            sets the step).
        min_dim_size_to_factor, decay_rate, eps, factored: see
            :func:`scale_by_factored_rms`.
        decay_offset: its ``step_offset``.
        multiply_by_parameter_scale: scale by the parameters' RMS
            (:func:`scale_by_param_block_rms` with ``min_scale``).
        clipping_threshold: the block-RMS clip ``d`` (>= 1 in the paper), or ``None``.
        momentum: the moving average's decay in [0, 1), or ``None`` for none.
        weight_decay_rate: decay added to the update, or ``None``.
        relative_step: the step is ``min(lr, 1/sqrt(t))`` (:func:`relative_step_size`).
        min_scale: the smallest parameter scale.

    Returns:
        A :class:`GradientTransformation`, a :func:`chain` whose first state is
        ``{"count", "v_row", "v_col", "v"}`` (:func:`scale_by_factored_rms`), then ``{"count"}``
        of the learning rate (when ``lr`` is given) and ``{"buf"}`` of the momentum (when
        given; a tree like ``ps``); the clip, parameter scale and decay keep ``()``.

    Example:
        >>> opt = adafactor(1e-2, relative_step=True)
    """
    fn = "adafactor"
    if lr is not None:
        check_lr(lr, fn)
    if relative_step and lr is None:
        raise ValueError(f"lux_torch.optim.{fn}: relative_step needs lr (its upper bound)")
    if clipping_threshold is not None:
        check_positive("clipping_threshold", clipping_threshold, fn)
    if momentum is not None:
        check_beta("momentum", momentum, fn)
    if weight_decay_rate is not None:
        check_nonneg("weight_decay_rate", weight_decay_rate, fn)
    # optax: p -= ema(lr * param_scale * clip(u)) + weight_decay_rate * p. Here the learning
    # rate comes first and gives the descent sign at once (one pass less per sign flip);
    # the parameter scale and the moving average are linear, so only the decay, which
    # adds +weight_decay_rate * p, needs the sign turned around it.
    parts = [scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)]
    if clipping_threshold is not None:
        parts.append(clip_by_block_rms(clipping_threshold))
    if lr is None:
        parts.append(scale(-1.0))
    else:
        parts.append(scale_by_learning_rate(relative_step_size(lr) if relative_step else lr))
    if multiply_by_parameter_scale:
        parts.append(scale_by_param_block_rms(min_scale))
    if momentum is not None:  # optax's ema(momentum, debias=False) = (1 - momentum) * trace
        parts += [trace(momentum), scale(1.0 - momentum)]
    if weight_decay_rate is not None:
        parts += [scale(-1.0), add_decayed_weights(weight_decay_rate), scale(-1.0)]
    return chain(*parts)
