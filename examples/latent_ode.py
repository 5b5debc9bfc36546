"""Latent ODE on noisy spirals (a small port of torchdiffeq's ``examples/latent_ode.py``).

Run:  python examples/latent_ode.py [--iters 1000] [--out latent_ode.png] [--no-progress]
      (about 45 seconds on 2 idle CPU threads; 140 s with OMP_NUM_THREADS=1 on a machine
      whose 2 cores were shared with other jobs, where 2 threads took about 10 s per step)

Clockwise and counter-clockwise spirals are observed with Gaussian noise at ``nsample``
consecutive times starting at a random point. A variational autoencoder learns them:

- an RNN encoder (``Linear`` layers in a custom :class:`lux_torch.Layer`, run backwards
  over the observations) gives the mean and log-variance of ``q(z0 | x)``;
- ``z0`` is reparameterised with standard normal noise drawn from an explicit
  ``lux_torch.random`` key and passed in with the data;
- a :class:`lux_torch.NeuralODE` evolves ``z0`` in the latent space and a ``Linear``
  decoder maps the latent trajectory back to observations;
- the ELBO (Gaussian log-likelihood with fixed noise, plus the analytic KL to ``N(0, I)``)
  is maximised with Adam through :func:`lux_torch.train_step`.

It writes a PNG with true, observed, reconstructed and extrapolated (forwards and
backwards in time, via ``dataclasses.replace`` of the ODE's times) trajectories of three
spirals, one legend below the panels, and prints the loss before and after training.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import time
from typing import Any

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

import lux_torch as lux
from lux_torch.ode import NeuralODE


def generate_spirals(
    key: torch.Tensor,
    nspiral: int = 100,
    ntotal: int = 500,
    nsample: int = 50,
    stop: float = 6 * math.pi,
    a: float = 0.0,
    b: float = 0.3,
    noise_std: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchdiffeq's ``generate_spiral2d``: ``(orig_trajs, samp_trajs, orig_ts, samp_ts,
    starts)`` with ``orig_trajs (nspiral, ntotal, 2)`` and ``samp_trajs (nspiral, nsample, 2)``."""
    orig_ts = torch.linspace(0.0, stop, ntotal)
    samp_ts = orig_ts[:nsample]
    zs_cw = stop + 1.0 - orig_ts
    rs_cw = a + b * 50.0 / zs_cw
    cw = torch.stack([rs_cw * torch.cos(zs_cw) - 5.0, rs_cw * torch.sin(zs_cw)], dim=-1)
    rs_cc = a + b * orig_ts
    cc = torch.stack([rs_cc * torch.cos(orig_ts) + 5.0, rs_cc * torch.sin(orig_ts)], dim=-1)
    k_start, k_dir, k_noise = lux.random.split(key, 3)
    starts = lux.random.randint(k_start, (nspiral,), nsample, ntotal - nsample)
    counter = lux.random.bernoulli(k_dir, 0.5, (nspiral,))
    orig_trajs = torch.where(counter[:, None, None], cc, cw)
    index = starts[:, None] + torch.arange(nsample)
    samp_trajs = torch.gather(orig_trajs, 1, index[..., None].expand(-1, -1, 2))
    samp_trajs = samp_trajs + noise_std * lux.random.normal(k_noise, samp_trajs.shape)
    return orig_trajs, samp_trajs, orig_ts, samp_ts, starts


class RecognitionRNN(lux.Layer):
    """Elman RNN run backwards over ``x (batch, time, obs_dim)``: ``(mean, logvar)`` of z0.

    ``i2h`` maps ``[x_t, h]`` to the next hidden state ``h``; ``h2o`` maps the final ``h``
    to ``[mean, logvar]``.
    """

    i2h: lux.Layer
    h2o: lux.Layer
    hidden: int
    latent_dim: int

    def __call__(self, x: torch.Tensor, ps: dict, st: dict) -> tuple[Any, dict]:
        h = x.new_zeros(x.shape[0], self.hidden)
        for i in reversed(range(x.shape[1])):
            h, _ = self.i2h(torch.cat([x[:, i], h], dim=-1), ps["i2h"], st["i2h"])
        out, _ = self.h2o(h, ps["h2o"], st["h2o"])
        return (out[:, : self.latent_dim], out[:, self.latent_dim :]), st


