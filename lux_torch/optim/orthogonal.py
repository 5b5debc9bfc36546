"""Muon: momentum orthogonalised by Newton-Schulz, for the matrix parameters of hidden
layers, with a fallback optimizer for the rest (see :mod:`lux_torch.optim`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

from ..tree import leaves, paths
from ..tree import map as tree_map
from ._base import GradientTransformation, LearningRate, State, Tree, zeros_like_tree
from ._checks import check_beta, check_int, check_lr, check_nonneg, checked_leaves
from .aliases import adamw
from .transforms import add_decayed_weights, chain, partition, scale_by_learning_rate

NS_COEFFS = (3.4445, -4.7750, 2.0315)
AdjustLr = Literal["original", "match_rms_adamw"]


def newton_schulz(
    x: torch.Tensor,
    steps: int = 5,
    coeffs: tuple[float, float, float] = NS_COEFFS,
    eps: float = 1e-7,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Approximately orthogonalise a matrix: ``U S' V^T`` for ``x = U S V^T``, ``S' ~ 1``.

    The quintic Newton-Schulz iteration of Jordan et al. (2024): ``X = x / max(||x||_F,
    eps)`` (transposed so that it is wide), then ``steps`` times ``A = X X^T``, ``X = a X +
    (b A + c A A) X``. With the default coefficients the singular values end in roughly
    ``[0.68, 1.13]``, not at 1: steeper at 0, fewer steps (see the reference).

    Arguments:
        x: a 2-D tensor.
        steps: number of iterations (>= 1).
        coeffs: ``(a, b, c)``.
        eps: lower bound of the norm ``x`` is divided by.
        dtype: compute in this dtype (``torch.bfloat16`` as ``torch.optim.Muon`` and the
            reference do); ``None``: ``x``'s dtype. The result has ``x``'s dtype.

    Returns:
        A tensor of ``x``'s shape and dtype.

    Example:
        >>> o = newton_schulz(torch.randn(4, 8, dtype=torch.float64))
        >>> s = torch.linalg.svdvals(o); bool(s.min() > 0.6 and s.max() < 1.2)
        True
    """
    if x.ndim != 2:
        raise ValueError(
            f"lux_torch.optim.newton_schulz: x must be 2-D, got shape {tuple(x.shape)}"
        )
    a, b, c = coeffs
    wide = x.shape[0] <= x.shape[1]
    o = x.to(dtype) if dtype is not None else x
    o = o if wide else o.T
    o = o / o.norm().clamp(min=eps)
    for _ in range(steps):
        gram = o @ o.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        o = torch.addmm(o, poly, o, beta=a)
    return (o if wide else o.T).to(x.dtype)


def _lr_factor(shape: torch.Size, adjust_lr_fn: AdjustLr) -> float:
    rows, cols = shape[0], math.prod(shape[1:])
    if adjust_lr_fn == "original":
        return math.sqrt(max(1.0, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols))


