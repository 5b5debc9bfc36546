"""Learning-rate schedules: pure functions ``schedule(count) -> lr`` with optax's semantics.

``count`` is the number of updates done so far: the 0-dim ``int64`` tensor that
:func:`lux_torch.optim.scale_by_learning_rate` keeps in its state, or a Python ``int``.
Every schedule is made of tensor operations only (``torch.clamp``, ``torch.where``, ...):
no ``.item()`` and no Python branch on a tensor's value, so a schedule traces under
``torch.compile(fullgraph=True)`` and maps under ``torch.func.vmap`` (one count per ensemble
member). The value is a 0-dim ``float64`` tensor on ``count``'s device.

Pass a schedule wherever an optimizer takes a learning rate::

    opt = lux.optim.adam(lr=lux.optim.warmup_cosine_decay_schedule(0.0, 1e-3, 100, 10_000))

Example:
    >>> schedule = linear_schedule(1.0, 0.0, transition_steps=4)
    >>> [round(float(schedule(i)), 2) for i in range(6)]
    [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import torch

__all__ = [
    "Schedule",
    "constant_schedule",
    "cosine_decay_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_schedule",
    "one_cycle",
    "piecewise_constant_schedule",
    "polynomial_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
]

Count = torch.Tensor | int
Schedule = Callable[[Count], torch.Tensor]


def _as_float(count: Count) -> torch.Tensor:
    """``count`` as a 0-dim ``float64`` tensor (exact for counts below 2**53)."""
    if isinstance(count, torch.Tensor):
        return count.to(torch.float64)
    return torch.tensor(float(count), dtype=torch.float64)


def _fail(fn: str, message: str) -> ValueError:
    return ValueError(f"lux_torch.schedules.{fn}: {message}")


def _check_steps(fn: str, name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        sign = ">= 0" if minimum == 0 else f">= {minimum}"
        raise _fail(fn, f"{name} must be an int {sign}, got {value!r}")


def constant_schedule(value: float) -> Schedule:
    """The same learning rate at every step.

    Arguments:
        value: the learning rate.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> float(constant_schedule(0.1)(7))
        0.1
    """
    value = float(value)

    def schedule(count: Count) -> torch.Tensor:
        return torch.full_like(_as_float(count), value)

    return schedule


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Linear interpolation from ``init_value`` to ``end_value`` (optax's ``linear_schedule``).

    The value is ``init_value`` for the first ``transition_begin`` counts, then moves
    linearly to ``end_value`` over ``transition_steps`` counts and stays there:
    ``init + (end - init) * clamp(count - transition_begin, 0, transition_steps) /
    transition_steps``. Equal to ``torch.optim.lr_scheduler.LinearLR`` with
    ``start_factor = init / lr``, ``end_factor = end / lr``, ``total_iters = transition_steps``.

    Arguments:
        init_value: the value before the transition.
        end_value: the value after it.
        transition_steps: the length of the transition (an int >= 1).
        transition_begin: the count at which the transition starts (an int >= 0).

    Returns:
        A schedule.

    Example:
        >>> float(linear_schedule(0.0, 1.0, transition_steps=10)(5))
        0.5
    """
    _check_steps("linear_schedule", "transition_steps", transition_steps, 1)
    _check_steps("linear_schedule", "transition_begin", transition_begin, 0)
    init_value, end_value = float(init_value), float(end_value)

    def schedule(count: Count) -> torch.Tensor:
        t = torch.clamp(_as_float(count) - transition_begin, 0.0, float(transition_steps))
        return (init_value - end_value) * (1.0 - t / transition_steps) + end_value

    return schedule


