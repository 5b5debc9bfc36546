"""Quickstart: fit a small MLP to y = sin(3x) with explicit parameters.

Run:  python examples/quickstart.py [--steps 1500] [--out quickstart.png] [--no-progress]
      (about 10 s on 2 idle CPU threads)

Shows the whole lux_torch workflow: describe a model, create its parameters and state
with an explicit key, take gradients with ``torch.func.grad`` over the parameter tree,
update with the pure optimizer ``lux.optim.adam``, switch to test mode, and print
the model and a summary table. A tqdm bar shows the loss; the PNG has the loss curve and
the fit against ``sin(3x)``.
"""

from __future__ import annotations

import argparse
import time

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

import lux_torch as lux


def main(
    steps: int = 1500, lr: float = 3e-3, out: str = "quickstart.png", progress: bool = True
) -> float:
    """Train for ``steps`` full-batch steps, write the figure to ``out``; return the test loss."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = lux.Chain(
        lux.Linear(1, 64, activation=torch.tanh),
        lux.Dropout(0.05),
        lux.Linear(64, 64, activation=torch.tanh),
        lux.Linear(64, 1),
    )
    print(model)

    key = lux.random.key(0)
    data_key, init_key = lux.random.split(key)
    x = lux.random.uniform(data_key, (256, 1), low=-1.0, high=1.0)
    y = torch.sin(3 * x)
    ps, st = lux.setup(init_key, model)

    mse = lux.losses.MSELoss()
    optimizer = lux.optim.adam(lr=lr)
    opt_state = optimizer.init(ps)

    def loss_fn(ps, st):
        pred, st = model(x, ps, st)
        return mse(pred, y), st

    def step(ps, st, opt_state):
        grads, (loss, st) = torch.func.grad_and_value(loss_fn, has_aux=True)(ps, st)
        updates, opt_state = optimizer.update(grads, opt_state, ps)
        return lux.optim.apply_updates(ps, updates), st, opt_state, loss

    start = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(range(1, steps + 1), disable=not progress, desc="quickstart", unit="step")
    for t in bar:
        ps, st, opt_state, loss = step(ps, st, opt_state)
        losses.append(loss.item())
        if t % 300 == 0 or t == 1:
            bar.write(f"step {t:5d}   loss {losses[-1]:.5f}")  # printed above the bar
        if t % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    bar.close()

    test_loss, _ = loss_fn(ps, lux.test_mode(st))  # dropout off
    print(f"final test-mode loss {test_loss.item():.5f} in {time.perf_counter() - start:.1f} s")
    print(lux.summary(model, x[:4], ps, lux.test_mode(st)))
    _plot(out, model, ps, lux.test_mode(st), losses, (x, y))
    print(f"figure written to {out}")
    return test_loss.item()


def _plot(
    out: str,
    model: lux.Layer,
    ps: dict,
    st: dict,
    losses: list[float],
    data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Loss per step (training mode, with dropout) and the test-mode fit on a grid."""
    fig = Figure(figsize=(11, 4))  # Agg canvas, no pyplot state
    ax_loss, ax_fit = fig.subplots(1, 2)
    ax_loss.semilogy(range(1, len(losses) + 1), losses, lw=0.8)
    ax_loss.set(xlabel="step", ylabel="MSE (training mode)", title="loss")
    grid = torch.linspace(-1, 1, 400).unsqueeze(1)
    with torch.no_grad():
        pred, _ = model(grid, ps, st)
    x, y = data
    ax_fit.scatter(x.squeeze(1), y.squeeze(1), s=6, alpha=0.5, label="training data")
    ax_fit.plot(grid.squeeze(1), torch.sin(3 * grid).squeeze(1), "k--", lw=1, label="sin(3x)")
    ax_fit.plot(grid.squeeze(1), pred.squeeze(1), "r", lw=2, label="MLP (test mode)")
    ax_fit.set(xlabel="x", ylabel="y", title="fit")
    ax_fit.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="full-batch steps")
    parser.add_argument("--out", default="quickstart.png", help="output PNG")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args()
    main(steps=args.steps, out=args.out, progress=not args.no_progress)