def scale_by_muon(
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coeffs: tuple[float, float, float] = NS_COEFFS,
    ns_steps: int = 5,
    eps: float = 1e-7,
    adjust_lr_fn: AdjustLr = "original",
    ns_dtype: torch.dtype | None = None,
    reshape_conv: bool = False,
) -> GradientTransformation:
    """Muon's direction: momentum, then Newton-Schulz orthogonalisation, then a shape factor.

    For every leaf (a matrix ``(rows, cols)``, e.g. a ``Linear`` weight ``(out, in)``)::

        buf = momentum * buf + (1 - momentum) * g
        m   = (1 - momentum) * g + momentum * buf     (nesterov; else m = buf)
        u   = k(rows, cols) * newton_schulz(m)
        k   = sqrt(max(1, rows / cols))               adjust_lr_fn="original" (Jordan)
        k   = 0.2 * sqrt(max(rows, cols))             adjust_lr_fn="match_rms_adamw"

    as ``torch.optim.Muon`` and Keller Jordan's reference (an exponential moving average
    without bias correction; optax's ``scale_by_muon`` bias-corrects and scales separately).
    "match_rms_adamw" (Liu et al., 2025, arXiv:2502.16982) gives the update AdamW's RMS so
    AdamW's learning rate and weight decay carry over.

    Reference: Jordan et al., "Muon: An optimizer for hidden layers in neural networks",
    2024, https://kellerjordan.github.io/posts/muon/.

    Arguments:
        momentum: the momentum's decay in [0, 1).
        nesterov: use the Nesterov form ``m`` above.
        ns_coeffs: the iteration's ``(a, b, c)``, see :func:`newton_schulz`.
        ns_steps: Newton-Schulz iterations (>= 1).
        eps: lower bound of the norm in :func:`newton_schulz`.
        adjust_lr_fn: the shape factor ``k``, "original" or "match_rms_adamw".
        ns_dtype: dtype of the iteration (``torch.bfloat16``: torch's and the reference's
            choice; ``None``: the gradient's dtype).
        reshape_conv: treat a leaf of 3 or more dims (a conv weight ``(out, in, *k)``) as
            the matrix ``(out, in * prod(k))``; otherwise such leaves are refused.

    Returns:
        A :class:`GradientTransformation` with state ``{"mu": tree}``: the momentum buffer,
        like ``ps``. Leaves must be matrices (see ``reshape_conv``); :func:`muon` routes the
        others to its fallback.

    Example:
        >>> opt = chain(scale_by_muon(), scale_by_learning_rate(0.02))
    """
    fn = "scale_by_muon"
    check_beta("momentum", momentum, fn)
    check_int("ns_steps", ns_steps, fn, 1)
    check_nonneg("eps", eps, fn)
    if nesterov and momentum == 0.0:
        raise ValueError(f"lux_torch.optim.{fn}: nesterov needs momentum > 0")
    if adjust_lr_fn not in ("original", "match_rms_adamw"):
        raise ValueError(
            f"lux_torch.optim.{fn}: adjust_lr_fn must be 'original' or 'match_rms_adamw', "
            f"got {adjust_lr_fn!r}"
        )
    if len(ns_coeffs) != 3:
        raise ValueError(f"lux_torch.optim.{fn}: ns_coeffs must be (a, b, c), got {ns_coeffs}")

    def check_leaves(ps: Tree) -> None:
        for i, leaf in enumerate(leaves(ps)):
            if leaf.ndim < 2 or (leaf.ndim > 2 and not reshape_conv):
                path = paths(ps)[i]
                hint = "" if leaf.ndim < 2 else "; pass reshape_conv=True for conv weights"
                raise ValueError(
                    f"lux_torch.optim.{fn}: {path!r} has shape {tuple(leaf.shape)}; Muon "
                    f"orthogonalises matrices only (use muon(), which gives the other "
                    f"parameters to a fallback optimizer{hint})"
                )

    def init(ps: Tree) -> State:
        check_leaves(ps)
        return {"mu": zeros_like_tree(ps)}

    def direction(g: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
        m = torch.lerp(g, buf, momentum) if nesterov else buf
        o = newton_schulz(m.reshape(m.shape[0], -1), ns_steps, ns_coeffs, eps, ns_dtype)
        return o.reshape(g.shape) * _lr_factor(g.shape, adjust_lr_fn)

    def update(grads: Tree, state: State, ps: Tree = None) -> tuple[Tree, State]:
        checked_leaves(grads, state["mu"] if ps is None else ps)
        check_leaves(grads)
        mu = tree_map(lambda g, buf: torch.lerp(buf, g, 1.0 - momentum), grads, state["mu"])
        return tree_map(direction, grads, mu), {"mu": mu}

    return GradientTransformation(init, update)


MuonMask = Tree | Callable[[Tree], Tree]


def muon(
    lr: LearningRate = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coeffs: tuple[float, float, float] = NS_COEFFS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: AdjustLr = "original",
    ns_dtype: torch.dtype | None = None,
    reshape_conv: bool = False,
    mask: MuonMask | None = None,
    fallback: GradientTransformation | None = None,
) -> GradientTransformation:
    """Muon for the matrices, ``fallback`` (AdamW) for the other parameters.

    For the Muon leaves ``p -= lr * (scale_by_muon(g) + weight_decay * p)``, i.e.
    ``torch.optim.Muon`` (decoupled weight decay ``p *= 1 - lr * weight_decay`` and the
    adjusted step ``lr * k``); the defaults are torch's. With ``ns_dtype=torch.bfloat16`` it
    equals ``torch.optim.Muon`` step for step; the default computes the iteration in the
    parameter's dtype (more exact; slower on accelerators).

    The arguments come in ``torch.optim.Muon``'s order (``lr, weight_decay, momentum,
    nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn``), then lux_torch's.

    Which leaves get Muon: ``mask`` (a tree of bools like ``ps``, a prefix of one, or a
    callable ``ps -> tree``), by default every 2-D leaf (and conv weights with
    ``reshape_conv``). Biases, norms and — by the reference's advice — embeddings and the
    output layer should go to the fallback: give a mask for those.

    Reference: Jordan et al., "Muon: An optimizer for hidden layers in neural networks",
    2024, https://kellerjordan.github.io/posts/muon/; Liu et al., "Muon is Scalable for LLM
    Training", 2025, arXiv:2502.16982 (``adjust_lr_fn="match_rms_adamw"``).

    Arguments:
        lr: learning rate (float or schedule) of the Muon part; also scales the decay.
        weight_decay: decoupled weight decay of the Muon leaves.
        momentum, nesterov, ns_coeffs, eps, ns_steps, adjust_lr_fn, ns_dtype, reshape_conv:
            see :func:`scale_by_muon`.
        mask: the Muon leaves (see above).
        fallback: the optimizer of the other leaves; ``None``: ``adamw(lr,
            weight_decay=0.0)`` (optax's default).

    Returns:
        A :class:`GradientTransformation` with state ``{"fallback": fallback's state,
        "muon": ({"mu": tree}, (), {"count"})}``: the states of :func:`partition`'s two parts
        (the Muon part is ``chain(scale_by_muon, add_decayed_weights,
        scale_by_learning_rate)`` on the Muon leaves).

    Example:
        >>> opt = muon(0.02, weight_decay=0.0, mask=lambda ps: {"hidden": True, "head": False})
    """
    check_lr(lr, "muon")
    muon_part = chain(
        scale_by_muon(
            momentum, nesterov, ns_coeffs, ns_steps, eps, adjust_lr_fn, ns_dtype, reshape_conv
        ),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(lr),
    )
    other = adamw(lr, weight_decay=0.0) if fallback is None else fallback

    def by_shape(p: torch.Tensor) -> str:
        return "muon" if p.ndim == 2 or (p.ndim > 2 and reshape_conv) else "fallback"

    def labels(ps: Tree) -> Tree:
        if mask is None:
            return tree_map(by_shape, ps)
        chosen = mask(ps) if callable(mask) else mask
        return tree_map(lambda m: _label(m), chosen)

    return partition({"muon": muon_part, "fallback": other}, labels)


def _label(m: object) -> str:
    if not isinstance(m, bool):
        raise ValueError(f"lux_torch.optim.muon: mask values must be Python bools, got {m!r}")
    return "muon" if m else "fallback"
