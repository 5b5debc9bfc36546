"""Classification losses on logits, log-probabilities or probabilities: cross entropy,
NLL, binary cross entropy, KL divergence, focal, Dice, multi-label soft margin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from ._base import Loss, Tensor, config_tensor, loss_dataclass, reduce_elementwise

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "KLDivLoss",
    "MultiLabelSoftMarginLoss",
    "NLLLoss",
]


@loss_dataclass
class CrossEntropyLoss(Loss):
    """Cross entropy of logits against class indices or class probabilities
    (``F.cross_entropy``).

    Arguments:
        weight: optional per-class weights (a tuple/list of ``C`` floats).
        ignore_index: class index whose samples are ignored (default -100).
        label_smoothing: amount of smoothing in ``[0, 1]`` (default 0.0).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: logits of shape ``(N, C, *)`` or ``(C,)``; ``target``: int64 class indices
        of shape ``(N, *)`` or probabilities shaped like ``pred``.

    Returns:
        The reduced loss, or the per-sample loss of shape ``(N, *)`` for ``"none"``.

    Example:
        >>> CrossEntropyLoss()(torch.zeros(2, 4), torch.tensor([0, 3]))
        tensor(1.3863)
    """

    weight: Sequence[float] | None = None
    ignore_index: int = -100
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._floats("weight")
        self._integer("ignore_index")
        self._number("label_smoothing", minimum=0.0)
        if self.label_smoothing > 1.0:
            self._fail(f"label_smoothing must be in [0, 1], got {self.label_smoothing}")

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(
            pred,
            target,
            weight=config_tensor(self.weight, pred),
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


@loss_dataclass
class NLLLoss(Loss):
    """Negative log-likelihood of log-probabilities against class indices (``F.nll_loss``).

    Arguments:
        weight: optional per-class weights (a tuple/list of ``C`` floats).
        ignore_index: class index whose samples are ignored (default -100).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: log-probabilities of shape ``(N, C, *)`` or ``(C,)``; ``target``: int64
        class indices of shape ``(N, *)``.

    Returns:
        The reduced loss, or the per-sample loss of shape ``(N, *)`` for ``"none"``.

    Example:
        >>> NLLLoss()(torch.zeros(2, 4).log_softmax(-1), torch.tensor([0, 3]))
        tensor(1.3863)
    """

    weight: Sequence[float] | None = None
    ignore_index: int = -100

    def __post_init__(self) -> None:
        super().__post_init__()
        self._floats("weight")
        self._integer("ignore_index")

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(
            pred,
            target,
            weight=config_tensor(self.weight, pred),
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


@loss_dataclass
class BCELoss(Loss):
    """Binary cross entropy of probabilities (``F.binary_cross_entropy``).

    Arguments:
        weight: optional rescaling weights: a float (torch's 0-d weight) or a tuple/list of
            floats broadcast against ``pred`` (e.g. one per entry of the last dimension).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: probabilities in ``[0, 1]``; ``target`` of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> BCELoss()(torch.full((2,), 0.5), torch.tensor([0.0, 1.0]))
        tensor(0.6931)
    """

    weight: float | Sequence[float] | None = None
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._floats("weight", scalar=True)

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        weight = self._elementwise_weight("weight", pred)
        return F.binary_cross_entropy(pred, target, weight=weight, reduction=self.reduction)


@loss_dataclass
class BCEWithLogitsLoss(Loss):
    """Binary cross entropy of logits, numerically stable
    (``F.binary_cross_entropy_with_logits``).

    Arguments:
        weight: optional rescaling weights: a float or a tuple/list of floats broadcast
            against ``pred``.
        pos_weight: optional weights of positive examples: one per class (last dimension),
            or a float for all.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: logits; ``target``: probabilities of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> BCEWithLogitsLoss()(torch.zeros(2), torch.tensor([0.0, 1.0]))
        tensor(0.6931)
    """

    weight: float | Sequence[float] | None = None
    pos_weight: float | Sequence[float] | None = None
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._floats("weight", scalar=True)
        self._floats("pos_weight", scalar=True)

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(
            pred,
            target,
            weight=self._elementwise_weight("weight", pred),
            pos_weight=self._elementwise_weight("pos_weight", pred),
            reduction=self.reduction,
        )


@loss_dataclass
class KLDivLoss(Loss):
    """Kullback-Leibler divergence ``KL(target || exp(pred))`` (``F.kl_div``).

    ``"mean"`` averages over all elements, as torch; ``"batchmean"`` (the mathematical KL
    divergence per sample) divides the sum by the batch size.

    Arguments:
        log_target: whether ``target`` holds log-probabilities (default ``False``).
        reduction: ``"mean"`` (default), ``"batchmean"``, ``"sum"`` or ``"none"``.

    Input:
        ``pred``: log-probabilities; ``target``: (log-)probabilities of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> p = torch.tensor([0.5, 0.5])
        >>> KLDivLoss(reduction="sum")(p.log(), torch.tensor([1.0, 0.0]))
        tensor(0.6931)
    """

    log_target: bool = False
    same_shape: ClassVar[bool] = True
    reductions: ClassVar[tuple[str, ...]] = ("mean", "batchmean", "sum", "none")

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        # F.kl_div warns on "mean" (its meaning may change); average the element-wise loss.
        reduction = "none" if self.reduction == "mean" else self.reduction
        value = F.kl_div(pred, target, reduction=reduction, log_target=self.log_target)
        return value.mean() if self.reduction == "mean" else value


@loss_dataclass
class FocalLoss(Loss):
    """Binary focal loss on logits (``torchvision.ops.sigmoid_focal_loss``).

    ``BCEWithLogits(pred, target) * (1 - p_t)^gamma``, times ``alpha_t`` when ``alpha`` is
    given, where ``p_t = p*target + (1-p)*(1-target)`` and ``p = sigmoid(pred)``.

    Arguments:
        gamma: focusing exponent, ``>= 0`` (default 2.0; 0 gives binary cross entropy).
        alpha: optional weight of positives in ``[0, 1]`` (negatives get ``1 - alpha``).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: logits; ``target``: binary labels (floats) of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> FocalLoss(gamma=0.0)(torch.zeros(2), torch.tensor([0.0, 1.0]))
        tensor(0.6931)
    """

    gamma: float = 2.0
    alpha: float | None = None
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("gamma", minimum=0.0)
        if self.alpha is not None:
            self._number("alpha", minimum=0.0)
            if self.alpha > 1.0:
                self._fail(f"alpha must be in [0, 1] or None, got {self.alpha}")

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        p = torch.sigmoid(pred)
        ce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
        p_t = p * target + (1 - p) * (1 - target)
        value = ce * (1 - p_t) ** self.gamma
        if self.alpha is not None:
            value = (self.alpha * target + (1 - self.alpha) * (1 - target)) * value
        return reduce_elementwise(value, self.reduction)


@loss_dataclass
class DiceLoss(Loss):
    """Soft Dice loss per sample: ``1 - (2*sum(pred*target) + smooth) /
    (sum(pred) + sum(target) + smooth)``, sums over all but the first (batch) dimension.

    Arguments:
        smooth: additive smoothing of numerator and denominator, ``>= 0`` (default 1.0).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the batch.

    Input:
        ``pred``: probabilities (e.g. after ``sigmoid``/``softmax``) of shape ``(N, *)``;
        ``target`` of the same shape.

    Returns:
        The reduced loss, or the per-sample loss of shape ``(N,)`` for ``"none"``.

    Example:
        >>> DiceLoss()(torch.ones(1, 3), torch.ones(1, 3))
        tensor(0.)
    """

    smooth: float = 1.0
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("smooth", minimum=0.0)

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        dims = tuple(range(1, pred.dim()))
        overlap = (pred * target).sum(dims)
        total = pred.sum(dims) + target.sum(dims)
        value = 1 - (2 * overlap + self.smooth) / (total + self.smooth)
        return reduce_elementwise(value, self.reduction)


@loss_dataclass
class MultiLabelSoftMarginLoss(Loss):
    """Multi-label one-versus-all logistic loss, averaged over the classes
    (``F.multilabel_soft_margin_loss``).

    Arguments:
        weight: optional per-class weights (a tuple/list of ``C`` floats).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: logits of shape ``(N, C)`` or ``(C,)``; ``target``: ``0``/``1`` labels of
        the same shape.

    Returns:
        The reduced loss, or the per-sample loss of shape ``(N,)`` for ``"none"``.

    Example:
        >>> MultiLabelSoftMarginLoss()(torch.zeros(1, 2), torch.tensor([[0.0, 1.0]]))
        tensor(0.6931)
    """

    weight: Sequence[float] | None = None
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._floats("weight")

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.multilabel_soft_margin_loss(
            pred, target, weight=config_tensor(self.weight, pred), reduction=self.reduction
        )
