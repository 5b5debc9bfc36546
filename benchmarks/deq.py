"""A DEQ training step: lux ``DEQ`` vs torchdeq (or a hand-written nn.Module DEQ).

Run:  python benchmarks/deq.py [--threads 2] [--rounds 15] [--iters 20]

The equilibrium layer ``z* = tanh(W z* + b + x)`` (width 64, batch 64) with a linear
readout and an MSE loss, Anderson acceleration (``m = 5``) forward and backward
(implicit gradient), Adam. Both sides start from the same weights and do exactly
``--iters`` solver iterations forward and backward (tolerance 0: neither stops early), so
the table compares the cost of the same work; it reports the iterations each side did.

The reference is torchdeq 0.1.0 (``get_deq(f_solver="anderson", b_solver="anderson",
ift=True)``) when it is importable (it is not a dependency of lux_torch: ``pip install
torchdeq``, or put it on ``PYTHONPATH``); otherwise a hand-written ``nn.Module`` DEQ that
solves with :func:`lux_torch.sciml.fixed_point.solve` and backpropagates with a tensor
hook solving the adjoint fixed point (torchdeq's ``hook_ift`` design).

Rows: the full training step (``lux.train_step`` vs forward + ``backward`` +
``torch.optim.Adam``), forward + backward alone, and inference (``torch.no_grad``).
Medians of interleaved rounds (``_harness.interleaved``). Target: ratio lux / torch <= 1.0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from _harness import interleaved, parse_args, print_table, ratio_row

import lux_torch as lux
from lux_torch.sciml.deq import DEQ
from lux_torch.sciml.fixed_point import solve

WIDTH, BATCH, M = 64, 64, 5


class Cell(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(WIDTH, WIDTH)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(z) + x)


class HandDEQ(torch.nn.Module):
    """The fallback reference: solve without grad, one differentiable step, and a hook
    that replaces the step's incoming gradient by the adjoint fixed point's solution."""

    def __init__(self, cell: Cell, iters: int) -> None:
        super().__init__()
        self.cell, self.iters = cell, iters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = solve(lambda z: self.cell(z, x), torch.zeros_like(x), solver="anderson",
                      max_iter=self.iters, atol=1e-30, rtol=0.0, options={"m": M}).z  # fmt: skip
        out = self.cell(z, x)
        if out.requires_grad:

            def hook(v: torch.Tensor) -> torch.Tensor:
                z_leaf = z.detach().requires_grad_()
                with torch.enable_grad():  # a separate graph, for products with df/dz
                    f_z = self.cell(z_leaf, x.detach())

                def adjoint(g: torch.Tensor) -> torch.Tensor:
                    return torch.autograd.grad(f_z, z_leaf, g, retain_graph=True)[0] + v

                return solve(adjoint, v, solver="anderson", max_iter=self.iters, atol=1e-30,
                             rtol=0.0, options={"m": M}).z  # fmt: skip

            out.register_hook(hook)
        return out


class TorchDEQ(torch.nn.Module):
    """torchdeq's DEQ around the same cell."""

    def __init__(self, cell: Cell, iters: int) -> None:
        super().__init__()
        from torchdeq import get_deq

        self.cell = cell
        self.deq = get_deq(f_solver="anderson", b_solver="anderson", f_max_iter=iters,
                           b_max_iter=iters, f_tol=0.0, b_tol=0.0, ift=True)  # fmt: skip
        self.nstep = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zs, info = self.deq(lambda z: self.cell(z, x), torch.zeros_like(x),
                            solver_kwargs={"m": M})  # fmt: skip
        self.nstep = int(info["nstep"].max())
        return zs[-1]  # type: ignore[no-any-return]


def _reference(cell: Cell, iters: int) -> tuple[str, torch.nn.Module]:
    try:
        return "torchdeq", TorchDEQ(cell, iters)
    except ImportError:
        return "nn.Module DEQ", HandDEQ(cell, iters)


