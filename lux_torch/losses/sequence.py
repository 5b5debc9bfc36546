"""Sequence losses: connectionist temporal classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import Loss, LossInput, Tensor, loss_dataclass

__all__ = ["CTCLoss"]


@loss_dataclass
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

    def compute(self, pred: LossInput, target: LossInput) -> Tensor:
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
