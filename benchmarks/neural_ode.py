"""torchdiffeq's ode_demo training step: lux NeuralODE vs torchdiffeq + nn.Module.

Run:  python benchmarks/neural_ode.py [--threads 2] [--rounds 15]

The model and data of torchdiffeq's ``examples/ode_demo.py``: the vector field
``Linear(2, 50) - tanh - Linear(50, 2)`` applied to ``y**3``, a batch of 20 windows of
10 time points of the spiral ``y' = (y**3) @ A``, ``dopri5`` at torchdiffeq's default
tolerances, L1 loss, RMSprop(lr=1e-3). Every timed step starts from the same weights and
optimizer state on both sides (lux reuses one pure TrainState; the torch side copies its
initial weights back and clears the optimizer state, about 0.1% of a step) and sees the
same batch, so both do exactly the same solves: training on, round-off differences made
the adaptive solver take different numbers of steps on the two sides, which swamped the
comparison. The table shows the number of vector-field evaluations, forward and
adjoint, of each side's step.

Rows:

* backprop: ``lux.train_step`` on ``NeuralODE(...)`` vs ``odeint`` + ``backward`` +
  ``torch.optim.RMSprop``;
* adjoint: the same with ``adjoint=True`` vs ``odeint_adjoint``;
* forward + backward: the NeuralODE call and ``torch.autograd.grad`` of the loss alone
  (no ``train_step``, no optimizer): the cost of ``lux_torch.ode`` itself;
* inference: the full 1000-point trajectory under ``torch.no_grad`` (the ode_demo test).

Medians of interleaved rounds (``_harness.interleaved``). Target: ratio lux / torch <= 1.0.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch
import torchdiffeq
from _harness import interleaved, parse_args, print_table, ratio_row

import lux_torch as lux
from lux_torch.ode import NeuralODE

A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])
BATCH_TIME, BATCH_SIZE, DATA_SIZE = 10, 20, 1000


def cube(y: torch.Tensor) -> torch.Tensor:
    return y**3


class ODEFunc(torch.nn.Module):
    """ode_demo's ``ODEFunc``, counting its evaluations."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 50), torch.nn.Tanh(), torch.nn.Linear(50, 2)
        )
        self.nfe = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.net(y**3)


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    t = torch.linspace(0.0, 25.0, DATA_SIZE)
    true_y0 = torch.tensor([[2.0, 0.0]])
    with torch.no_grad():
        true_y = torchdiffeq.odeint(lambda t, y: (y**3) @ A, true_y0, t, method="dopri5")
    s = lux.random.permutation(lux.random.key(0), DATA_SIZE - BATCH_TIME)[:BATCH_SIZE]
    batch_y0 = true_y[s]
    batch_y = torch.stack([true_y[s + i] for i in range(BATCH_TIME)])
    return t, true_y0, batch_y0, batch_y


def _lux(adjoint: bool, t: torch.Tensor) -> tuple[NeuralODE, Any, Any]:
    init = {
        "weight_init": functools.partial(lux.init.normal, std=0.1),
        "bias_init": lux.init.zeros,
    }
    field = lux.Chain(
        cube, lux.Linear(2, 50, activation=torch.tanh, **init), lux.Linear(50, 2, **init)
    )
    node = NeuralODE(field, t[:BATCH_TIME], adjoint=adjoint)
    ps, st = lux.setup(0, node)
    return node, ps, st


def _torch(ps: Any) -> ODEFunc:
    func = ODEFunc()
    with torch.no_grad():
        for i, name in ((0, "layer_2"), (2, "layer_3")):  # layer_1 is cube
            func.net[i].weight.copy_(ps["vector_field"][name]["weight"])
            func.net[i].bias.copy_(ps["vector_field"][name]["bias"])
    return func


