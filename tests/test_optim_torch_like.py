"""The torch.optim namesakes (nadam, radam, adamax, adadelta, rprop, asgd): equal to
torch.optim step for step for every option; pure, vmappable, compilable; checked inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from optim_checks import (
    STEPS,
    Make,
    assert_differentiable,
    grad_at,
    grads_at,
    max_abs_diff,
    params,
    property_tests,
    run,
    torch_scalars_in,
)

from lux_torch import optim
from lux_torch.tree import leaves

TorchMake = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]
TO = torch.optim

# (id, ours, torch's): every option of each torch optimizer, alone and combined
CASES: list[tuple[str, Make, TorchMake]] = [
    ("nadam", lambda: optim.nadam(), lambda p: TO.NAdam(p)),
    (
        "nadam-all",
        lambda: optim.nadam(0.01, (0.8, 0.99), 1e-6, weight_decay=0.1, momentum_decay=0.01),
        lambda p: TO.NAdam(p, 0.01, (0.8, 0.99), 1e-6, weight_decay=0.1, momentum_decay=0.01),
    ),
    (
        "nadam-decoupled",
        lambda: optim.nadam(0.01, weight_decay=0.2, decoupled_weight_decay=True),
        lambda p: TO.NAdam(p, 0.01, weight_decay=0.2, decoupled_weight_decay=True),
    ),
    (
        "nadam-maximize",
        lambda: optim.nadam(0.01, weight_decay=0.1, maximize=True),
        lambda p: TO.NAdam(p, 0.01, weight_decay=0.1, maximize=True),
    ),
    ("radam", lambda: optim.radam(0.01), lambda p: TO.RAdam(p, 0.01)),
    (
        "radam-all",
        lambda: optim.radam(0.01, (0.8, 0.9), 1e-6, weight_decay=0.1),
        lambda p: TO.RAdam(p, 0.01, (0.8, 0.9), 1e-6, weight_decay=0.1),
    ),
    (
        "radam-decoupled-maximize",
        lambda: optim.radam(0.01, weight_decay=0.2, decoupled_weight_decay=True, maximize=True),
        lambda p: TO.RAdam(p, 0.01, weight_decay=0.2, decoupled_weight_decay=True, maximize=True),
    ),
    ("adamax", lambda: optim.adamax(), lambda p: TO.Adamax(p)),
    (
        "adamax-all",
        lambda: optim.adamax(0.01, (0.8, 0.99), 1e-3, weight_decay=0.1, maximize=True),
        lambda p: TO.Adamax(p, 0.01, (0.8, 0.99), 1e-3, weight_decay=0.1, maximize=True),
    ),
    ("adadelta", lambda: optim.adadelta(), lambda p: TO.Adadelta(p)),
    (
        "adadelta-all",
        lambda: optim.adadelta(0.5, rho=0.8, eps=1e-4, weight_decay=0.1, maximize=True),
        lambda p: TO.Adadelta(p, 0.5, rho=0.8, eps=1e-4, weight_decay=0.1, maximize=True),
    ),
    ("rprop", lambda: optim.rprop(), lambda p: TO.Rprop(p)),
    (
        "rprop-all",
        lambda: optim.rprop(0.05, etas=(0.3, 1.5), step_sizes=(0.01, 0.2), maximize=True),
        lambda p: TO.Rprop(p, 0.05, etas=(0.3, 1.5), step_sizes=(0.01, 0.2), maximize=True),
    ),
    ("asgd", lambda: optim.asgd(), lambda p: TO.ASGD(p)),
    (
        "asgd-averaging",
        lambda: optim.asgd(0.05, lambd=0.01, alpha=0.5, t0=10, weight_decay=0.1),
        lambda p: TO.ASGD(p, 0.05, lambd=0.01, alpha=0.5, t0=10, weight_decay=0.1),
    ),
    (
        "asgd-maximize",
        lambda: optim.asgd(0.05, t0=3, maximize=True),
        lambda p: TO.ASGD(p, 0.05, t0=3, maximize=True),
    ),
]
IDS = [case[0] for case in CASES]
# float64: equal up to rounding; float32: torch's and ours round differently per step
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


def torch_run(
    make: TorchMake, dtype: torch.dtype, schedule: Callable[[int], float] | None = None
) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer]:
    """torch's optimizer over the same gradient sequence (LambdaLR when ``schedule``)."""
    with torch_scalars_in(dtype):
        theirs = [torch.nn.Parameter(p.clone()) for p in leaves(params(dtype))]
        reference = make(theirs)
        lambda_lr = None if schedule is None else TO.lr_scheduler.LambdaLR(reference, schedule)
        for k in range(STEPS):
            for p in theirs:
                p.grad = grad_at(k, p.detach())
            reference.step()
            if lambda_lr is not None:
                lambda_lr.step()
    return theirs, reference


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("name", "ours", "theirs"), CASES, ids=IDS)
def test_matches_torch_optim(name: str, ours: Make, theirs: TorchMake, dtype: torch.dtype) -> None:
    ps, state = run(ours(), params(dtype))
    reference, opt = torch_run(theirs, dtype)
    assert max_abs_diff(ps, reference) < TOLERANCE[dtype]
    if name.startswith("asgd"):  # and the averaged parameters equal torch's ax
        ax = [opt.state[p]["ax"] for p in reference]
        assert max_abs_diff(optim.asgd_averaged_params(state), ax) < TOLERANCE[dtype]
        assert not name.endswith("averaging") or max_abs_diff(ps, ax) > 1e-3  # it averaged


