"""A physics-informed neural network (PINN) for Lux's "Training a PINN on 2D PDE" problem.

Run:  python examples/pinn_poisson.py [--steps 3000] [--eager] [--out pinn_poisson.png]
      (3000 steps reach a relative L2 error of about 0.11 at t = 1, from 1.0 at the start;
      one-off compilation about 25 s, then about 16 ms a step on 2 CPU threads,
      benchmarks/pinn.py)

The problem (Lux's PINN2DPDE tutorial, from NeuralPDE's GPU showcase): the heat equation in
two space dimensions, a Poisson problem ``u_xx + u_yy = f`` at every time with ``f = u_t``,

    u_t = u_xx + u_yy   on  x, y, t in [0, 2],

with initial and boundary values taken from its analytic solution

    u(x, y, t) = exp(x + y) * cos(x + y + 4 t).

Lux writes it with three networks and first derivatives; here one network ``u(x, y, t)``
is differentiated twice with respect to its *input* inside the loss
(``vmap(jacfwd(jacrev(u)))`` gives the gradient and the Hessian of every collocation point in
one pass), and ``lux.train_step(..., compile=True)`` differentiates that loss again with
respect to the parameters and compiles the whole step (forward, nested derivatives,
backward and Adam update) into one graph. Collocation points are redrawn every step from
``lux.random`` keys, with fixed shapes, so the step compiles once. The figure shows the
loss, and the network, the analytic solution and their difference at ``t = 1``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from tqdm import tqdm

import lux_torch as lux

LOW, HIGH = 0.0, 2.0  # x, y and t all lie in [0, 2]


def analytic(xyt: torch.Tensor) -> torch.Tensor:
    """``u(x, y, t) = exp(x + y) cos(x + y + 4t)`` at points ``(n, 3)``; shape ``(n,)``."""
    s = xyt[:, 0] + xyt[:, 1]
    return torch.exp(s) * torch.cos(s + 4 * xyt[:, 2])


def sample(key: torch.Tensor, n_interior: int, n_boundary: int) -> dict[str, torch.Tensor]:
    """Interior collocation points ``(n_interior, 3)`` and points on the initial plane and
    the four side faces ``(n_boundary, 3)`` with their analytic values."""
    k_in, k_bd, k_face = lux.random.split(key, 3)
    interior = lux.random.uniform(k_in, (n_interior, 3), low=LOW, high=HIGH)
    boundary = lux.random.uniform(k_bd, (n_boundary, 3), low=LOW, high=HIGH)
    face = lux.random.randint(k_face, (n_boundary,), 0, 5)  # t = 0, x = 0/2, y = 0/2
    rows = torch.arange(n_boundary)
    axis = torch.where(face == 0, 2, (face - 1) // 2)
    value = torch.where((face == 0) | (face % 2 == 1), LOW, HIGH)
    boundary = boundary.index_put((rows, axis), value.to(boundary.dtype))
    return {"interior": interior, "boundary": boundary, "u_boundary": analytic(boundary)}


def pinn_loss(model: lux.Layer, ps: Any, st: Any, data: dict[str, torch.Tensor]) -> Any:
    """Mean squared PDE residual ``u_t - u_xx - u_yy`` plus the boundary misfit."""

    def u(point: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = model(point.unsqueeze(0), ps, st)[0]
        return out.squeeze()

    def grad_twice(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.func.jacrev(u)(point)
        return g, g

    hess, grad = torch.func.vmap(torch.func.jacfwd(grad_twice, has_aux=True))(data["interior"])
    residual = grad[:, 2] - hess[:, 0, 0] - hess[:, 1, 1]
    fit = model(data["boundary"], ps, st)[0].squeeze(-1) - data["u_boundary"]
    pde, bc = (residual**2).mean(), (fit**2).mean()
    return pde + bc, st, {"pde": pde.detach(), "bc": bc.detach()}


def grid_error(model: lux.Layer, ps: Any, st: Any, t: float = 1.0, n: int = 64) -> Any:
    """Network, analytic solution and absolute error on an ``n x n`` grid at time ``t``."""
    axis = torch.linspace(LOW, HIGH, n)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.full((n * n,), t)], dim=1)
    with torch.no_grad():
        pred = model(points, ps, st)[0].reshape(n, n)
    exact = analytic(points).reshape(n, n)
    return pred, exact, (pred - exact).abs()


def main(
    steps: int = 3000,
    compile: bool = True,
    out: str = "pinn_poisson.png",
    progress: bool = True,
    *,
    n_interior: int = 256,
    n_boundary: int = 128,
    lr: float = 1e-2,
    seed: int = 0,
) -> float:
    """Train for ``steps`` steps, save the figure to ``out``; return the relative L2 error
    of the network against the analytic solution at ``t = 1``."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    width = 32
    model = lux.Chain(
        lux.Linear(3, width, activation=torch.tanh),
        lux.Linear(width, width, activation=torch.tanh),
        lux.Linear(width, width, activation=torch.tanh),
        lux.Linear(width, 1),
    )
    print(model)
    init_key, data_key = lux.random.split(lux.random.key(seed))
    ps, st = lux.setup(init_key, model)
    ts = lux.TrainState(model, ps, st, lux.optim.adam(lr))

    def relative_error(ts: lux.TrainState) -> float:
        _, exact, err = grid_error(ts.model, ts.params, ts.states)
        return (err.norm() / exact.norm()).item()

    print(f"initial relative L2 error at t=1: {relative_error(ts):.4f}")
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(steps), disable=not progress, desc="pinn_poisson", unit="step")
    for i in bar:
        data = sample(lux.random.fold_in(data_key, i), n_interior, n_boundary)
        ts, loss, stats = lux.train_step(pinn_loss, data, ts, compile=compile)
        losses.append(loss.item())
        if i % 50 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3g}", pde=f"{stats['pde'].item():.3g}")
    elapsed = time.perf_counter() - start
    error = relative_error(ts)
    _plot(out, ts, losses)
    print(
        f"final loss {losses[-1]:.4g} (first {losses[0]:.4g}), relative L2 error at t=1: "
        f"{error:.4f} after {steps} steps in {elapsed:.1f} s; figure saved to {out}"
    )
    return error


def _plot(out: str, ts: lux.TrainState, losses: list[float]) -> None:
    pred, exact, err = (v.numpy() for v in grid_error(ts.model, ts.params, ts.states))
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    axes[0].semilogy(range(1, len(losses) + 1), losses, lw=0.6)
    axes[0].set(xlabel="step", ylabel="loss", title="training loss")
    extent = (LOW, HIGH, LOW, HIGH)
    vmin, vmax = float(exact.min()), float(exact.max())
    panels = [(pred, "network u(x, y, 1)"), (exact, "analytic u(x, y, 1)")]
    for ax, (values, title) in zip(axes[1:3], panels, strict=True):
        image = ax.imshow(values, origin="lower", extent=extent, vmin=vmin, vmax=vmax)
        ax.set(xlabel="x", ylabel="y", title=title)
        fig.colorbar(image, ax=ax)
    image = axes[3].imshow(err, origin="lower", extent=extent, cmap="magma")
    axes[3].set(xlabel="x", ylabel="y", title="|network - analytic|")
    fig.colorbar(image, ax=axes[3])
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eager", action="store_true", help="do not compile the step")
    parser.add_argument("--out", default="pinn_poisson.png")
    args = parser.parse_args()
    main(args.steps, compile=not args.eager, out=args.out)