def cosine_decay_schedule(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` (optax semantics).

    ``init * ((1 - alpha) * (0.5 * (1 + cos(pi * t / decay_steps))) ** exponent + alpha)``
    with ``t = min(count, decay_steps)``: after ``decay_steps`` the value stays at
    ``alpha * init_value``. With ``exponent = 1`` it equals
    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=decay_steps, eta_min=alpha * lr)``
    for counts up to ``decay_steps`` (torch's schedule then rises again; this one stays).

    Arguments:
        init_value: the value at count 0.
        decay_steps: the length of the decay (an int >= 1).
        alpha: the final value as a fraction of ``init_value`` (>= 0).
        exponent: the power applied to the cosine factor (> 0).

    Returns:
        A schedule.

    Example:
        >>> float(cosine_decay_schedule(1.0, decay_steps=10)(5))
        0.5
    """
    _check_steps("cosine_decay_schedule", "decay_steps", decay_steps, 1)
    if alpha < 0.0:
        raise _fail("cosine_decay_schedule", f"alpha must be >= 0, got {alpha}")
    if exponent <= 0.0:
        raise _fail("cosine_decay_schedule", f"exponent must be > 0, got {exponent}")
    init_value, alpha, exponent = float(init_value), float(alpha), float(exponent)

    def schedule(count: Count) -> torch.Tensor:
        t = torch.clamp(_as_float(count), max=float(decay_steps))
        cosine = 0.5 * (1.0 + torch.cos(math.pi * t / decay_steps))
        if exponent != 1.0:
            cosine = cosine**exponent
        return init_value * ((1.0 - alpha) * cosine + alpha)

    return schedule


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """Exponential decay ``init * decay_rate ** ((count - begin) / transition_steps)`` (optax).

    The value is ``init_value`` up to ``transition_begin``. With ``staircase=True`` the
    exponent is rounded down, so the value drops once every ``transition_steps`` counts
    (``torch.optim.lr_scheduler.StepLR``); ``transition_steps=1`` gives ``ExponentialLR``.
    ``end_value`` bounds the value: from below when ``decay_rate < 1``, from above when
    ``decay_rate > 1``.

    Arguments:
        init_value: the value at count 0.
        transition_steps: the counts per factor of ``decay_rate`` (an int >= 1).
        decay_rate: the factor (> 0).
        transition_begin: the count at which the decay starts (an int >= 0).
        staircase: decay in discrete steps.
        end_value: an optional bound on the value.

    Returns:
        A schedule.

    Example:
        >>> float(exponential_decay(1.0, transition_steps=2, decay_rate=0.5)(4))
        0.25
    """
    fn = "exponential_decay"
    _check_steps(fn, "transition_steps", transition_steps, 1)
    _check_steps(fn, "transition_begin", transition_begin, 0)
    if not decay_rate > 0.0:
        raise _fail(fn, f"decay_rate must be > 0, got {decay_rate}")
    init_value, decay_rate = float(init_value), float(decay_rate)

    def schedule(count: Count) -> torch.Tensor:
        t = _as_float(count) - transition_begin
        p = t / transition_steps
        if staircase:
            p = torch.floor(p)
        value = torch.where(t <= 0.0, init_value, init_value * torch.pow(decay_rate, p))
        if end_value is not None:
            if decay_rate < 1.0:
                value = torch.clamp(value, min=float(end_value))
            else:
                value = torch.clamp(value, max=float(end_value))
        return value

    return schedule


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warm-up to ``peak_value``, then cosine decay to ``end_value`` (optax).

    For ``count < warmup_steps`` it is ``linear_schedule(init_value, peak_value,
    warmup_steps)``; from then on ``cosine_decay_schedule(peak_value, decay_steps -
    warmup_steps, alpha=end_value / peak_value, exponent)`` evaluated at ``count -
    warmup_steps``. As in optax, ``decay_steps`` is the *total* length, warm-up included.

    Arguments:
        init_value: the value at count 0.
        peak_value: the value at the end of the warm-up.
        warmup_steps: the length of the warm-up (an int >= 0).
        decay_steps: the total length of warm-up and decay (an int > ``warmup_steps``).
        end_value: the value after ``decay_steps``.
        exponent: the power applied to the cosine factor (> 0).

    Returns:
        A schedule.

    Example:
        >>> schedule = warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=6)
        >>> [round(float(schedule(i)), 2) for i in range(7)]
        [0.0, 0.5, 1.0, 0.85, 0.5, 0.15, 0.0]
    """
    fn = "warmup_cosine_decay_schedule"
    _check_steps(fn, "warmup_steps", warmup_steps, 0)
    _check_steps(fn, "decay_steps", decay_steps, 1)
    if decay_steps <= warmup_steps:
        raise _fail(
            fn,
            f"decay_steps (the total length, warm-up included) must be > warmup_steps, got "
            f"decay_steps={decay_steps}, warmup_steps={warmup_steps}",
        )
    if exponent <= 0.0:
        raise _fail(fn, f"exponent must be > 0, got {exponent}")
    alpha = 0.0 if peak_value == 0.0 else float(end_value) / float(peak_value)
    if alpha < 0.0:
        raise _fail(fn, f"end_value / peak_value must be >= 0, got {end_value} / {peak_value}")
    decay = cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent)
    if warmup_steps == 0:
        return decay
    warmup = linear_schedule(init_value, peak_value, warmup_steps)

    def schedule(count: Count) -> torch.Tensor:
        t = _as_float(count)
        return torch.where(t < warmup_steps, warmup(t), decay(t - warmup_steps))

    return schedule


def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    """A value multiplied by ``scale`` once ``count >= boundary``, for every pair (optax).

    The value at ``count`` is ``init_value`` times the product of the scales of all
    boundaries ``<= count``; with every scale equal to ``gamma`` it is
    ``torch.optim.lr_scheduler.MultiStepLR(milestones=boundaries, gamma=gamma)``.

    Arguments:
        init_value: the value before the first boundary.
        boundaries_and_scales: ``{boundary (an int >= 0): scale (>= 0)}``.

    Returns:
        A schedule.

    Example:
        >>> schedule = piecewise_constant_schedule(1.0, {2: 0.5, 4: 0.1})
        >>> [round(float(schedule(i)), 3) for i in range(6)]
        [1.0, 1.0, 0.5, 0.5, 0.05, 0.05]
    """
    fn = "piecewise_constant_schedule"
    steps: list[tuple[int, float]] = []
    value = float(init_value)
    pairs = dict(boundaries_and_scales or {})
    for boundary, factor in pairs.items():
        _check_steps(fn, "every boundary", boundary, 0)
        if not factor >= 0.0:
            raise _fail(fn, f"scales must be >= 0, got {factor} at boundary {boundary}")
    for boundary, factor in sorted(pairs.items()):
        value *= float(factor)
        steps.append((boundary, value))
    init_value = float(init_value)

    def schedule(count: Count) -> torch.Tensor:
        t = _as_float(count)
        out = torch.full_like(t, init_value)
        for boundary, v in steps:
            out = torch.where(t >= boundary, v, out)
        return out

    return schedule


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Polynomial decay from ``init_value`` to ``end_value`` (optax's ``polynomial_schedule``).

    ``(init - end) * (1 - t / transition_steps) ** power + end`` with ``t = clamp(count -
    transition_begin, 0, transition_steps)``. With ``end_value = 0`` and
    ``transition_begin = 0`` it is ``torch.optim.lr_scheduler.PolynomialLR(total_iters=
    transition_steps, power=power)`` of a base learning rate ``init_value``.

    Arguments:
        init_value: the value before the transition.
        end_value: the value after it.
        power: the exponent (> 0; 1 is :func:`linear_schedule`).
        transition_steps: the length of the decay (an int >= 1).
        transition_begin: the count at which the decay starts (an int >= 0).

    Returns:
        A schedule.

    Example:
        >>> schedule = polynomial_schedule(1.0, 0.0, power=2.0, transition_steps=4)
        >>> [round(float(schedule(i)), 4) for i in range(6)]
        [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    fn = "polynomial_schedule"
    _check_steps(fn, "transition_steps", transition_steps, 1)
    _check_steps(fn, "transition_begin", transition_begin, 0)
    if not power > 0.0:
        raise _fail(fn, f"power must be > 0, got {power}")
    init_value, end_value, power = float(init_value), float(end_value), float(power)

    def schedule(count: Count) -> torch.Tensor:
        t = torch.clamp(_as_float(count) - transition_begin, 0.0, float(transition_steps))
        return (init_value - end_value) * (1.0 - t / transition_steps) ** power + end_value

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]`` (counted from 0
    again), and so on (optax's ``join_schedules``; ``torch.optim.lr_scheduler.SequentialLR``).

    At ``count``, with ``b`` the largest boundary ``<= count`` and ``i`` its index, the value
    is ``schedules[i + 1](count - b)``; before the first boundary ``schedules[0](count)``.

    Arguments:
        schedules: the schedules, one more than boundaries.
        boundaries: increasing counts (ints >= 0) at which the next schedule starts.

    Returns:
        A schedule.

    Example:
        >>> warm = linear_schedule(0.0, 1.0, transition_steps=2)
        >>> schedule = join_schedules([warm, exponential_decay(1.0, 1, 0.5)], [2])
        >>> [round(float(schedule(i)), 3) for i in range(5)]
        [0.0, 0.5, 1.0, 0.5, 0.25]
    """
    fn = "join_schedules"
    schedules, boundaries = list(schedules), list(boundaries)
    if len(schedules) != len(boundaries) + 1:
        raise _fail(
            fn,
            f"needs one schedule more than boundaries, got {len(schedules)} schedules and "
            f"{len(boundaries)} boundaries",
        )
    for b in boundaries:
        _check_steps(fn, "every boundary", b, 0)
    if any(a >= b for a, b in itertools.pairwise(boundaries)):
        raise _fail(fn, f"boundaries must increase, got {boundaries}")

    def schedule(count: Count) -> torch.Tensor:
        t = _as_float(count)
        out = schedules[0](t)
        for boundary, later in zip(boundaries, schedules[1:], strict=True):
            out = torch.where(t < boundary, out, later(t - boundary))
        return out

    return schedule


def warmup_constant_schedule(init_value: float, peak_value: float, warmup_steps: int) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps`` counts,
    then constant (optax's ``warmup_constant_schedule``; ``torch.optim.lr_scheduler.LinearLR
    (start_factor=init / peak, total_iters=warmup_steps)``).

    Arguments:
        init_value: the value at count 0.
        peak_value: the value from ``warmup_steps`` on.
        warmup_steps: the length of the warm-up (an int >= 1).

    Returns:
        A schedule.

    Example:
        >>> schedule = warmup_constant_schedule(0.0, 1.0, warmup_steps=4)
        >>> [round(float(schedule(i)), 2) for i in range(6)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    _check_steps("warmup_constant_schedule", "warmup_steps", warmup_steps, 1)
    return linear_schedule(init_value, peak_value, warmup_steps)


def one_cycle(
    peak_value: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cos",
    three_phase: bool = False,
) -> Schedule:
    """The 1cycle policy (Smith & Topin, 2017, arXiv:1708.07120), exactly
    ``torch.optim.lr_scheduler.OneCycleLR`` (as optax's ``cosine_onecycle_schedule``, whose
    phase boundaries differ by one step).

    With ``initial = peak / div_factor`` and ``final = initial / final_div_factor`` the
    phases are: ``initial -> peak`` over counts ``[0, pct_start * total_steps - 1]``, then
    ``peak -> final`` until ``total_steps - 1``; with ``three_phase``: ``initial -> peak``,
    ``peak -> initial`` until ``2 * pct_start * total_steps - 2``, ``initial -> final``. A
    phase from ``a`` to ``b`` at fraction ``x`` is ``b + (a - b) * (1 + cos(pi x)) / 2``
    (``anneal="cos"``) or ``a + (b - a) * x`` (``"linear"``). After ``total_steps - 1`` the
    value stays at ``final``.

    Arguments:
        peak_value: the largest value (torch's ``max_lr``).
        total_steps: the length of the cycle (an int >= 2).
        pct_start: the fraction of the cycle spent increasing, in (0, 1).
        div_factor: ``initial = peak / div_factor`` (> 0).
        final_div_factor: ``final = initial / final_div_factor`` (> 0).
        anneal: ``"cos"`` or ``"linear"``.
        three_phase: go back to ``initial`` before annealing to ``final``.

    Returns:
        A schedule.

    Example:
        >>> schedule = one_cycle(1.0, total_steps=10, div_factor=10.0)
        >>> [round(float(schedule(i)), 3) for i in (0, 2, 5, 9)]
        [0.1, 1.0, 0.611, 0.0]
    """
    fn = "one_cycle"
    _check_steps(fn, "total_steps", total_steps, 2)
    if not 0.0 < pct_start < 1.0:
        raise _fail(fn, f"pct_start must be in (0, 1), got {pct_start}")
    if not (div_factor > 0.0 and final_div_factor > 0.0):
        raise _fail(
            fn, f"div_factor and final_div_factor must be > 0, got {div_factor}, {final_div_factor}"
        )
    if anneal not in ("cos", "linear"):
        raise _fail(fn, f"anneal must be 'cos' or 'linear', got {anneal!r}")
    rise = float(pct_start * total_steps) - 1.0
    if rise == 0.0:
        raise _fail(fn, "pct_start * total_steps must not be 1 (a warm-up of zero steps)")
    initial = float(peak_value) / div_factor
    final = initial / final_div_factor
    if three_phase:
        ends = [rise, 2.0 * float(pct_start * total_steps) - 2.0, total_steps - 1.0]
        values = [initial, float(peak_value), initial, final]
    else:
        ends = [rise, total_steps - 1.0]
        values = [initial, float(peak_value), final]

    def interpolate(a: float, b: float, x: torch.Tensor) -> torch.Tensor:
        if anneal == "cos":
            return b + (a - b) / 2.0 * (torch.cos(math.pi * x) + 1.0)
        return (b - a) * x + a

    def schedule(count: Count) -> torch.Tensor:
        t = _as_float(count)
        out = torch.full_like(t, final)
        for i in reversed(range(len(ends))):
            start = ends[i - 1] if i > 0 else 0.0
            x = torch.clamp((t - start) / (ends[i] - start), 0.0, 1.0)
            phase = interpolate(values[i], values[i + 1], x)
            out = phase if i == len(ends) - 1 else torch.where(t <= ends[i], phase, out)
        return out

    return schedule
