"""Loss functions as small immutable configuration objects (Lux's ``GenericLossFunction`` style).

A loss is a frozen dataclass of configuration (hashable: class weights are tuples of floats,
never tensors) and supports the two Lux call conventions:

* ``loss(pred, target) -> Tensor``: the loss value;
* ``loss(model, ps, st, (x, y)) -> (loss, new_st, stats)``: the training objective, running
  ``model(x, ps, st)`` and comparing its output with ``y``; ``stats`` is ``{}``.

A loss whose torch counterpart takes more than two tensors keeps this convention: what the
model computes is ``pred`` and what the data provides is ``target``, so ``pred`` (or
``target``) is a pair: ``GaussianNLLLoss`` takes ``((mean, var), target)``,
``CosineEmbeddingLoss`` and ``MarginRankingLoss`` ``((x1, x2), target)`` (e.g. the outputs of
a ``BranchLayer``), ``CTCLoss`` ``(log_probs or (log_probs, input_lengths), (targets,
target_lengths))``. Tensors that vary per batch (variances, lengths) thus come from the model's
output or from ``y``; class weights, fixed for a run, are configuration (hashable floats).

Numerics are those of ``torch.nn.functional`` (each loss calls ``F.*`` directly, except
``GaussianNLLLoss``, written out so that it runs under ``vmap`` and ``torch.compile``); the
few losses torch does not have (focal, Dice, hinge) follow torchvision / Lux.jl. Every loss
takes ``reduction="mean" | "sum" | "none"``. Configuration is validated at construction; on
call, losses reject pred/target shapes that torch would broadcast silently (or with only a
warning)::

    import torch, lux_torch as lux
    from lux_torch.losses import MSELoss

    model = lux.Linear(3, 1)
    ps, st = lux.setup(lux.random.key(0), model)
    x, y = torch.ones(8, 3), torch.zeros(8, 1)
    value, st, stats = MSELoss()(model, ps, st, (x, y))
    grads = torch.func.grad(lambda p: MSELoss()(model, p, st, (x, y))[0])(ps)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar, overload

import torch
import torch.nn.functional as F
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from ._graph import tracing
from .core import Layer, describe_value

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CTCLoss",
    "CosineEmbeddingLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "GaussianNLLLoss",
    "HingeEmbeddingLoss",
    "HingeLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "Loss",
    "MSELoss",
    "MarginRankingLoss",
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MultiMarginLoss",
    "NLLLoss",
    "PoissonNLLLoss",
    "SmoothL1Loss",
    "SoftMarginLoss",
]

Tensor = torch.Tensor
_loss = dataclasses.dataclass(frozen=True)


def _reduce(value: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` to an element-wise loss (for losses ``F`` does not provide)."""
    if reduction == "mean":
        return value.mean()
    if reduction == "sum":
        return value.sum()
    return value


def _values_readable() -> bool:
    """Whether tensor values can be read on the host for a check: not while tracing
    (``torch.compile``, ``make_fx``) and not under ``torch.func.vmap``."""
    if tracing():
        return False
    if torch._C._functorch.peek_interpreter_stack() is None:
        return True
    return all(i.key() != TransformType.Vmap for i in retrieve_all_functorch_interpreters())


def _as_tensor(values: float | tuple[float, ...] | None, like: Tensor) -> Tensor | None:
    """Configuration floats as a tensor on ``like``'s device and dtype (``None`` stays; a
    float becomes a 0-d tensor)."""
    if values is None:
        return None
    return torch.tensor(values, dtype=like.dtype, device=like.device)


