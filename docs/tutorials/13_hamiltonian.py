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
# # Hamiltonian neural networks: energy that stays put
#
# A Hamiltonian neural network (Greydanus, Dzamba & Yosinski 2019) learns an energy
# `H(q, p)` instead of a vector field, and moves along Hamilton's equations
# `dq/dt = dH/dp`, `dp/dt = -dH/dq`. Whatever `H` it learns, `H` is conserved along its exact
# trajectories, so long rollouts cannot spiral in or out the way a plain neural ODE's can.
#
# Here both are fitted to pendulum trajectories with the same optimizer and the same
# multiple-shooting objective, then rolled out ten times longer than they were trained on,
# measuring the *true* energy along their trajectories. The full example,
# `examples/hamiltonian_pendulum.py` in the repository, trains wider networks for 500 steps
# each and rolls out to `t = 60`.

# %%
import dataclasses

import matplotlib.pyplot as plt
import torch
from IPython.display import display

import lux_torch as lux

torch.set_num_threads(1)

# %% [markdown]
# ## The pendulum
#
# `H(q, p) = p**2 / 2 + (1 - cos q)`. The training data are 16 trajectories from random
# states over `t` in `[0, 3]`, solved accurately by a parameter-free `NeuralODE`.


# %%
def energy(x):
    q, p = x[..., 0], x[..., 1]
    return p**2 / 2 + (1 - torch.cos(q))


def pendulum(x):
    return torch.stack([x[..., 1], -torch.sin(x[..., 0])], dim=-1)


data_key, init_key = lux.random.split(lux.random.key(0))
t = torch.linspace(0.0, 3.0, 16)
low = torch.tensor([-2.0, -1.0])
x0_train = low + 2 * low.abs() * lux.random.uniform(data_key, (16, 2))
truth = lux.NeuralODE(lux.WrappedFunction(pendulum), t, rtol=1e-9, atol=1e-9)
with torch.no_grad():
    data, _ = truth(x0_train, *lux.setup(0, truth))
print(data.shape)  # (time, trajectory, [q, p])

# %% [markdown]
# ## Two models
#
# `lux.HamiltonianNN(H)` turns an energy network `H: (batch, 2) -> (batch, 1)` into the
# vector field `[dH/dp, -dH/dq]`; inside a `NeuralODE` it is integrated like any other
# field. The plain neural ODE's field is an MLP of the same width with two outputs. Both
# use the fixed-step `rk4` solver; training differentiates through the solve, which for the
# Hamiltonian network means second derivatives of `H`. `ad="autograd"` takes `dH/dx` with
# `torch.autograd.grad`, the cheaper choice for eager training (the default `"func"` also
# composes with `torch.func` transforms and `torch.compile`).


# %%
def mlp(out, width=32):
    return lux.Chain(
        lux.Linear(2, width, activation=torch.tanh),
        lux.Linear(width, width, activation=torch.tanh),
        lux.Linear(width, out),
    )


solver = {"method": "rk4", "options": {"step_size": 0.1}}
models = {
    "Hamiltonian NN": lux.NeuralODE(
        lux.HamiltonianNN(mlp(1), ad="autograd"), t, **solver
    ),
    "neural ODE": lux.NeuralODE(mlp(2), t, **solver),
}
display(models["Hamiltonian NN"])

# %% [markdown]
# ## Training with multiple shooting
#
# `lux.MultipleShootingLoss` splits each trajectory into overlapping segments of 6 points,
# solves every segment from its own data point and penalises the mismatch where segments
# meet. It is an ordinary `train_step` loss taking `(data, t)`.

# %%
STEPS = 150
objective = lux.MultipleShootingLoss(group_size=6, continuity_term=10.0)
schedule = lux.optim.cosine_decay_schedule(1e-2, STEPS, alpha=0.05)
trained = {}
for name, node in models.items():
    ts = lux.TrainState(
        node, *lux.setup(init_key, node), lux.optim.adam(schedule)
    )
    for _ in range(STEPS):
        ts, loss, stats = lux.train_step(objective, (data, t), ts)
    print(
        f"{name:15s} final loss {float(loss):.2e}  "
        f"(data {float(stats['data_loss']):.2e}, "
        f"continuity {float(stats['continuity_loss']):.2e})"
    )
    trained[name] = ts

# %% [markdown]
# ## Long rollouts
#
# From a held-out state, both models are solved to `t = 30` (ten times the training span)
# with finer `rk4` steps, by `dataclasses.replace(node, t=..., options=...)` with the same
# `ps`. The true energy along each predicted trajectory shows which one stays on its orbit.

# %%
t_long = torch.linspace(0.0, 30.0, 301)
x0 = torch.tensor([[1.2, 0.3]])
exact_truth = dataclasses.replace(truth, t=t_long)
with torch.no_grad():
    exact, _ = exact_truth(x0, *lux.setup(0, exact_truth))
rollouts = {}
for name, ts in trained.items():
    long = dataclasses.replace(ts.model, t=t_long, options={"step_size": 0.05})
    with torch.no_grad():
        rollouts[name], _ = long(x0, ts.params, ts.states)
    drift = (energy(rollouts[name][:, 0]) - energy(x0[0])).abs().max()
    print(
        f"{name:15s} largest true-energy error, t in [0, 30]: "
        f"{float(drift):.4f}"
    )
print(f"exact energy: {float(energy(x0[0])):.4f}")

# %%
fig, (ax_energy, ax_phase) = plt.subplots(1, 2, figsize=(10, 4.4))
styles = {"Hamiltonian NN": "b-", "neural ODE": "r-"}
ax_energy.plot(t_long, energy(exact[:, 0]), "k--", label="exact")
ax_phase.plot(exact[:, 0, 0], exact[:, 0, 1], "k--", lw=2, label="exact")
for name, xs in rollouts.items():
    ax_energy.plot(t_long, energy(xs[:, 0]), styles[name], label=name)
    ax_phase.plot(xs[:, 0, 0], xs[:, 0, 1], styles[name], lw=0.8, label=name)
ax_energy.axvspan(0, 3, color="0.9", label="training span")
ax_energy.set(
    title="True energy along the learned trajectory",
    xlabel="t",
    ylabel="H(q, p)",
)
ax_phase.set(title="Phase portrait, t in [0, 30]", xlabel="q", ylabel="p")
ax_phase.set_aspect("equal")
handles, labels = ax_energy.get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False)
fig.tight_layout(rect=(0, 0.08, 1, 1))
plt.show()

# %% [markdown]
# Along the Hamiltonian network's rollout the true energy oscillates around the exact value
# without drifting: the network conserves its own learned `H`, which is close to the true
# one. The plain neural ODE fits the training span too, but nothing ties its field to a
# conserved quantity: it loses energy and spirals inwards.
#
# ## Where next
#
# - The [neural differential equations guide](../guide/neural-des.md#hamiltoniannn) explains
#   how `HamiltonianNN` takes `dH/dx` under each transform, and multiple shooting with
#   learnable shooting nodes (`lux.ShootingNODE`).
# - API: [`lux_torch.sciml`](../api/sciml.md).
