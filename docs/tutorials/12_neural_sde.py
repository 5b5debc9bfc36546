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
# # Neural SDE: fitting an Ornstein-Uhlenbeck process
#
# A neural SDE `dy = f(y) dt + g(y) dW` has a learned drift `f` and a learned diffusion `g`.
# Here both are small MLPs, fitted to sample paths of the Ornstein-Uhlenbeck process
# `dy = theta (mu - y) dt + sigma dW` by **moment matching**: every step simulates a batch
# of paths and compares their mean and standard deviation over time with those of the
# data. The full example, `examples/neural_sde.py` in the repository, trains 400 steps.
#
# It shows `lux.NeuralSDE` (torchsde underneath: `pip install lux-torch[sde]`) and how its
# randomness works: the Brownian motion is a pure function of `st["key"]`.

# %%
import dataclasses

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import display

import lux_torch as lux

torch.set_num_threads(1)  # tiny tensors: more threads only add overhead

# %% [markdown]
# ## Data
#
# 2000 exact OU paths from `y(0) = 0` at 21 times in `[0, 2]` (the OU transition is
# Gaussian, so no solver is needed), drawn with `lux.random`.

# %%
THETA, MU, SIGMA = 1.5, 1.0, 0.5
t = torch.linspace(0.0, 2.0, 21)


def ou_paths(key, n):
    noise = lux.random.normal(key, (len(t) - 1, n, 1))
    ys = [torch.zeros(n, 1)]
    for k, dt in enumerate(torch.diff(t).tolist()):
        decay = torch.exp(torch.tensor(-THETA * dt))
        std = SIGMA * torch.sqrt((1 - decay**2) / (2 * THETA))
        ys.append(MU + (ys[-1] - MU) * decay + std * noise[k])
    return torch.stack(ys)  # (time, n, 1)


init_key, data_key = lux.random.split(lux.random.key(0))
data = ou_paths(data_key, 2000)
data_mean, data_std = data.mean(1), data.std(1)

# %% [markdown]
# ## The model
#
# The drift is an MLP; the diffusion an MLP ending in `softplus`, so it stays positive. With
# the default diagonal noise each channel has its own Brownian motion (here there is one
# channel). The Euler-Maruyama solver with step 0.05 keeps the steps cheap.

# %%
drift = lux.Chain(lux.Linear(1, 16, activation=torch.tanh), lux.Linear(16, 1))
diffusion = lux.Chain(
    lux.Linear(1, 16, activation=torch.tanh), lux.Linear(16, 1), F.softplus
)
sde = lux.NeuralSDE(drift, diffusion, t, method="euler", dt=0.05)
ps, st = lux.setup(init_key, sde)
display(sde)

# %% [markdown]
# ## Keys make Brownian paths
#
# The state holds a key. Every call splits it, drives torchsde's Brownian motion with one
# half and returns the other in the new state. So the *same* `(x, ps, st)` gives the same
# paths, and threading the returned state gives fresh ones. No global random state is read.

# %%
y0 = torch.zeros(4, 1)
ys_a, st_a = sde(y0, ps, st)
ys_b, _ = sde(y0, ps, st)  # the same state again
ys_c, _ = sde(y0, ps, st_a)  # the state the first call returned
print("same st, same paths:     ", torch.equal(ys_a, ys_b))
print("returned st, new paths:  ", not torch.equal(ys_a, ys_c))
print("key before / after:      ", st["key"].tolist(), st_a["key"].tolist())
print("statistics:", {k: int(v) for k, v in st_a["stats"].items()})

# %% [markdown]
# ## Moment matching with `train_step`
#
# The loss simulates 256 paths and compares their mean and standard deviation with the
# data's at every time. `train_step` threads the returned state into the next step, so each
# step simulates new paths.


# %%
def moment_loss(model, ps, st, batch):
    y0, mean, std = batch
    ys, st = model(y0, ps, st)
    loss = ((ys.mean(1) - mean) ** 2).mean() + ((ys.std(1) - std) ** 2).mean()
    return loss, st, {}


batch = (torch.zeros(256, 1), data_mean, data_std)
STEPS = 200
ts = lux.TrainState(sde, ps, st, lux.optim.adam(2e-2))
for step in range(1, STEPS + 1):
    ts, loss, _ = lux.train_step(moment_loss, batch, ts)
    if step % 50 == 0:
        print(f"step {step:3d}  moment loss {float(loss):.5f}")

# %% [markdown]
# ## Results
#
# The trained `ps` are solved on a finer grid of 81 times (`dataclasses.replace`) for 2000
# paths, and the learned drift and diffusion are compared with the true `theta (mu - y)`
# and `sigma`.

# %%
fine = dataclasses.replace(sde, t=torch.linspace(0.0, 2.0, 81))
with torch.no_grad():
    ys, _ = fine(torch.zeros(2000, 1), ts.params, ts.states)
    y = torch.linspace(-0.5, 2.0, 101)[:, None]
    f, _ = drift(y, ts.params["drift"], ts.states["drift"])
    g, _ = diffusion(y, ts.params["diffusion"], ts.states["diffusion"])
t_fine = fine.t

fig, axes = plt.subplot_mosaic(
    [["paths", "paths"], ["drift", "diffusion"]], figsize=(9, 7)
)
ax_paths, ax_drift = axes["paths"], axes["drift"]
ax_diffusion = axes["diffusion"]
for i in range(8):
    ax_paths.plot(t, data[:, i, 0], color="tab:blue", alpha=0.3, lw=0.8)
    ax_paths.plot(t_fine, ys[:, i, 0], color="tab:orange", alpha=0.3, lw=0.8)
for series, times, color, label in (
    (data, t, "tab:blue", "data"),
    (ys, t_fine, "tab:orange", "model"),
):
    mean, std = series.mean(1)[:, 0], series.std(1)[:, 0]
    ax_paths.plot(
        times, mean, color=color, lw=2, label=f"{label}: mean ± 2 std"
    )
    ax_paths.fill_between(
        times, mean - 2 * std, mean + 2 * std, color=color, alpha=0.15
    )
ax_paths.set(
    title="Sample paths and moments", xlabel="t", ylabel="y", ylim=(-1.0, 2.6)
)
ax_paths.legend(loc="upper left", fontsize="small")
ax_drift.plot(y, THETA * (MU - y), "k--", label="true θ(μ - y)")
ax_drift.plot(y, f, color="tab:orange", label="learned")
ax_drift.set(title="Drift f(y)", xlabel="y", ylabel="f(y)")
ax_drift.legend(loc="upper right")
ax_diffusion.axhline(SIGMA, color="k", ls="--", label="true σ")
ax_diffusion.plot(y, g, color="tab:orange", label="learned")
ax_diffusion.set(
    title="Diffusion g(y)", xlabel="y", ylabel="g(y)", ylim=(0.0, 1.0)
)
ax_diffusion.legend(loc="upper right")
fig.tight_layout()
plt.show()

# %% [markdown]
# Moment matching constrains the drift and diffusion only where the paths go (about
# `y` in `[0, 1.5]`): outside that range the learned functions are extrapolations.
#
# ## Where next
#
# - The [neural differential equations guide](../guide/neural-des.md#neuralsde): noise
#   types, solvers, the stochastic adjoint and what works under `torch.func`.
# - API: [`lux_torch.sciml`](../api/sciml.md).