SCHEDULED: list[tuple[str, Callable[[Any], Make], TorchMake]] = [
    (
        "nadam",
        lambda lr: lambda: optim.nadam(lr, weight_decay=0.1),
        lambda p: TO.NAdam(p, 0.01, weight_decay=0.1),
    ),
    (
        "nadam-decoupled",
        lambda lr: lambda: optim.nadam(lr, weight_decay=0.3, decoupled_weight_decay=True),
        lambda p: TO.NAdam(p, 0.01, weight_decay=0.3, decoupled_weight_decay=True),
    ),
    (
        "radam-decoupled",
        lambda lr: lambda: optim.radam(lr, weight_decay=0.3, decoupled_weight_decay=True),
        lambda p: TO.RAdam(p, 0.01, weight_decay=0.3, decoupled_weight_decay=True),
    ),
    ("adamax", lambda lr: lambda: optim.adamax(lr), lambda p: TO.Adamax(p, 0.01)),
    ("adadelta", lambda lr: lambda: optim.adadelta(lr), lambda p: TO.Adadelta(p, 0.01)),
]


@pytest.mark.parametrize(("name", "ours", "theirs"), SCHEDULED, ids=[s[0] for s in SCHEDULED])
def test_schedule_matches_torch_lambda_lr(
    name: str, ours: Callable[[Any], Make], theirs: TorchMake
) -> None:
    def factor(step: int) -> float:
        return 1.0 + 0.5 * step if step < 20 else 10.0 / (1 + step - 20)

    def schedule(count: torch.Tensor) -> torch.Tensor:
        c = count.to(torch.float64)
        return 0.01 * torch.where(c < 20, 1.0 + 0.5 * c, 10.0 / (1 + c - 20))

    ps, _ = run(ours(schedule)(), params(torch.float64))
    reference, _ = torch_run(theirs, torch.float64, factor)
    assert max_abs_diff(ps, reference) < 1e-12
    constant, _ = run(ours(0.01)(), params(torch.float64))
    assert max_abs_diff(constant, reference) > 1e-3  # the schedule mattered


def test_asgd_schedule_uses_the_current_learning_rate() -> None:
    lr, lambd, alpha, t0 = 0.05, 0.02, 0.6, 5

    def rate(count: Any) -> Any:
        return lr / (1.0 + 0.1 * torch.as_tensor(count, dtype=torch.float64))

    ps, state = run(optim.asgd(rate, lambd, alpha, t0), params(torch.float64))
    ref = [p.clone() for p in leaves(params(torch.float64))]
    ax = [torch.zeros_like(p) for p in ref]
    for k in range(STEPS):  # torch.optim.ASGD's rule, with this step's learning rate
        eta = rate(k) / (1 + lambd * rate(k) * k) ** alpha
        mu = 1 / max(1, k - t0)
        for i, p in enumerate(ref):
            ref[i] = p * (1 - lambd * eta) - eta * grad_at(k, p)
            ax[i] = ax[i] + mu * (ref[i] - ax[i])
    assert max_abs_diff(ps, ref) < 1e-12
    assert max_abs_diff(optim.asgd_averaged_params(state), ax) < 1e-12


ALL: list[Make] = [case[1] for case in CASES]


(
    test_pure,
    test_ensemble_vmaps,
    test_refuses_misshaped_gradients,
    test_compiles_fullgraph,
) = property_tests(ALL, IDS)


