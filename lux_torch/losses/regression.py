"""Regression losses: squared, absolute, Huber, smooth L1, Poisson and Gaussian
negative log-likelihoods."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..core import describe_value
from ._base import Loss, LossInput, Tensor, loss_dataclass, reduce_elementwise, values_readable

__all__ = ["GaussianNLLLoss", "HuberLoss", "L1Loss", "MSELoss", "PoissonNLLLoss", "SmoothL1Loss"]


@loss_dataclass
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


@loss_dataclass
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


@loss_dataclass
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


@loss_dataclass
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


@loss_dataclass
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


@loss_dataclass
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

    def compute(self, pred: LossInput, target: Tensor) -> Tensor:
        mean, var = self._pair(pred, "(mean, var)")
        self._same_shapes(mean=mean, target=target)
        var = self._variance(var, mean)
        if values_readable():
            if bool((var < 0).any()):
                self._fail("var has negative entries")
        else:
            var = var.where(var >= 0, math.nan)
        # torch clamps in place under no_grad: the clamped value, the gradient of identity
        var = var.detach().clamp(min=self.eps) + (var - var.detach())
        value = 0.5 * (torch.log(var) + (mean - target) ** 2 / var)
        if self.full:
            value = value + 0.5 * math.log(2 * math.pi)
        return reduce_elementwise(value, self.reduction)