class LatentODE(lux.Layer):
    """``(x, eps) -> (pred_x, mean, logvar)``: encode, sample z0, solve, decode."""

    encoder: lux.Layer
    node: NeuralODE
    decoder: lux.Layer

    def __call__(self, x: Any, ps: dict, st: dict) -> tuple[Any, dict]:
        trajs, eps = x
        (mean, logvar), st_enc = self.encoder(trajs, ps["encoder"], st["encoder"])
        z0 = eps * torch.exp(0.5 * logvar) + mean
        pred_z, st_node = self.node(z0, ps["node"], st["node"])  # (time, batch, latent)
        pred_x, st_dec = self.decoder(pred_z.transpose(0, 1), ps["decoder"], st["decoder"])
        return (pred_x, mean, logvar), {"encoder": st_enc, "node": st_node, "decoder": st_dec}

    def with_times(self, t: Any) -> LatentODE:
        """The same model (same ``ps``/``st``) solved at the times ``t``."""
        return dataclasses.replace(self, node=dataclasses.replace(self.node, t=t))


def make_model(
    samp_ts: torch.Tensor, obs_dim: int = 2, latent_dim: int = 4, nhidden: int = 20, rnn: int = 25
) -> LatentODE:
    encoder = RecognitionRNN(
        lux.Linear(obs_dim + rnn, rnn, activation=torch.tanh),
        lux.Linear(rnn, 2 * latent_dim),
        hidden=rnn,
        latent_dim=latent_dim,
    )
    field = lux.Chain(
        lux.Linear(latent_dim, nhidden, activation=torch.nn.functional.elu),
        lux.Linear(nhidden, nhidden, activation=torch.nn.functional.elu),
        lux.Linear(nhidden, latent_dim),
    )
    node = NeuralODE(field, samp_ts, method="dopri5", rtol=1e-3, atol=1e-4)
    decoder = lux.Chain(
        lux.Linear(latent_dim, nhidden, activation=torch.relu), lux.Linear(nhidden, obs_dim)
    )
    return LatentODE(encoder, node, decoder)


NOISE_STD = 0.3  # the decoder's fixed observation noise, as in torchdiffeq


def elbo_loss(model: LatentODE, ps: dict, st: dict, data: Any) -> tuple[Any, dict, dict]:
    """Negative ELBO per trajectory: ``-log p(x | z0) + KL(q(z0 | x) || N(0, I))``."""
    trajs, _ = data
    (pred_x, mean, logvar), st = model(data, ps, st)
    logvar_x = 2 * math.log(NOISE_STD)
    log_px = -0.5 * (math.log(2 * math.pi) + logvar_x + (trajs - pred_x) ** 2 / NOISE_STD**2)
    kl = 0.5 * (torch.exp(logvar) + mean**2 - 1.0 - logvar)
    loss = (-log_px.sum((-2, -1)) + kl.sum(-1)).mean()
    return loss, st, {"kl": kl.sum(-1).mean().detach()}


def evaluate(model: LatentODE, trajs: torch.Tensor, ts: lux.TrainState, key: torch.Tensor) -> float:
    eps = lux.random.normal(key, (trajs.shape[0], model.encoder.latent_dim))
    with torch.no_grad():
        loss, _, _ = elbo_loss(model, ts.params, lux.test_mode(ts.states), (trajs, eps))
    return float(loss)