@_loss
class Loss:
    """Base class of losses: validation, the two call conventions and the reduction.

    Subclasses are frozen dataclasses adding configuration fields and implementing
    ``compute(pred, target) -> Tensor``; element-wise losses set ``same_shape = True`` so
    calls with differing pred/target shapes raise ``ValueError``.
    """

    reduction: str = dataclasses.field(default="mean", kw_only=True)

    same_shape: ClassVar[bool] = False
    reductions: ClassVar[tuple[str, ...]] = ("mean", "sum", "none")

    def __post_init__(self) -> None:
        if self.reduction not in self.reductions:
            self._fail(f"reduction must be one of {self.reductions}, got {self.reduction!r}")

    def _fail(self, message: str) -> None:
        raise ValueError(f"{type(self).__name__}: {message}")

    def _number(self, name: str, *, minimum: float | None = None, positive: bool = False) -> None:
        """Validate a float field: a real number, ``> 0`` or ``>= minimum`` when asked."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{type(self).__name__}: {name} must be a float, got {value!r}")
        if positive and not value > 0:
            self._fail(f"{name} must be > 0, got {value}")
        if minimum is not None and not value >= minimum:
            self._fail(f"{name} must be >= {minimum}, got {value}")

    def _integer(self, name: str) -> None:
        """Validate an int field (``bool`` is rejected)."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{type(self).__name__}: {name} must be an int, got {value!r}")

    def _floats(self, name: str, *, scalar: bool = False) -> None:
        """Normalise an optional sequence-of-floats field (class weights) to a tuple; with
        ``scalar=True`` a single float (torch's 0-d weight) is accepted and kept a float."""
        value = getattr(self, name)
        if value is None:
            return
        if scalar and isinstance(value, (int, float)) and not isinstance(value, bool):
            object.__setattr__(self, name, float(value))
            return
        if isinstance(value, (Tensor, str)) or not isinstance(value, Sequence):
            raise TypeError(
                f"{type(self).__name__}: {name} must be a tuple/list of floats or None, got "
                f"{type(value).__name__} (configuration stays hashable: no tensors)"
            )
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{type(self).__name__}: {name} must hold floats, got {value!r}")
        object.__setattr__(self, name, tuple(float(v) for v in value))

    def _elementwise_weight(self, name: str, pred: Tensor) -> Tensor | None:
        """A weight field broadcast against ``pred`` (``BCELoss``-like): a tensor, or
        ``ValueError`` where it has more dimensions than ``pred`` (torch would fail with
        "output with shape [] doesn't match the broadcast shape [1]")."""
        weight = _as_tensor(getattr(self, name), pred)
        if weight is not None and weight.dim() > pred.dim():
            self._fail(
                f"{name} of shape {tuple(weight.shape)} has more dimensions than pred of shape "
                f"{tuple(pred.shape)}; pass a float {name} (torch's 0-d weight) instead"
            )
        return weight

    def _pair(self, value: Any, names: str, what: str = "pred") -> tuple[Any, Any]:
        """``value`` as the pair a loss of two model outputs takes (e.g. ``"(x1, x2)"``)."""
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            if isinstance(value, (tuple, list)):
                got = f"a {type(value).__name__} of {len(value)}"
            else:
                got = describe_value(value)
            raise TypeError(f"{type(self).__name__}: {what} must be a pair {names}, got {got}")
        return value[0], value[1]

    def _same_shapes(self, **tensors: Tensor) -> None:
        """``ValueError`` naming the first two of ``tensors`` whose shapes differ (torch would
        broadcast them silently)."""
        (first, a), *rest = tensors.items()
        for second, b in rest:
            if a.shape != b.shape:
                self._fail(
                    f"{first} shape {tuple(a.shape)} and {second} shape {tuple(b.shape)} differ"
                )

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        """The reduced loss of ``pred`` against ``target`` (implemented by subclasses)."""
        raise NotImplementedError

    @overload
    def __call__(self, pred: Tensor, target: Tensor, /) -> Tensor: ...

    @overload
    def __call__(
        self, model: Layer, ps: Any, st: Any, data: tuple[Any, Any], /
    ) -> tuple[Tensor, Any, dict[str, Any]]: ...

    def __call__(self, first: Any, *args: Any) -> Any:
        name = type(self).__name__
        if isinstance(first, Layer):
            if len(args) != 3:
                raise TypeError(
                    f"{name}: the training convention is loss(model, ps, st, (x, y)), got "
                    f"{len(args) + 1} arguments"
                )
            ps, st, data = args
            if not isinstance(data, (tuple, list)) or len(data) != 2:
                raise TypeError(f"{name}: data must be a pair (x, y), got {type(data).__name__}")
            x, y = data
            pred, new_st = first(x, ps, st)
            return self(pred, y), new_st, {}
        if len(args) != 1:
            raise TypeError(
                f"{name}: call as loss(pred, target) or loss(model, ps, st, (x, y)), got "
                f"{len(args) + 1} arguments"
            )
        target = args[0]
        if self.same_shape and first.shape != target.shape:
            raise ValueError(
                f"{name}: pred shape {tuple(first.shape)} and target shape "
                f"{tuple(target.shape)} differ"
            )
        return self.compute(first, target)


@_loss
class MSELoss(Loss):
    """Mean squared error ``(pred - target)^2`` (``F.mse_loss``).

    Arguments:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred`` and ``target`` of the same shape.

    Returns:
        The reduced loss (a scalar), or the element-wise loss for ``reduction="none"``.

    Example:
        >>> MSELoss()(torch.zeros(2), torch.ones(2))
        tensor(1.)
    """

    same_shape: ClassVar[bool] = True

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(pred, target, reduction=self.reduction)


@_loss
class L1Loss(Loss):
    """Mean absolute error ``|pred - target|`` (``F.l1_loss``).

    Arguments:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred`` and ``target`` of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> L1Loss()(torch.zeros(2), torch.ones(2))
        tensor(1.)
    """

    same_shape: ClassVar[bool] = True

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(pred, target, reduction=self.reduction)


