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

from ._base import Loss
from .classification import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    KLDivLoss,
    MultiLabelSoftMarginLoss,
    NLLLoss,
)
from .margin import (
    CosineEmbeddingLoss,
    HingeEmbeddingLoss,
    HingeLoss,
    MarginRankingLoss,
    MultiLabelMarginLoss,
    MultiMarginLoss,
    SoftMarginLoss,
)
from .regression import GaussianNLLLoss, HuberLoss, L1Loss, MSELoss, PoissonNLLLoss, SmoothL1Loss
from .sequence import CTCLoss

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
