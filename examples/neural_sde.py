"""Neural SDE: learn the drift and diffusion of an Ornstein-Uhlenbeck process from sample paths.

Run:  python examples/neural_sde.py          (about half a minute on 2 CPU threads)

The data are 2000 paths of ``dy = theta (mu - y) dt + sigma dW`` (``theta = 1.5``,
``mu = 1``, ``sigma = 0.5``) from ``y(0) = 0``, sampled exactly at 21 times in ``[0, 2]``
(the OU transition is Gaussian). A :class:`lux_torch.sciml.sde.NeuralSDE` with a small MLP
drift and a positive (softplus) MLP diffusion is fitted by moment matching: at every step it
simulates 256 paths and the loss compares their mean and standard deviation over time with
those of the data (no latent SDE, no likelihood). It shows the lux_torch workflow for neural
SDEs:

- drift and diffusion are ordinary layers; the SDE layer's parameters are
  ``ps["drift"]`` and ``ps["diffusion"]``;
- the Brownian motion comes from ``st["key"]``: :func:`lux_torch.train_step` threads the
  returned state, so every step simulates fresh paths, and rerunning the script gives the
  same result (no global RNG anywhere, the data are drawn with ``lux_torch.random`` too);
- ``dataclasses.replace(sde, t=...)`` reuses ``ps`` on a finer time grid for the figure.

It writes a PNG with the data and model moments, sample paths, and the learned drift and
diffusion against the true ones, and prints the moment loss before and after training.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from tqdm import tqdm

import lux_torch as lux
from lux_torch.sciml.sde import NeuralSDE

THETA, MU, SIGMA = 1.5, 1.0, 0.5
T1, N_TIMES = 2.0, 21


def ou_paths(key: torch.Tensor, n: int, t: torch.Tensor) -> torch.Tensor:
    """``n`` exact OU paths from ``y(0) = 0`` at the times ``t``: ``(len(t), n, 1)``."""
    noise = lux.random.normal(key, (len(t) - 1, n, 1))
    ys = [torch.zeros(n, 1)]
    for k, dt in enumerate(torch.diff(t).tolist()):
        decay = torch.exp(torch.tensor(-THETA * dt))
        std = SIGMA * torch.sqrt((1 - decay**2) / (2 * THETA))
        ys.append(MU + (ys[-1] - MU) * decay + std * noise[k])
    return torch.stack(ys)


def make_model(t: torch.Tensor, hidden: int = 16) -> NeuralSDE:
    drift = lux.Chain(lux.Linear(1, hidden, activation=torch.tanh), lux.Linear(hidden, 1))
    diffusion = lux.Chain(
        lux.Linear(1, hidden, activation=torch.tanh), lux.Linear(hidden, 1), F.softplus
    )
    return NeuralSDE(drift, diffusion, t, method="euler", dt=0.05)


def moment_loss(
    model: NeuralSDE, ps: dict[str, Any], st: dict[str, Any], batch: Any
) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
    """The loss for :func:`lux_torch.train_step`: squared errors of mean and std over time."""
    y0, mean, std = batch
    ys, st = model(y0, ps, st)
    loss = ((ys.mean(1) - mean) ** 2).mean() + ((ys.std(1) - std) ** 2).mean()
    return loss, st, {}


def evaluate(model: NeuralSDE, ts: lux.TrainState, batch: Any, key: torch.Tensor) -> float:
    """The moment loss on 2000 paths drawn from ``key`` (the same paths before and after)."""
    y0 = torch.zeros(2000, 1)
    with torch.no_grad():
        loss, _, _ = moment_loss(model, ts.params, {**ts.states, "key": key}, (y0, *batch[1:]))
    return float(loss)


def plot(path: pathlib.Path, data: torch.Tensor, model: NeuralSDE, ts: lux.TrainState) -> None:
    """Data and model paths and moments; learned drift and diffusion against the truth."""
    t = torch.linspace(0.0, T1, 81)
    fine = dataclasses.replace(model, t=tuple(t.tolist()))
    with torch.no_grad():
        ys, _ = fine(torch.zeros(2000, 1), ts.params, ts.states)
        y = torch.linspace(-0.5, 2.0, 101)[:, None]
        f, _ = model.drift(y, ts.params["drift"], ts.states["drift"])
        g, _ = model.diffusion(y, ts.params["diffusion"], ts.states["diffusion"])
    data_t = torch.linspace(0.0, T1, N_TIMES)

    fig = Figure(figsize=(15, 5))  # Agg canvas, no pyplot state
    ax_paths, ax_drift, ax_diffusion = fig.subplots(1, 3)
    for i in range(8):
        ax_paths.plot(data_t, data[:, i, 0], color="tab:blue", alpha=0.3, lw=0.8)
        ax_paths.plot(t, ys[:, i, 0], color="tab:orange", alpha=0.3, lw=0.8)
    for series, times, color, label in (
        (data, data_t, "tab:blue", "data"),
        (ys, t, "tab:orange", "model"),
    ):
        mean, std = series.mean(1)[:, 0], series.std(1)[:, 0]
        ax_paths.plot(times, mean, color=color, lw=2, label=f"{label} mean ± 2 std")
        ax_paths.fill_between(times, mean - 2 * std, mean + 2 * std, color=color, alpha=0.15)
    ax_paths.set(title="Sample paths and moments", xlabel="t", ylabel="y")
    ax_paths.legend(loc="lower right")
    ax_drift.plot(y, THETA * (MU - y), "k--", label="true θ(μ - y)")
    ax_drift.plot(y, f, color="tab:orange", label="learned")
    ax_drift.set(title="Drift", xlabel="y")
    ax_drift.legend()
    ax_diffusion.axhline(SIGMA, color="k", ls="--", label="true σ")
    ax_diffusion.plot(y, g, color="tab:orange", label="learned")
    ax_diffusion.set(title="Diffusion", xlabel="y", ylim=(0.0, 1.0))
    ax_diffusion.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(
    iters: int = 400,
    out: str | pathlib.Path = "neural_sde.png",
    progress: bool = True,
    *,
    batch_size: int = 256,
    lr: float = 2e-2,
    seed: int = 0,
) -> float:
    """Train for ``iters`` steps, write the figure to ``out``; return the final moment loss."""
    torch.set_num_threads(1)  # tiny tensors: extra threads only add sync overhead
    start = time.perf_counter()
    init_key, data_key, eval_key = lux.random.split(lux.random.key(seed), 3)
    t = torch.linspace(0.0, T1, N_TIMES)
    data = ou_paths(data_key, 2000, t)
    batch = (torch.zeros(batch_size, 1), data.mean(1), data.std(1))

    model = make_model(t)
    print(model)
    ps, st = lux.setup(init_key, model)
    ts = lux.TrainState(model, ps, st, lux.optim.adam(lr))
    before = evaluate(model, ts, batch, eval_key)
    print(f"moment loss before training {before:.4f}")
    bar = tqdm(range(1, iters + 1), disable=not progress, desc="training", unit="step")
    for itr in bar:
        ts, loss, _ = lux.train_step(moment_loss, batch, ts)
        if itr % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}")

    final = evaluate(model, ts, batch, eval_key)
    path = pathlib.Path(out)
    plot(path, data, model, ts)
    print(
        f"final moment loss {final:.4f} after {iters} steps in "
        f"{time.perf_counter() - start:.1f} s; figure written to {path}"
    )
    return final


if __name__ == "__main__":
    main()