@_loss
class HuberLoss(Loss):
    """Huber loss: quadratic below ``delta``, linear (slope ``delta``) above (``F.huber_loss``).

    Arguments:
        delta: threshold between the quadratic and linear regimes, ``> 0`` (default 1.0).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred`` and ``target`` of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> HuberLoss(delta=0.5)(torch.zeros(2), torch.full((2,), 2.0))
        tensor(0.8750)
    """

    delta: float = 1.0
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("delta", positive=True)

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(pred, target, reduction=self.reduction, delta=self.delta)


@_loss
class SmoothL1Loss(Loss):
    """Smooth L1 loss: Huber divided by ``beta``; ``beta = 0`` is L1 (``F.smooth_l1_loss``).

    Arguments:
        beta: threshold between the quadratic and linear regimes, ``>= 0`` (default 1.0).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred`` and ``target`` of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> SmoothL1Loss()(torch.zeros(2), torch.full((2,), 2.0))
        tensor(1.5000)
    """

    beta: float = 1.0
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("beta", minimum=0.0)

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(pred, target, reduction=self.reduction, beta=self.beta)


@_loss
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

    weight: tuple[float, ...] | None = None
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
            weight=_as_tensor(self.weight, pred),
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


@_loss
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

    weight: tuple[float, ...] | None = None
    ignore_index: int = -100

    def __post_init__(self) -> None:
        super().__post_init__()
        self._floats("weight")
        self._integer("ignore_index")

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(
            pred,
            target,
            weight=_as_tensor(self.weight, pred),
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


@_loss
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

    weight: float | tuple[float, ...] | None = None
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._floats("weight", scalar=True)

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        weight = self._elementwise_weight("weight", pred)
        return F.binary_cross_entropy(pred, target, weight=weight, reduction=self.reduction)


@_loss
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

    weight: float | tuple[float, ...] | None = None
    pos_weight: float | tuple[float, ...] | None = None
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


@_loss
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


@_loss
class PoissonNLLLoss(Loss):
    """Negative log-likelihood of a Poisson target (``F.poisson_nll_loss``).

    Arguments:
        log_input: whether ``pred`` is the log-rate (default ``True``) or the rate.
        full: add the Stirling approximation term ``target*log(target) - target +
            0.5*log(2*pi*target)`` (default ``False``).
        eps: added to the rate before the log when ``log_input=False`` (default 1e-8).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred`` and ``target`` (counts) of the same shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> PoissonNLLLoss()(torch.zeros(2), torch.ones(2))
        tensor(1.)
    """

    log_input: bool = True
    full: bool = False
    eps: float = 1e-8
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("eps", minimum=0.0)

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.poisson_nll_loss(
            pred,
            target,
            log_input=self.log_input,
            full=self.full,
            eps=self.eps,
            reduction=self.reduction,
        )


@_loss
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
        return _reduce(value, self.reduction)


@_loss
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
        return _reduce(value, self.reduction)


@_loss
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
        return _reduce(F.relu(1 - pred * target), self.reduction)


@_loss
class GaussianNLLLoss(Loss):
    """Negative log-likelihood of a Gaussian with predicted mean and variance
    (``torch.nn.GaussianNLLLoss``): ``0.5 * (log(var) + (mean - target)^2 / var)``.

    As torch, ``var`` is clamped to ``eps`` for stability without changing its gradient.
    Written out (not ``F.gaussian_nll_loss``, whose value check on ``var`` breaks ``vmap``
    and ``torch.compile``): a negative ``var`` raises ``ValueError`` like torch where its
    values can be read, and gives a NaN loss while compiling or under ``vmap``.

    Arguments:
        full: add the constant ``0.5 * log(2 * pi)`` (default ``False``).
        eps: lower clamp of ``var``, ``> 0`` (default 1e-6).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: the pair ``(mean, var)`` (e.g. a model with two outputs): ``var`` has
        ``mean``'s shape (heteroscedastic), or one dimension fewer / one dimension of size 1
        (homoscedastic), or is a float; ``target`` has ``mean``'s shape.

    Returns:
        The reduced loss, or the element-wise loss for ``reduction="none"``.

    Example:
        >>> GaussianNLLLoss()((torch.zeros(2), torch.ones(2)), torch.ones(2))
        tensor(0.5000)
    """

    full: bool = False
    eps: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("eps", positive=True)

    def _variance(self, var: Any, mean: Tensor) -> Tensor:
        """``var`` as a tensor broadcasting against ``mean`` by torch's rules."""
        if isinstance(var, (int, float)) and not isinstance(var, bool):
            if var < 0:
                self._fail(f"var must be >= 0, got {var}")
            return torch.full_like(mean, float(var))
        if not isinstance(var, Tensor):
            raise TypeError(
                f"GaussianNLLLoss: var must be a tensor or a float, got {describe_value(var)}"
            )
        if var.shape == mean.shape:
            return var
        if var.shape == mean.shape[:-1]:
            return var.unsqueeze(-1)
        mismatched = [v for m, v in zip(mean.shape, var.shape, strict=False) if m != v]
        if var.dim() != mean.dim() or sum(mismatched) != 1:
            self._fail(
                f"var shape {tuple(var.shape)} does not fit mean shape {tuple(mean.shape)}: "
                "expected the same shape, the shape without the last dimension, or one "
                "dimension of size 1"
            )
        return var

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        mean, var = self._pair(pred, "(mean, var)")
        self._same_shapes(mean=mean, target=target)
        var = self._variance(var, mean)
        if _values_readable():
            if bool((var < 0).any()):
                self._fail("var has negative entries")
        else:
            var = var.where(var >= 0, math.nan)
        # torch clamps in place under no_grad: the clamped value, the gradient of identity
        var = var.detach().clamp(min=self.eps) + (var - var.detach())
        value = 0.5 * (torch.log(var) + (mean - target) ** 2 / var)
        if self.full:
            value = value + 0.5 * math.log(2 * math.pi)
        return _reduce(value, self.reduction)


@_loss
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

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        x1, x2 = self._pair(pred, "(x1, x2)")
        self._same_shapes(x1=x1, x2=x2)
        if target.shape != x1.shape[:-1]:
            self._fail(
                f"target shape {tuple(target.shape)} must be x1's shape without its last "
                f"dimension, {tuple(x1.shape[:-1])}"
            )
        return F.cosine_embedding_loss(x1, x2, target, margin=self.margin, reduction=self.reduction)


@_loss
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

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        x1, x2 = self._pair(pred, "(x1, x2)")
        self._same_shapes(x1=x1, x2=x2, target=target)
        return F.margin_ranking_loss(x1, x2, target, margin=self.margin, reduction=self.reduction)


@_loss
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
    weight: tuple[float, ...] | None = None

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
            weight=_as_tensor(self.weight, pred),
            reduction=self.reduction,
        )


