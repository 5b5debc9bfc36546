"""Losses: parity with torch.nn.functional (float64), the training-objective convention,
configuration/shape validation and one compiled call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lux_torch import random as lrandom
from lux_torch.core import setup
from lux_torch.layers import Chain, Linear
from lux_torch.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    HingeLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    Loss,
    MSELoss,
    NLLLoss,
    PoissonNLLLoss,
    SmoothL1Loss,
)

DT = torch.float64
REDUCTIONS = ["mean", "sum", "none"]


def normal(seed: int, *shape: int) -> torch.Tensor:
    return lrandom.normal(lrandom.key(seed), shape, dtype=DT)


def uniform(seed: int, *shape: int) -> torch.Tensor:
    return lrandom.uniform(lrandom.key(seed), shape, dtype=DT, low=0.05, high=0.95)


def classes(seed: int, *shape: int, n: int = 5) -> torch.Tensor:
    return lrandom.randint(lrandom.key(seed), shape, 0, n)


def reduce(value: torch.Tensor, reduction: str) -> torch.Tensor:
    return {"mean": value.mean, "sum": value.sum, "none": lambda: value}[reduction]()


def focal_reference(pred, target, gamma, alpha, reduction):
    """torchvision.ops.sigmoid_focal_loss, written out (torchvision is not a dependency)."""
    p = torch.sigmoid(pred)
    ce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha is not None and alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return reduce(loss, reduction)


def dice_reference(pred, target, smooth, reduction):
    value = torch.stack(
        [
            1 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)
            for p, t in zip(pred, target, strict=True)
        ]
    )
    return reduce(value, reduction)


WEIGHTS = (0.5, 1.0, 2.0, 1.5, 0.25)
BINARY = (uniform(7, 6, 5) > 0.5).to(DT)

# (name, loss factory, reference(pred, target, reduction), pred, target)
CASES: list[tuple[str, Callable[[str], Loss], Callable[..., torch.Tensor], Any, Any]] = [
    ("mse", lambda r: MSELoss(reduction=r), lambda p, t, r: F.mse_loss(p, t, reduction=r),
     normal(1, 6, 5), normal(2, 6, 5)),
    ("l1", lambda r: L1Loss(reduction=r), lambda p, t, r: F.l1_loss(p, t, reduction=r),
     normal(1, 6, 5), normal(2, 6, 5)),
    ("huber", lambda r: HuberLoss(0.7, reduction=r),
     lambda p, t, r: F.huber_loss(p, t, reduction=r, delta=0.7), normal(1, 6, 5), normal(2, 6, 5)),
    ("smooth_l1", lambda r: SmoothL1Loss(beta=0.3, reduction=r),
     lambda p, t, r: F.smooth_l1_loss(p, t, reduction=r, beta=0.3),
     normal(1, 6, 5), normal(2, 6, 5)),
    ("cross_entropy", lambda r: CrossEntropyLoss(reduction=r),
     lambda p, t, r: F.cross_entropy(p, t, reduction=r), normal(1, 6, 5), classes(3, 6)),
    ("cross_entropy_weighted", lambda r: CrossEntropyLoss(
        weight=list(WEIGHTS), ignore_index=2, label_smoothing=0.1, reduction=r),
     lambda p, t, r: F.cross_entropy(p, t, weight=torch.tensor(WEIGHTS, dtype=DT),
                                     ignore_index=2, label_smoothing=0.1, reduction=r),
     normal(1, 6, 5, 3), classes(3, 6, 3)),
    ("cross_entropy_probs", lambda r: CrossEntropyLoss(label_smoothing=0.2, reduction=r),
     lambda p, t, r: F.cross_entropy(p, t, label_smoothing=0.2, reduction=r),
     normal(1, 6, 5), normal(2, 6, 5).softmax(-1)),
    ("nll", lambda r: NLLLoss(weight=WEIGHTS, ignore_index=1, reduction=r),
     lambda p, t, r: F.nll_loss(p, t, weight=torch.tensor(WEIGHTS, dtype=DT), ignore_index=1,
                                reduction=r),
     normal(1, 6, 5).log_softmax(-1), classes(3, 6)),
    ("bce", lambda r: BCELoss(weight=WEIGHTS, reduction=r),
     lambda p, t, r: F.binary_cross_entropy(p, t, weight=torch.tensor(WEIGHTS, dtype=DT),
                                            reduction=r),
     uniform(1, 6, 5), uniform(2, 6, 5)),
    ("bce_logits", lambda r: BCEWithLogitsLoss(weight=WEIGHTS, pos_weight=WEIGHTS[::-1],
                                               reduction=r),
     lambda p, t, r: F.binary_cross_entropy_with_logits(
         p, t, weight=torch.tensor(WEIGHTS, dtype=DT),
         pos_weight=torch.tensor(WEIGHTS[::-1], dtype=DT), reduction=r),
     normal(1, 6, 5), uniform(2, 6, 5)),
    ("kl_div", lambda r: KLDivLoss(reduction=r),
     lambda p, t, r: F.kl_div(p, t, reduction="none").mean() if r == "mean"
     else F.kl_div(p, t, reduction=r),
     normal(1, 6, 5).log_softmax(-1), normal(2, 6, 5).softmax(-1)),
    ("kl_div_log_target", lambda r: KLDivLoss(log_target=True, reduction=r),
     lambda p, t, r: F.kl_div(p, t, reduction="none", log_target=True).mean() if r == "mean"
     else F.kl_div(p, t, reduction=r, log_target=True),
     normal(1, 6, 5).log_softmax(-1), normal(2, 6, 5).log_softmax(-1)),
    ("poisson", lambda r: PoissonNLLLoss(reduction=r),
     lambda p, t, r: F.poisson_nll_loss(p, t, reduction=r), normal(1, 6, 5),
     classes(3, 6, 5).to(DT)),
    ("poisson_full", lambda r: PoissonNLLLoss(log_input=False, full=True, eps=1e-6, reduction=r),
     lambda p, t, r: F.poisson_nll_loss(p, t, log_input=False, full=True, eps=1e-6, reduction=r),
     uniform(1, 6, 5) * 3, classes(3, 6, 5).to(DT)),
    ("focal", lambda r: FocalLoss(reduction=r),
     lambda p, t, r: focal_reference(p, t, 2.0, None, r), normal(1, 6, 5), BINARY),
    ("focal_alpha", lambda r: FocalLoss(gamma=1.5, alpha=0.25, reduction=r),
     lambda p, t, r: focal_reference(p, t, 1.5, 0.25, r), normal(1, 6, 5), BINARY),
    ("dice", lambda r: DiceLoss(smooth=0.5, reduction=r),
     lambda p, t, r: dice_reference(p, t, 0.5, r), uniform(1, 6, 5, 2), uniform(2, 6, 5, 2)),
    ("hinge", lambda r: HingeLoss(reduction=r),
     lambda p, t, r: reduce(torch.clamp(1 - p * t, min=0), r), normal(1, 6, 5),
     BINARY * 2 - 1),
]  # fmt: skip


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("name", "make", "reference", "pred", "target"), CASES, ids=[c[0] for c in CASES]
)
def test_parity_with_functional(name, make, reference, pred, target, reduction):
    loss = make(reduction)
    got = loss(pred, target)
    expected = reference(pred, target, reduction)
    assert got.dtype == DT, name
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert hash(loss) == hash(make(reduction)) and loss == make(reduction)


def test_kl_batchmean():
    pred, target = normal(1, 6, 5).log_softmax(-1), normal(2, 6, 5).softmax(-1)
    got = KLDivLoss(reduction="batchmean")(pred, target)
    torch.testing.assert_close(got, F.kl_div(pred, target, reduction="batchmean"))


def test_training_objective_convention():
    model = Chain(Linear(3, 8, activation=torch.tanh), Linear(8, 5))
    ps, st = setup(lrandom.key(0), model, dtype=DT)
    x, y = normal(4, 10, 3), classes(5, 10)
    loss = CrossEntropyLoss(weight=WEIGHTS)

    value, new_st, stats = loss(model, ps, st, (x, y))
    assert stats == {}
    assert new_st.keys() == st.keys()
    torch.testing.assert_close(value, loss(model(x, ps, st)[0], y))

    grads = torch.func.grad(lambda p: loss(model, p, st, (x, y))[0])(ps)

    def objective(p):
        value, new_st, stats = loss(model, p, st, (x, y))
        return value, (new_st, stats)

    grads_aux, (_, aux_stats) = torch.func.grad(objective, has_aux=True)(ps)
    assert aux_stats == {}
    flat = torch.cat([g.flatten() for g in grads["layer_1"].values()])
    assert flat.abs().sum() > 0

    # reference gradient through autograd on leaf copies
    leaves = {k: {n: t.clone().requires_grad_() for n, t in v.items()} for k, v in ps.items()}
    loss(model(x, leaves, st)[0], y).backward()
    for k in ps:
        for n in ps[k]:
            torch.testing.assert_close(grads[k][n], leaves[k][n].grad)
            torch.testing.assert_close(grads_aux[k][n], leaves[k][n].grad)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MSELoss(reduction="avg"), "MSELoss: reduction must be one of"),
        (lambda: HuberLoss(delta=-1.0), "HuberLoss: delta must be > 0, got -1.0"),
        (lambda: SmoothL1Loss(beta=-0.5), "SmoothL1Loss: beta must be >= 0.0"),
        (lambda: CrossEntropyLoss(label_smoothing=1.5), r"label_smoothing must be in \[0, 1\]"),
        (lambda: CrossEntropyLoss(label_smoothing=-0.1), "CrossEntropyLoss: label_smoothing"),
        (lambda: FocalLoss(alpha=2.0), r"FocalLoss: alpha must be in \[0, 1\]"),
        (lambda: KLDivLoss(reduction="batch"), "KLDivLoss: reduction"),
    ],
)
def test_configuration_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_configuration_type_errors():
    with pytest.raises(TypeError, match="NLLLoss: weight must be a tuple/list of floats"):
        NLLLoss(weight=torch.ones(3))
    with pytest.raises(TypeError, match="HuberLoss: delta must be a float"):
        HuberLoss(delta="1")
    with pytest.raises(TypeError, match="CrossEntropyLoss: ignore_index must be an int"):
        CrossEntropyLoss(ignore_index=1.5)


@pytest.mark.parametrize("loss", [MSELoss(), L1Loss(), HuberLoss(), SmoothL1Loss(), BCELoss()])
def test_shape_mismatch_is_an_error(loss):
    name = type(loss).__name__
    message = rf"{name}: pred shape \(4, 1\) and target shape \(4,\) differ"
    with pytest.raises(ValueError, match=message):
        loss(uniform(1, 4, 1), uniform(2, 4))


def test_call_convention_errors():
    model = Linear(2, 1)
    with pytest.raises(TypeError, match=r"loss\(model, ps, st, \(x, y\)\)"):
        MSELoss()(model, {}, {})
    with pytest.raises(TypeError, match=r"MSELoss: call as loss\(pred, target\)"):
        MSELoss()(normal(1, 2))


def test_compile_fullgraph():
    loss = CrossEntropyLoss(weight=WEIGHTS, label_smoothing=0.1)
    pred, target = normal(1, 6, 5), classes(3, 6)
    compiled = torch.compile(loss.__call__, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(pred, target), loss(pred, target))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("make", "reference"),
    [
        (lambda r: BCELoss(weight=1.5, reduction=r),
         lambda p, t, r: torch.nn.BCELoss(weight=torch.tensor(1.5, dtype=DT), reduction=r)(p, t)),
        (lambda r: BCEWithLogitsLoss(weight=1.5, pos_weight=0.5, reduction=r),
         lambda p, t, r: torch.nn.BCEWithLogitsLoss(
             weight=torch.tensor(1.5, dtype=DT), pos_weight=torch.tensor(0.5, dtype=DT),
             reduction=r)(p, t)),
    ],
    ids=["bce", "bce_logits"],
)  # fmt: skip
def test_bce_scalar_weight_on_0d_inputs(make, reference, reduction):
    """torch.nn's BCELoss sample "scalar_weight": a 0-d weight on 0-d inputs."""
    pred, target = uniform(1), (uniform(2) > 0.5).to(DT)
    got = make(reduction)(pred, target)
    assert got.shape == ()
    torch.testing.assert_close(got, reference(pred, target, reduction), rtol=1e-12, atol=1e-12)
    # the float weight broadcasts like torch's 0-d weight on larger inputs too
    pred, target = uniform(3, 6, 5), uniform(4, 6, 5)
    torch.testing.assert_close(make(reduction)(pred, target), reference(pred, target, reduction))


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        (BCELoss(weight=(1.5,)), r"BCELoss: weight of shape \(1,\)"),
        (BCEWithLogitsLoss(weight=(1.5,)), r"BCEWithLogitsLoss: weight of shape \(1,\)"),
        (BCEWithLogitsLoss(pos_weight=(1.5,)), r"BCEWithLogitsLoss: pos_weight of shape \(1,\)"),
    ],
)
def test_bce_weight_with_more_dims_than_pred(loss, message):
    """A tuple weight on 0-d inputs is named (torch raises "output with shape [] doesn't
    match the broadcast shape [1]")."""
    message += r" has more dimensions than pred of shape \(\); pass a float"
    with pytest.raises(ValueError, match=message):
        loss(uniform(1), uniform(2))