def test_nadam_state_and_product() -> None:
    state = run(optim.nadam(), params(torch.float32), steps=3)[1]
    inner = state[1]
    assert sorted(inner) == ["count", "mu", "mu_product", "nu"]
    assert inner["mu_product"].dtype == torch.float64 and int(inner["count"]) == 3
    mus = [0.9 * (1 - 0.5 * 0.96 ** (t * 4e-3)) for t in (1, 2, 3)]
    assert float(inner["mu_product"]) == pytest.approx(mus[0] * mus[1] * mus[2], rel=1e-15)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: optim.nadam(-1.0), "nadam: lr must be >= 0"),
        (lambda: optim.nadam(betas=(1.0, 0.9)), r"scale_by_nadam: betas\[0\]"),
        (lambda: optim.nadam(betas=(0.9, -0.1)), r"scale_by_nadam: betas\[1\]"),
        (lambda: optim.nadam(eps=-1.0), "scale_by_nadam: eps must be >= 0"),
        (lambda: optim.nadam(momentum_decay=-1.0), "momentum_decay must be >= 0"),
        (lambda: optim.nadam(weight_decay=-1.0), "nadam: weight_decay must be >= 0"),
        (lambda: optim.radam(-1.0), "radam: lr must be >= 0"),
        (lambda: optim.radam(betas=(0.9, 1.0)), r"scale_by_radam: betas\[1\]"),
        (lambda: optim.radam(eps=-1.0), "scale_by_radam: eps must be >= 0"),
        (lambda: optim.radam(weight_decay=-1.0), "radam: weight_decay must be >= 0"),
        (lambda: optim.adamax(-1.0), "adamax: lr must be >= 0"),
        (lambda: optim.adamax(betas=(1.5, 0.9)), r"scale_by_adamax: betas\[0\]"),
        (lambda: optim.adamax(eps=-1.0), "scale_by_adamax: eps must be >= 0"),
        (lambda: optim.adamax(weight_decay=-1.0), "adamax: weight_decay must be >= 0"),
        (lambda: optim.adadelta(-1.0), "adadelta: lr must be >= 0"),
        (lambda: optim.adadelta(rho=1.1), r"scale_by_adadelta: rho must be in \[0.0, 1.0\]"),
        (lambda: optim.adadelta(eps=-1.0), "scale_by_adadelta: eps must be >= 0"),
        (lambda: optim.adadelta(weight_decay=-1.0), "adadelta: weight_decay must be >= 0"),
        (lambda: optim.rprop(-1.0), "scale_by_rprop: lr must be >= 0"),
        (lambda: optim.rprop(lambda c: 0.1), "scale_by_rprop: lr is the initial step size"),  # type: ignore[arg-type]  # the error under test
        (lambda: optim.rprop(etas=(1.2, 0.5)), r"etas must satisfy 0 < etas\[0\] < 1 < etas\[1\]"),
        (lambda: optim.rprop(etas=(0.5, 1.0)), r"etas must satisfy"),
        (lambda: optim.rprop(step_sizes=(1.0, 0.5)), r"step_sizes must satisfy"),
        (lambda: optim.rprop(step_sizes=(-1.0, 0.5)), r"step_sizes must satisfy"),
        (lambda: optim.asgd(-1.0), "asgd: lr must be >= 0"),
        (lambda: optim.asgd(lambd=-1.0), "asgd: lambd must be >= 0"),
        (lambda: optim.asgd(alpha=-1.0), "asgd: alpha must be >= 0"),
        (lambda: optim.asgd(t0=-1.0), "asgd: t0 must be >= 0"),
        (lambda: optim.asgd(weight_decay=-1.0), "asgd: weight_decay must be >= 0"),
        (
            lambda: optim.asgd().update(
                grads_at(0, params(torch.float32)), optim.asgd().init(params(torch.float32))
            ),
            "asgd: update needs ps",
        ),
        (lambda: optim.asgd_averaged_params(()), "expected the state of lux_torch.optim.asgd"),
        (
            lambda: optim.scale_by_nadam().update(
                grads_at(0, params(torch.float32)),
                optim.scale_by_adam().init(params(torch.float32)),
            ),
            r"scale_by_nadam: the state must be a dict with keys \['count', 'mu_product', 'mu', "
            r"'nu'\] \(from init\), got \['count', 'mu', 'nu'\]",
        ),
        (
            lambda: optim.scale_by_rprop().update(grads_at(0, params(torch.float32)), ()),
            r"scale_by_rprop: the state must be a dict .* got tuple",
        ),
    ],
)
def test_bad_arguments_are_refused(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_state_structure_mismatch_is_named() -> None:
    ps = params(torch.float32)
    opt = optim.scale_by_nadam()
    grads = grads_at(0, ps)
    del grads["gain"]
    with pytest.raises(ValueError, match=r"grads \(to scale_by_nadam\).*missing \['gain'\]"):
        opt.update(grads, opt.init(ps))


def test_asgd_refuses_misshaped_parameters() -> None:
    ps = params(torch.float32)
    opt = optim.asgd()
    state = opt.init(ps)
    ps["layer_1"]["bias"] = torch.ones(1)
    with pytest.raises(ValueError, match=r"grads 'layer_1.bias' has shape \(5,\), but the param"):
        opt.update(grads_at(0, params(torch.float32)), state, ps)


@pytest.mark.parametrize(
    "make",
    [c[1] for c in CASES if not c[0].startswith("rprop")],
    ids=[i for i in IDS if "rprop" not in i],
)
def test_update_is_differentiable(make: Make) -> None:
    assert_differentiable(make)  # as torch's differentiable=True (Rprop's sign is not)