@_loss
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


@_loss
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

    weight: tuple[float, ...] | None = None
    same_shape: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._floats("weight")

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.multilabel_soft_margin_loss(
            pred, target, weight=_as_tensor(self.weight, pred), reduction=self.reduction
        )


@_loss
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


@_loss
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


@_loss
class CTCLoss(Loss):
    """Connectionist Temporal Classification loss (``F.ctc_loss``): the negative
    log-likelihood of a target sequence summed over its alignments with the input.

    ``"mean"`` divides each sequence's loss by its target length, then averages over the
    batch (as torch). torch's kernel has a data-dependent output shape: this loss does not
    run inside ``torch.compile(fullgraph=True)`` (nor ``train_step(compile=True)``); use it
    in eager steps. Under ``vmap`` torch runs it one sample at a time (with its
    performance warning).

    Arguments:
        blank: index of the blank label (default 0).
        zero_infinity: replace infinite losses (inputs too short for their targets) and
            their gradients by zero (default ``False``).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Input:
        ``pred``: log-probabilities (e.g. ``log_softmax(-1)``) of shape ``(T, N, C)`` or
        ``(T, C)``, every sequence of full length ``T``; or the pair
        ``(log_probs, input_lengths)`` with ``input_lengths`` of shape ``(N,)`` (or ``()``)
        as a tensor or tuple of ints. ``target``: the pair ``(targets, target_lengths)``:
        ``targets`` padded ``(N, S)`` (or ``(S,)``) or concatenated ``(sum(target_lengths),)``
        class indices, never ``blank``; ``target_lengths`` of shape ``(N,)`` (or ``()``).

    Returns:
        The reduced loss, or the per-sequence loss of shape ``(N,)`` for ``"none"``.

    Example:
        >>> log_probs = torch.zeros(2, 1, 2).log_softmax(-1)
        >>> CTCLoss(reduction="sum")(log_probs, (torch.tensor([[1]]), torch.tensor([1])))
        tensor(0.2877)
    """

    blank: int = 0
    zero_infinity: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._integer("blank")
        if self.blank < 0:
            self._fail(f"blank must be >= 0, got {self.blank}")

    def compute(self, pred: Any, target: Any) -> Tensor:
        if isinstance(pred, (tuple, list)):
            log_probs, input_lengths = self._pair(pred, "(log_probs, input_lengths)")
        else:
            log_probs = pred
            input_lengths = torch.full(
                log_probs.shape[1:-1], log_probs.shape[0], dtype=torch.long, device=pred.device
            )
        targets, target_lengths = self._pair(target, "(targets, target_lengths)", "target")
        return F.ctc_loss(
            log_probs,
            targets,
            input_lengths,
            target_lengths,
            blank=self.blank,
            reduction=self.reduction,
            zero_infinity=self.zero_infinity,
        )
