"""Margin (hinge-type) losses: hinge, soft margin, hinge embedding, margin ranking, cosine
embedding, multi-class and multi-label margin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F

from ._base import Loss, LossInput, Tensor, config_tensor, loss_dataclass, reduce_elementwise

__all__ = [
    "CosineEmbeddingLoss",
    "HingeEmbeddingLoss",
    "HingeLoss",
    "MarginRankingLoss",
    "MultiLabelMarginLoss",
    "MultiMarginLoss",
    "SoftMarginLoss",
]


@loss_dataclass
class HingeLoss(Loss):
    """Hinge loss ``max(0, 1 - pred * target)`` for labels in ``{-1, 1}`` (Lux.jl's
    ``HingeLoss``).

    Arguments:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: scores; ``target``: labels ``-1``/``1`` of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> HingeLoss()(torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.0]))
        tensor(0.2500)
    """

    same_shape: ClassVar[bool] = True

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return reduce_elementwise(F.relu(1 - pred * target), self.reduction)


@loss_dataclass
class SoftMarginLoss(Loss):
    """Two-class logistic loss ``log(1 + exp(-target * pred))`` (``F.soft_margin_loss``).

    Arguments:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: scores; ``target``: labels ``-1``/``1`` of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> SoftMarginLoss()(torch.zeros(2), torch.tensor([-1.0, 1.0]))
        tensor(0.6931)
    """

    same_shape: ClassVar[bool] = True

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.soft_margin_loss(pred, target, reduction=self.reduction)


@loss_dataclass
class HingeEmbeddingLoss(Loss):
    """``pred`` for ``target = 1`` and ``max(0, margin - pred)`` for ``target = -1``, e.g. on
    distances between pairs (``F.hinge_embedding_loss``).

    Arguments:
        margin: default 1.0.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: scores or distances; ``target``: labels ``-1``/``1`` of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> HingeEmbeddingLoss()(torch.tensor([0.3, 0.3]), torch.tensor([1.0, -1.0]))
        tensor(0.5000)
    """

    margin: float = 1.0
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("margin")

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.hinge_embedding_loss(pred, target, margin=self.margin, reduction=self.reduction)


@loss_dataclass
class MarginRankingLoss(Loss):
    """Ranking of two scores: ``max(0, -target * (x1 - x2) + margin)`` for ``target = 1``
    (``x1`` should rank higher) or ``-1`` (``F.margin_ranking_loss``).

    Arguments:
        margin: the required gap (default 0.0).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: the pair ``(x1, x2)``; ``target``: ``1``/``-1``; all three of one shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> MarginRankingLoss(margin=1.0)((torch.tensor([2.0]), torch.tensor([1.5])), torch.ones(1))
        tensor(0.5000)
    """

    margin: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("margin")

    def compute(self, pred: LossInput, target: Tensor) -> Tensor:
        x1, x2 = self._pair(pred, "(x1, x2)")
        self._same_shapes(x1=x1, x2=x2, target=target)
        return F.margin_ranking_loss(x1, x2, target, margin=self.margin, reduction=self.reduction)


@loss_dataclass
class CosineEmbeddingLoss(Loss):
    """Whether two inputs are similar (``target = 1``: ``1 - cos(x1, x2)``) or dissimilar
    (``target = -1``: ``max(0, cos(x1, x2) - margin)``) (``F.cosine_embedding_loss``).

    Arguments:
        margin: in ``[-1, 1]``, ``0`` to ``0.5`` suggested (default 0.0).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: the pair ``(x1, x2)`` of shape ``(N, D)`` or ``(D,)`` each; ``target``:
        ``1``/``-1`` of shape ``(N,)`` or ``()``.

    Returns:
        The reduced loss, or the per-sample loss of shape ``(N,)`` for ``"none"``.

    Example:
        >>> x = torch.tensor([[1.0, 0.0]])
        >>> CosineEmbeddingLoss()((x, x), torch.tensor([1.0]))
        tensor(0.)
    """

    margin: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("margin", minimum=-1.0)
        if self.margin > 1.0:
            self._fail(f"margin must be in [-1, 1], got {self.margin}")

    def compute(self, pred: LossInput, target: Tensor) -> Tensor:
        x1, x2 = self._pair(pred, "(x1, x2)")
        self._same_shapes(x1=x1, x2=x2)
        if target.shape != x1.shape[:-1]:
            self._fail(
                f"target shape {tuple(target.shape)} must be x1's shape without its last "
                f"dimension, {tuple(x1.shape[:-1])}"
            )
        return F.cosine_embedding_loss(x1, x2, target, margin=self.margin, reduction=self.reduction)


@loss_dataclass
class MultiMarginLoss(Loss):
    """Multi-class hinge loss: ``sum_{i != y} max(0, margin - x[y] + x[i])^p / C`` per
    sample (``F.multi_margin_loss``).

    Arguments:
        p: ``1`` (default) or ``2``.
        margin: default 1.0.
        weight: optional per-class weights (a tuple/list of ``C`` floats).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: scores of shape ``(N, C)`` or ``(C,)``; ``target``: int64 class indices
        of shape ``(N,)`` or ``()``.

    Returns:
        The reduced loss, or the per-sample loss of shape ``(N,)`` for ``"none"``.

    Example:
        >>> MultiMarginLoss()(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([3]))
        tensor(0.3250)
    """

    p: int = 1
    margin: float = 1.0
    weight: Sequence[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._integer("p")
        if self.p not in (1, 2):
            self._fail(f"p must be 1 or 2, got {self.p}")
        self._number("margin")
        self._floats("weight")

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.multi_margin_loss(
            pred,
            target,
            p=self.p,
            margin=self.margin,
            weight=config_tensor(self.weight, pred),
            reduction=self.reduction,
        )


@loss_dataclass
class MultiLabelMarginLoss(Loss):
    """Multi-label hinge loss: ``sum_{j, i} max(0, 1 - (x[y[j]] - x[i])) / C`` over target
    classes ``y[j]`` and non-target classes ``i`` (``F.multilabel_margin_loss``).

    Arguments:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: scores of shape ``(N, C)`` or ``(C,)``; ``target``: int64 class indices
        of the same shape, the target classes first, then ``-1`` padding.

    Returns:
        The reduced loss, or the per-sample loss of shape ``(N,)`` for ``"none"``.

    Example:
        >>> MultiLabelMarginLoss()(torch.tensor([[0.1, 0.2, 0.4, 0.8]]),
        ...                        torch.tensor([[3, 0, -1, 1]]))
        tensor(0.8500)
    """

    same_shape: ClassVar[bool] = True

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.multilabel_margin_loss(pred, target, reduction=self.reduction)