def main() -> None:
    args = parse_args(__doc__, rounds=15, iters=20)
    x = lux.random.normal(lux.random.key(1), (BATCH, WIDTH))
    y = lux.random.normal(lux.random.key(2), (BATCH, 1))
    cell = lux.Chain(lux.Parallel(torch.add, lux.Linear(WIDTH, WIDTH), lux.NoOpLayer()),
                     torch.tanh)  # fmt: skip
    deq = DEQ(cell, solver="anderson", solver_options={"m": M}, max_iter=args.iters,
              atol=1e-30, rtol=0.0, on_nonconvergence="ignore")  # fmt: skip
    model = lux.Chain(deq=deq, readout=lux.Linear(WIDTH, 1))
    ps, st = lux.setup(0, model)
    ps["deq"]["model"]["layer_1"]["layer_1"]["weight"] *= 0.5  # a contraction

    torch_cell, readout = Cell(), torch.nn.Linear(WIDTH, 1)
    with torch.no_grad():
        torch_cell.linear.weight.copy_(ps["deq"]["model"]["layer_1"]["layer_1"]["weight"])
        torch_cell.linear.bias.copy_(ps["deq"]["model"]["layer_1"]["layer_1"]["bias"])
        readout.weight.copy_(ps["readout"]["weight"])
        readout.bias.copy_(ps["readout"]["bias"])
    name, reference = _reference(torch_cell, args.iters)
    net = torch.nn.Sequential(reference, readout)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = [p.detach().clone() for p in net.parameters()]
    ts0 = lux.TrainState(model, ps, st, lux.optim.adam(1e-3))
    loss_fn = lux.losses.MSELoss()
    seen: dict[str, Any] = {}

    def lux_step() -> None:
        lux.train_step(loss_fn, (x, y), ts0)  # always the first step

    def torch_step() -> None:
        with torch.no_grad():
            for p, p0 in zip(net.parameters(), start, strict=True):
                p.copy_(p0)
        opt.state.clear()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()

    leaves = [p.detach().requires_grad_() for p in lux.tree.leaves(ps)]
    ps_grad = lux.tree.unflatten(lux.tree.flatten(ps)[1], leaves)

    def lux_grad() -> None:
        out, new_st = model(x, ps_grad, st)
        torch.autograd.grad(torch.nn.functional.mse_loss(out, y), leaves)
        seen["lux"] = new_st["deq"]["stats"]

    def torch_grad() -> None:
        torch.autograd.grad(torch.nn.functional.mse_loss(net(x), y), list(net.parameters()))

    def lux_infer() -> None:
        with torch.no_grad():
            model(x, ps, st)

    def torch_infer() -> None:
        with torch.no_grad():
            net(x)

    # the same work: the gradients agree (both converge to the same fixed point)
    lux_grads = torch.autograd.grad(
        torch.nn.functional.mse_loss(model(x, ps_grad, st)[0], y), leaves
    )
    torch_grads = torch.autograd.grad(
        torch.nn.functional.mse_loss(net(x), y), list(net.parameters())
    )
    gap = max(float((a - b).abs().max()) for a, b in zip(lux_grads, torch_grads, strict=True))
    rows = []
    cases: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
        ("training step", lux_step, torch_step),
        ("forward + backward", lux_grad, torch_grad),
        ("inference", lux_infer, torch_infer),
    ]
    for label, lux_fn, torch_fn in cases:
        t = interleaved({"torch": torch_fn, "lux": lux_fn}, rounds=args.rounds, number=5,
                        warmup=3)  # fmt: skip
        rows.append(ratio_row(label, t, "torch", "lux"))
    stats = seen["lux"]
    torch_steps = getattr(reference, "nstep", args.iters)
    print_table(
        f"DEQ training step (width {WIDTH}, batch {BATCH}, anderson m={M}), lux vs {name}",
        rows,
        ["case", f"{name} µs", "lux µs", "lux / torch"],
    )
    print(
        f"solver iterations: lux forward {int(stats['iterations'])}, backward "
        f"{int(stats['backward_iterations'])}; {name} forward {torch_steps}, backward "
        f"{args.iters} (tolerance 0: max_iter on both sides); largest gradient difference "
        f"{gap:.1e}"
    )


if __name__ == "__main__":
    main()