def plot(
    path: pathlib.Path,
    model: LatentODE,
    ts: lux.TrainState,
    orig_trajs: torch.Tensor,
    samp_trajs: torch.Tensor,
    orig_ts: torch.Tensor,
    samp_ts: torch.Tensor,
    starts: torch.Tensor,
) -> None:
    """True, observed, reconstructed and extrapolated trajectories of three spirals."""
    ps, st = ts.params, lux.test_mode(ts.states)
    span = float(samp_ts[-1])
    ts_pos = torch.linspace(0.0, 2.5 * span, 300)
    ts_neg = torch.linspace(0.0, -span, 150)
    dt = float(orig_ts[1] - orig_ts[0])
    fig = Figure(figsize=(15, 5.8))  # Agg canvas, no pyplot state
    axes = fig.subplots(1, 3)
    for ax, i in zip(axes, range(3), strict=True):
        x = samp_trajs[i : i + 1]
        with torch.no_grad():
            (mean, _), _ = model.encoder(x, ps["encoder"], st["encoder"])
            pos, _ = model.with_times(ts_pos).node(mean, ps["node"], st["node"])
            neg, _ = model.with_times(ts_neg).node(mean, ps["node"], st["node"])
            xs_pos, _ = model.decoder(pos[:, 0], ps["decoder"], st["decoder"])
            xs_neg, _ = model.decoder(neg[:, 0], ps["decoder"], st["decoder"])
        s = int(starts[i])
        lo, hi = max(0, s - int(span / dt)), min(orig_trajs.shape[1], s + int(2.5 * span / dt))
        true = orig_trajs[i, lo:hi].numpy()
        ax.plot(true[:, 0], true[:, 1], color="0.6", lw=4, alpha=0.5, label="true trajectory")
        ax.plot(xs_pos[:, 0].numpy(), xs_pos[:, 1].numpy(), "r", lw=1.5, label="learned, forward")
        # the backward extrapolation on top (dashed), so it shows even where it overlaps
        ax.plot(
            xs_neg[:, 0].numpy(),
            xs_neg[:, 1].numpy(),
            color="tab:blue",
            ls="--",
            lw=2,
            zorder=3,
            label=f"learned, backward to t = {-span:.1f}",
        )
        ax.scatter(
            x[0, :, 0].numpy(), x[0, :, 1].numpy(), s=9, c="k", zorder=4, label="observations"
        )
        ax.plot(
            *xs_pos[0].numpy(),
            "*",
            color="gold",
            mec="k",
            ms=13,
            zorder=5,
            label="decoded z0 (t = 0)",
        )
        ax.set(title=f"Spiral {i}", xlabel="x", ylabel="y", aspect="equal")
        ax.set_adjustable("datalim")
    handles, labels = axes[0].get_legend_handles_labels()
    # one legend below the panels: nothing covers the curves
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(
        f"observed over t in [0, {span:.1f}]; extrapolated forward to t = {2.5 * span:.1f} "
        f"and backward to t = {-span:.1f}"
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)


def main(
    iters: int = 1000,
    out: str | pathlib.Path = "latent_ode.png",
    progress: bool = True,
    *,
    nspiral: int = 100,
    lr: float = 1e-2,
    seed: int = 0,
) -> float:
    """Train for ``iters`` steps, write the figure to ``out``; return the final loss."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.perf_counter()
    data_key, init_key, noise_key, eval_key = lux.random.split(lux.random.key(seed), 4)
    orig_trajs, samp_trajs, orig_ts, samp_ts, starts = generate_spirals(data_key, nspiral)
    model = make_model(samp_ts)
    print(model)
    ps, st = lux.setup(init_key, model)
    ts = lux.TrainState(model, ps, st, lux.optim.adam(lr))
    latent_dim = model.encoder.latent_dim
    before = evaluate(model, samp_trajs, ts, eval_key)
    print(f"loss before training {before:.4f}")

    bar = tqdm(range(1, iters + 1), disable=not progress, desc="training", unit="step")
    for itr in bar:
        eps = lux.random.normal(lux.random.fold_in(noise_key, itr), (nspiral, latent_dim))
        ts, loss, _ = lux.train_step(elbo_loss, (samp_trajs, eps), ts)
        if itr % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.2f}", nfe=int(ts.states["node"]["stats"]["nfe"]))

    final = evaluate(model, samp_trajs, ts, eval_key)
    path = pathlib.Path(out)
    plot(path, model, ts, orig_trajs, samp_trajs, orig_ts, samp_ts, starts)
    print(
        f"final loss {final:.4f} after {iters} steps in "
        f"{time.perf_counter() - start:.1f} s; figure written to {path}"
    )
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--out", default="latent_ode.png")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args()
    main(args.iters, args.out, not args.no_progress)
