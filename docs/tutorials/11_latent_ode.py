# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Latent ODE: a variational autoencoder with an ODE decoder
#
# A latent ODE (Rubanova et al. 2019; Chen et al. 2018, section 5) encodes an irregular
# time series into the initial state `z0` of an ODE in a latent space; solving that ODE
# forwards *and backwards* in time and decoding gives reconstructions and extrapolations.
# This is a shortened port of torchdiffeq's `examples/latent_ode.py` on noisy spirals; the
# full version, `examples/latent_ode.py` in the repository, trains 1000 steps (under a
# minute).
#
# It shows a custom `lux.Layer` that composes an encoder, a `lux.NeuralODE` and a decoder;
# explicit randomness (the reparameterisation noise is drawn from `lux.random` keys and
# passed in with the data); the ELBO as a `train_step` loss; and the same trained `ps`
# solved on new time grids with `dataclasses.replace`.

# %%
import dataclasses
import math

import matplotlib.pyplot as plt
import torch
from IPython.display import display

import lux_torch as lux

torch.set_num_threads(1)

# %% [markdown]
# ## Data: clockwise and counter-clockwise spirals
#
# Each of 100 spirals is observed at 50 consecutive times from a random start, with
# Gaussian noise (torchdiffeq's `generate_spiral2d`). Every random draw comes from an
# explicit key.


# %%
def generate_spirals(
    key, nspiral=100, ntotal=500, nsample=50, stop=6 * math.pi, noise=0.1
):
    orig_ts = torch.linspace(0.0, stop, ntotal)
    zs_cw = stop + 1.0 - orig_ts
    rs_cw = 0.3 * 50.0 / zs_cw
    cw = torch.stack(
        [rs_cw * torch.cos(zs_cw) - 5.0, rs_cw * torch.sin(zs_cw)], dim=-1
    )
    rs_cc = 0.3 * orig_ts
    cc = torch.stack(
        [rs_cc * torch.cos(orig_ts) + 5.0, rs_cc * torch.sin(orig_ts)], dim=-1
    )
    k_start, k_dir, k_noise = lux.random.split(key, 3)
    starts = lux.random.randint(k_start, (nspiral,), nsample, ntotal - nsample)
    counter = lux.random.bernoulli(k_dir, 0.5, (nspiral,))
    orig_trajs = torch.where(
        counter[:, None, None], cc, cw
    )  # (nspiral, ntotal, 2)
    index = starts[:, None] + torch.arange(nsample)
    samp_trajs = torch.gather(
        orig_trajs, 1, index[..., None].expand(-1, -1, 2)
    )
    samp_trajs = samp_trajs + noise * lux.random.normal(
        k_noise, samp_trajs.shape
    )
    return orig_trajs, samp_trajs, orig_ts, orig_ts[:nsample], starts


data_key, init_key, noise_key, eval_key = lux.random.split(
    lux.random.key(0), 4
)
orig_trajs, samp_trajs, orig_ts, samp_ts, starts = generate_spirals(data_key)
print(samp_trajs.shape)  # (spiral, time, 2)

# %% [markdown]
# ## The model
#
# The encoder is an Elman RNN run backwards over the observations, written as a small
# custom layer around two `Linear`s; it returns the mean and log-variance of `q(z0 | x)`.
# `LatentODE` samples `z0 = mean + exp(logvar / 2) * eps` with `eps` given as data,
# solves the latent ODE at the observation times and decodes.


# %%
class RecognitionRNN(lux.Layer):
    i2h: lux.Layer
    h2o: lux.Layer
    hidden: int
    latent_dim: int

    def __call__(self, x, ps, st):
        h = x.new_zeros(x.shape[0], self.hidden)
        for i in reversed(range(x.shape[1])):
            h, _ = self.i2h(
                torch.cat([x[:, i], h], dim=-1), ps["i2h"], st["i2h"]
            )
        out, _ = self.h2o(h, ps["h2o"], st["h2o"])
        return (out[:, : self.latent_dim], out[:, self.latent_dim :]), st


class LatentODE(lux.Layer):
    encoder: lux.Layer
    node: lux.NeuralODE
    decoder: lux.Layer

    def __call__(self, x, ps, st):
        trajs, eps = x
        (mean, logvar), st_enc = self.encoder(
            trajs, ps["encoder"], st["encoder"]
        )
        z0 = eps * torch.exp(0.5 * logvar) + mean
        pred_z, st_node = self.node(
            z0, ps["node"], st["node"]
        )  # (time, batch, latent)
        pred_x, st_dec = self.decoder(
            pred_z.transpose(0, 1), ps["decoder"], st["decoder"]
        )
        return (pred_x, mean, logvar), {
            "encoder": st_enc,
            "node": st_node,
            "decoder": st_dec,
        }


LATENT, HIDDEN, RNN = 4, 20, 25
elu = torch.nn.functional.elu
model = LatentODE(
    encoder=RecognitionRNN(
        lux.Linear(2 + RNN, RNN, activation=torch.tanh),
        lux.Linear(RNN, 2 * LATENT),
        hidden=RNN,
        latent_dim=LATENT,
    ),
    node=lux.NeuralODE(
        lux.Chain(
            lux.Linear(LATENT, HIDDEN, activation=elu),
            lux.Linear(HIDDEN, HIDDEN, activation=elu),
            lux.Linear(HIDDEN, LATENT),
        ),
        samp_ts,
        method="dopri5",
        rtol=1e-3,
        atol=1e-4,
    ),
    decoder=lux.Chain(
        lux.Linear(LATENT, HIDDEN, activation=torch.relu),
        lux.Linear(HIDDEN, 2),
    ),
)
display(model)