def _cases(
    adjoint: bool, data: tuple[torch.Tensor, ...]
) -> tuple[dict[str, Callable[[], Any]], Callable[[], tuple[int, int]]]:
    t, _, batch_y0, batch_y = data
    node, ps, st = _lux(adjoint, t)
    func = _torch(ps)
    opt = torch.optim.RMSprop(func.parameters(), lr=1e-3)
    solve = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    batch_t = t[:BATCH_TIME]
    loss_fn = lux.losses.L1Loss()
    first = lux.TrainState(node, ps, st, lux.optim.rmsprop(1e-3))
    box = [first]  # the state after the last step
    start = [p.detach().clone() for p in func.parameters()]

    def torch_step() -> None:
        # every call is the first step from the same weights (as lux's below, which
        # reuses one TrainState): both sides always do the same solves
        with torch.no_grad():
            for p, p0 in zip(func.parameters(), start, strict=True):
                p.copy_(p0)
        opt.state.clear()
        func.nfe = 0
        opt.zero_grad(set_to_none=True)
        pred = solve(func, batch_y0, batch_t)
        torch.mean(torch.abs(pred - batch_y)).backward()
        opt.step()

    def lux_step() -> None:
        box[0], _, _ = lux.train_step(loss_fn, (batch_y0, batch_y), first)

    def nfe() -> tuple[int, int]:  # forward and backward (adjoint) evaluations
        stats = box[0].states["stats"]
        return int(stats["nfe"]) + int(stats["nfe_adjoint"]), func.nfe

    return {"torch": torch_step, "lux": lux_step}, nfe


def _gradients(data: tuple[torch.Tensor, ...]) -> dict[str, Callable[[], Any]]:
    t, _, batch_y0, batch_y = data
    node, ps, st = _lux(False, t)
    ps = lux.tree.map(lambda p: p.requires_grad_(True), ps)
    leaves = lux.tree.leaves(ps)
    func = _torch(ps)
    params = list(func.parameters())
    batch_t = t[:BATCH_TIME]

    def torch_grad() -> None:
        pred = torchdiffeq.odeint(func, batch_y0, batch_t)
        torch.autograd.grad(torch.mean(torch.abs(pred - batch_y)), params)

    def lux_grad() -> None:
        pred, _ = node(batch_y0, ps, st)
        torch.autograd.grad(torch.mean(torch.abs(pred - batch_y)), leaves)

    return {"torch": torch_grad, "lux": lux_grad}


def _inference(data: tuple[torch.Tensor, ...]) -> dict[str, Callable[[], Any]]:
    t, true_y0, _, _ = data
    node, ps, st = _lux(False, t)
    full = dataclasses.replace(node, t=t)
    func = _torch(ps)

    def torch_solve() -> None:
        with torch.no_grad():
            torchdiffeq.odeint(func, true_y0, t)

    def lux_solve() -> None:
        with torch.no_grad():
            full(true_y0, ps, st)

    return {"torch": torch_solve, "lux": lux_solve}


def main() -> None:
    args = parse_args(__doc__, rounds=15, number=5)
    data = _data()
    rows = []
    for adjoint in (False, True):
        candidates, nfe = _cases(adjoint, data)
        times = interleaved(candidates, rounds=args.rounds, number=args.number, warmup=3)
        ours, theirs = nfe()
        label = f"{'adjoint' if adjoint else 'backprop'} step (nfe {ours} / {theirs})"
        rows.append(ratio_row(label, times, "torch", "lux"))
    times = interleaved(_gradients(data), rounds=args.rounds, number=args.number, warmup=3)
    rows.append(ratio_row("forward + backward only", times, "torch", "lux"))
    times = interleaved(_inference(data), rounds=args.rounds, number=1, warmup=2)
    rows.append(ratio_row("inference, 1000 points", times, "torch", "lux"))
    print_table(
        "ode_demo NeuralODE (dopri5, rtol=1e-7, atol=1e-9)",
        rows,
        ["case", "torchdiffeq + nn.Module µs", "lux µs", "lux / torch"],
    )


if __name__ == "__main__":
    main()
