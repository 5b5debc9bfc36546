"""Tests for lux_torch.schedules: values equal to torch.optim.lr_scheduler, traceability
(torch.compile fullgraph, vmap), validation, and schedules driving an optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from lux_torch import optim, schedules
from lux_torch.tree import leaves, map

STEPS = 30
Scheduler = Callable[[torch.optim.Optimizer], Any]

# (our schedule, the equivalent torch scheduler with base lr LR, counts to compare)
LR = 0.1
EQUIVALENTS: list[tuple[str, Callable[[], schedules.Schedule], Scheduler, int]] = [
    (
        "linear",
        lambda: schedules.linear_schedule(0.5 * LR, 0.1 * LR, transition_steps=20),
        lambda o: torch.optim.lr_scheduler.LinearLR(
            o, start_factor=0.5, end_factor=0.1, total_iters=20
        ),
        STEPS,
    ),
    (
        "linear warm-up",
        lambda: schedules.linear_schedule(0.01 * LR, LR, transition_steps=10),
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.01, total_iters=10),
        STEPS,
    ),
    (
        "cosine",  # torch's cosine rises again after T_max: compare up to decay_steps
        lambda: schedules.cosine_decay_schedule(LR, decay_steps=STEPS),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS),
        STEPS + 1,
    ),
    (
        "cosine alpha",
        lambda: schedules.cosine_decay_schedule(LR, decay_steps=25, alpha=0.2),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=25, eta_min=0.2 * LR),
        26,
    ),
    (
        "exponential",
        lambda: schedules.exponential_decay(LR, transition_steps=1, decay_rate=0.9),
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
        STEPS,
    ),
    (
        "exponential staircase",
        lambda: schedules.exponential_decay(LR, 7, 0.5, staircase=True),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
        STEPS,
    ),
    (
        "piecewise",
        lambda: schedules.piecewise_constant_schedule(LR, {5: 0.5, 12: 0.5, 20: 0.5}),
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 12, 20], gamma=0.5),
        STEPS,
    ),
    (
        "warmup cosine",
        lambda: schedules.warmup_cosine_decay_schedule(0.1 * LR, LR, 5, 25, end_value=0.01),
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=5),
                torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.01),
            ],
            milestones=[5],
        ),
        26,
    ),
]


def _torch_values(make: Scheduler, n: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = make(opt)
    values = []
    for _ in range(n):
        values.append(opt.param_groups[0]["lr"])
        opt.step()  # (torch warns when the scheduler steps before the optimizer)
        scheduler.step()
    return values


@pytest.mark.parametrize(("name", "ours", "theirs", "n"), EQUIVALENTS, ids=lambda x: x)
def test_values_equal_torch_lr_scheduler(
    name: str, ours: Callable[[], schedules.Schedule], theirs: Scheduler, n: int
) -> None:
    schedule = ours()
    got = [schedule(torch.tensor(i)) for i in range(n)]
    assert all(v.dtype == torch.float64 and v.shape == () for v in got)
    expected = torch.tensor(_torch_values(theirs, n), dtype=torch.float64)
    torch.testing.assert_close(torch.stack(got), expected, rtol=1e-12, atol=1e-15)


def test_closed_forms() -> None:
    t = torch.arange(40)
    # a delayed linear transition, clamped at both ends
    got = schedules.linear_schedule(1.0, 3.0, transition_steps=10, transition_begin=5)(t)
    torch.testing.assert_close(got, 1.0 + 2.0 * torch.clamp(t - 5.0, 0, 10).double() / 10)
    # cosine with an exponent; constant at alpha * init after decay_steps
    got = schedules.cosine_decay_schedule(2.0, 20, alpha=0.1, exponent=2.0)(t)
    cosine = 0.5 * (1 + torch.cos(math.pi * torch.clamp(t, max=20).double() / 20))
    torch.testing.assert_close(got, 2.0 * (0.9 * cosine**2 + 0.1))
    # exponential decay: a delayed start, bounded by end_value, and growth bounded above
    got = schedules.exponential_decay(1.0, 4, 0.5, transition_begin=3, end_value=0.1)(t)
    expected = torch.clamp(0.5 ** (torch.clamp(t - 3.0, min=0).double() / 4), min=0.1)
    torch.testing.assert_close(got, expected)
    got = schedules.exponential_decay(1.0, 1, 1.5, end_value=4.0)(t)
    torch.testing.assert_close(got, torch.clamp(1.5 ** t.double(), max=4.0))
    # warm-up without warm-up steps is the cosine decay; constant is constant
    torch.testing.assert_close(
        schedules.warmup_cosine_decay_schedule(0.0, 1.0, 0, 10)(t),
        schedules.cosine_decay_schedule(1.0, 10)(t),
    )
    torch.testing.assert_close(schedules.constant_schedule(0.3)(t), torch.full((40,), 0.3).double())
    # piecewise: scales multiply; a boundary at 0 applies from the start
    got = schedules.piecewise_constant_schedule(1.0, {0: 0.5, 10: 4.0})(t)
    torch.testing.assert_close(got, torch.where(t >= 10, 2.0, 0.5).double())
    assert float(schedules.piecewise_constant_schedule(0.2)(100)) == 0.2


ALL: list[Callable[[], schedules.Schedule]] = [
    lambda: schedules.constant_schedule(0.1),
    *[make for _, make, _, _ in EQUIVALENTS],
    lambda: schedules.exponential_decay(1.0, 3, 0.7, transition_begin=4, end_value=0.2),
    lambda: schedules.cosine_decay_schedule(1.0, 12, alpha=0.1, exponent=1.5),
]


@pytest.mark.parametrize("make", ALL)
def test_python_int_count_equals_tensor_count(make: Callable[[], schedules.Schedule]) -> None:
    schedule = make()
    for i in range(STEPS):
        assert torch.equal(schedule(i), schedule(torch.tensor(i)))


def test_compile_fullgraph_equals_eager() -> None:
    torch._dynamo.reset()
    made = [make() for make in ALL]
    compiled = torch.compile(lambda count: [s(count) for s in made], fullgraph=True)
    for i in (0, 1, 4, 5, 12, 19, 20, 25, 31):
        count = torch.tensor(i)
        for a, b in zip(compiled(count), [s(count) for s in made], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make", ALL)
def test_vmap_over_counts(make: Callable[[], schedules.Schedule]) -> None:
    schedule = make()
    counts = torch.arange(STEPS)
    batched = torch.func.vmap(schedule)(counts)
    assert torch.equal(batched, torch.stack([schedule(c) for c in counts]))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: schedules.linear_schedule(1.0, 0.0, 0), r"linear_schedule: transition_steps"),
        (lambda: schedules.linear_schedule(1.0, 0.0, 5, -1), r"linear_schedule: transition_begin"),
        (lambda: schedules.linear_schedule(1.0, 0.0, 2.5), r"transition_steps must be an int"),  # type: ignore[arg-type]
        (lambda: schedules.cosine_decay_schedule(1.0, 0), r"cosine_decay_schedule: decay_steps"),
        (
            lambda: schedules.cosine_decay_schedule(1.0, 5, alpha=-1),
            r"cosine_decay_schedule: alpha",
        ),
        (lambda: schedules.cosine_decay_schedule(1.0, 5, exponent=0), "exponent must be > 0"),
        (lambda: schedules.exponential_decay(1.0, 0, 0.5), r"exponential_decay: transition_steps"),
        (lambda: schedules.exponential_decay(1.0, 1, 0.0), r"exponential_decay: decay_rate"),
        (lambda: schedules.exponential_decay(1.0, 1, 0.5, -2), "transition_begin"),
        (
            lambda: schedules.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10),
            r"warmup_cosine_decay_schedule: decay_steps .* must be > warmup_steps",
        ),
        (lambda: schedules.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10), "warmup_steps"),
        (
            lambda: schedules.piecewise_constant_schedule(1.0, {5: -0.5}),
            r"piecewise_constant_schedule: scales must be >= 0, got -0.5 at boundary 5",
        ),
        (lambda: schedules.piecewise_constant_schedule(1.0, {-1: 0.5}), "every boundary"),
        (lambda: schedules.piecewise_constant_schedule(1.0, {"a": 0.5}), "every boundary"),  # type: ignore[dict-item]
    ],
)
def test_bad_arguments(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_reexported_from_optim() -> None:
    for name in schedules.__all__:
        if name != "Schedule":
            assert getattr(optim, name) is getattr(schedules, name)
            assert name in optim.__all__


# ------------------------------------------------------------- schedules in optimizers


def _params() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    return {
        "layer_1": {
            "weight": torch.randn(4, 3, generator=gen),
            "bias": torch.randn(4, generator=gen),
        },
        "layer_2": {"weight": torch.randn(2, 4, generator=gen)},
    }


def _grad(p: torch.Tensor) -> torch.Tensor:
    return 2 * p + torch.sin(p)


@pytest.mark.parametrize(("name", "ours", "theirs", "n"), EQUIVALENTS, ids=lambda x: x)
def test_adam_with_a_schedule_equals_torch_with_the_scheduler(
    name: str, ours: Callable[[], schedules.Schedule], theirs: Scheduler, n: int
) -> None:
    ps = _params()
    params = [torch.nn.Parameter(p.clone()) for p in leaves(ps)]
    reference = torch.optim.Adam(params, lr=LR)
    scheduler = theirs(reference)
    opt = optim.adam(lr=ours())
    state = opt.init(ps)
    for _ in range(25):
        updates, state = opt.update(map(_grad, ps), state, ps)
        ps = optim.apply_updates(ps, updates)
        for p in params:
            p.grad = _grad(p.detach())
        reference.step()
        scheduler.step()
    for a, b in zip(leaves(ps), params, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def test_scheduled_adam_step_compiles_fullgraph() -> None:
    torch._dynamo.reset()
    opt = optim.adamw(optim.warmup_cosine_decay_schedule(0.0, 0.05, 3, 10), weight_decay=0.1)

    def step(ps: Any, state: Any) -> tuple[Any, Any]:
        updates, state = opt.update(map(_grad, ps), state, ps)
        return optim.apply_updates(ps, updates), state

    compiled = torch.compile(step, fullgraph=True)
    eager = traced = (_params(), opt.init(_params()))
    for _ in range(5):
        eager, traced = step(*eager), compiled(*traced)
    for a, b in zip(leaves(traced), leaves(eager), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert int(traced[1][0]["count"]) == 5