# %% [markdown]
# ## The ELBO
#
# The loss is the negative evidence lower bound per trajectory: the Gaussian
# log-likelihood of the observations (fixed noise 0.3) plus the analytic KL divergence of
# `q(z0 | x)` from `N(0, I)`. It has the `loss_fn(model, ps, st, data) -> (loss, st, stats)`
# form that `train_step` takes.

# %%
NOISE_STD = 0.3


def elbo_loss(model, ps, st, data):
    trajs, _ = data
    (pred_x, mean, logvar), st = model(data, ps, st)
    log_px = -0.5 * (
        math.log(2 * math.pi)
        + 2 * math.log(NOISE_STD)
        + (trajs - pred_x) ** 2 / NOISE_STD**2
    )
    kl = 0.5 * (torch.exp(logvar) + mean**2 - 1.0 - logvar)
    loss = (-log_px.sum((-2, -1)) + kl.sum(-1)).mean()
    return loss, st, {"kl": kl.sum(-1).mean().detach()}


def evaluate(ts):
    eps = lux.random.normal(eval_key, (samp_trajs.shape[0], LATENT))
    with torch.no_grad():
        loss, _, _ = elbo_loss(model, ts.params, ts.states, (samp_trajs, eps))
    return float(loss)


# %% [markdown]
# ## Training
#
# Every step draws fresh noise `eps` from `fold_in(noise_key, step)`: no global random
# state, and rerunning the notebook gives the same numbers.

# %%
STEPS = 250
ps, st = lux.setup(init_key, model)
ts = lux.TrainState(model, ps, st, lux.optim.adam(1e-2))
print(f"negative ELBO before training: {evaluate(ts):.1f}")
for step in range(1, STEPS + 1):
    eps = lux.random.normal(
        lux.random.fold_in(noise_key, step), (samp_trajs.shape[0], LATENT)
    )
    ts, loss, stats = lux.train_step(elbo_loss, (samp_trajs, eps), ts)
    if step % 50 == 0:
        nfe = int(ts.states["node"]["stats"]["nfe"])
        print(
            f"step {step:3d}  loss {float(loss):8.1f}  "
            f"KL {float(stats['kl']):5.2f}  nfe {nfe}"
        )
print(f"negative ELBO after training: {evaluate(ts):.1f}")

# %% [markdown]
# ## Reconstruction and extrapolation
#
# For three spirals, the encoder's mean `z0` is solved forwards over 2.5 times the observed
# span and backwards over one span, by the *same* trained `ps`: `dataclasses.replace`
# gives the node new times (a `NeuralODE` may also take them as data, `(z0, {"t": t})`).
# The backward solve runs from the first observation to times before it.

# %%
span = float(samp_ts[-1])
ts_fwd = torch.linspace(0.0, 2.5 * span, 300)
ts_bwd = torch.linspace(0.0, -span, 150)
dt = float(orig_ts[1] - orig_ts[0])
ps_t, st_t = ts.params, ts.states

fig, axes = plt.subplots(1, 3, figsize=(10, 4.2))
for ax, i in zip(axes, range(3), strict=True):
    x = samp_trajs[i : i + 1]
    with torch.no_grad():
        (mean, _), _ = model.encoder(x, ps_t["encoder"], st_t["encoder"])
        fwd, _ = dataclasses.replace(model.node, t=ts_fwd)(
            mean, ps_t["node"], st_t["node"]
        )
        bwd, _ = dataclasses.replace(model.node, t=ts_bwd)(
            mean, ps_t["node"], st_t["node"]
        )
        xs_fwd, _ = model.decoder(fwd[:, 0], ps_t["decoder"], st_t["decoder"])
        xs_bwd, _ = model.decoder(bwd[:, 0], ps_t["decoder"], st_t["decoder"])
    s = int(starts[i])
    lo, hi = (
        max(0, s - int(span / dt)),
        min(orig_trajs.shape[1], s + int(2.5 * span / dt)),
    )
    true = orig_trajs[i, lo:hi].numpy()
    ax.plot(
        true[:, 0],
        true[:, 1],
        color="0.6",
        lw=4,
        alpha=0.6,
        label="true trajectory",
    )
    ax.plot(
        xs_fwd[:, 0],
        xs_fwd[:, 1],
        "r-",
        lw=1.5,
        label="learned, forward in time",
    )
    ax.plot(
        xs_bwd[:, 0],
        xs_bwd[:, 1],
        "b--",
        lw=2,
        label="learned, backward in time",
    )
    ax.scatter(
        x[0, :, 0], x[0, :, 1], s=12, c="k", zorder=3, label="observations"
    )
    ax.set(title=f"Spiral {i}", xlabel="x", ylabel="y", aspect="equal")
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
fig.tight_layout(rect=(0, 0.13, 1, 1))
plt.show()

# %% [markdown]
# After this short run the reconstructions follow the observations, while the
# extrapolations, forwards and backwards, drift away from the true spirals;
# `examples/latent_ode.py` trains four times as long.
#
# ## Where next
#
# - [Neural ODE spiral](10_neural_ode_spiral.py): the `NeuralODE` layer on its own, time as
#   data, adjoint gradients.
# - [Neural differential equations guide](../guide/neural-des.md).
