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
# # Neural ODE: learning a spiral
#
# A neural ODE (Chen et al. 2018) learns the right-hand side of `dy/dt = f(y)`: the vector
# field `f` is a network, and the prediction is the solution of the ODE from an initial
# state. This tutorial is a short version of torchdiffeq's `ode_demo`; the full example,
# `examples/neural_ode_spiral.py` in the repository, trains for 1000 steps with tighter
# tolerances and takes about a minute.
#
# It shows:
#
# - a vector field that is an ordinary `lux.Chain`, turned into an ODE layer by
#   `lux.NeuralODE` (torchdiffeq underneath: `pip install lux-torch[ode]`);
# - **time as data**: the output times travel with the input, `node((y0, {"t": t}), ps, st)`,
#   so the same layer solves training windows and the whole trajectory;
# - training with `lux.TrainState` and `lux.train_step`;
# - gradients by backpropagation through the solver against the **adjoint method**;
# - the solver statistics in `st["stats"]`.

# %%
import dataclasses
import functools
import textwrap
import time

import matplotlib.pyplot as plt
import torch
from IPython.display import display

import lux_torch as lux

torch.set_num_threads(1)

# %% [markdown]
# ## The data
#
# The true system is `dy/dt = (y**3) @ A`. The true dynamics are a parameter-free layer,
# solved by the same machinery as the model: `lux.WrappedFunction` makes a layer of a plain
# function, and `NeuralODE` solves it with torchdiffeq's `dopri5` at 1000 times in `[0, 25]`.

# %%
A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])
t = torch.linspace(0.0, 25.0, 1000)
y0 = torch.tensor([[2.0, 0.0]])  # (batch 1, 2)

truth = lux.NeuralODE(lux.WrappedFunction(lambda y: (y**3) @ A), t)
with torch.no_grad():
    true_y, _ = truth(y0, *lux.setup(0, truth))
print(true_y.shape)  # (time, batch, 2): time first, like torchdiffeq.odeint

# %% [markdown]
# ## The model
#
# As in `ode_demo`, the network sees `y**3` and has 50 hidden units, its weights drawn from
# `N(0, 0.1)`. No time points are configured: every call brings its own.

# %%
init = {
    "weight_init": functools.partial(lux.init.normal, std=0.1),
    "bias_init": lux.init.zeros,
}
field = lux.Chain(
    lambda y: y**3,  # a plain function in a Chain becomes a WrappedFunction
    lux.Linear(2, 50, activation=torch.tanh, **init),
    lux.Linear(50, 2, **init),
)
node = lux.NeuralODE(field, method="dopri5", rtol=1e-5, atol=1e-6)
init_key, data_key = lux.random.split(lux.random.key(0))
ps, st = lux.setup(init_key, node)
display(node)

# %% [markdown]
# The parameters of the field sit under `ps["vector_field"]`; the state holds the field's
# (empty) state and the solver statistics of the latest call.

# %%
print(*lux.tree.paths(ps), sep="\n")
print({name: int(value) for name, value in st["stats"].items()})

# %% [markdown]
# ## Training on windows, with time as data
#
# Each batch holds 20 random windows of 10 consecutive points, as in `ode_demo`. The loss
# hands the window's times to the layer as data, `(y0, {"t": t})`: nothing is rebuilt
# when the times change, and gradients could flow to them. `train_step` sees that the
# adaptive `dopri5` solve cannot be differentiated by `torch.func`
# (`node.requires_autograd` is `True`) and takes the `torch.autograd` path.

# %%
BATCH_TIME, BATCH_SIZE = 10, 20


def get_batch(key):
    starts = lux.random.permutation(key, len(t) - BATCH_TIME)[:BATCH_SIZE]
    batch_y0 = true_y[starts]  # (20, 1, 2)
    batch_y = torch.stack(
        [true_y[starts + i] for i in range(BATCH_TIME)]
    )  # (10, 20, 1, 2)
    return (
        batch_y0,
        t[:BATCH_TIME],
        batch_y,
    )  # the system is autonomous: windows start at 0


def loss_fn(model, ps, st, data):
    y0, times, target = data
    pred, st = model((y0, {"t": times}), ps, st)
    return (pred - target).abs().mean(), st, {}


def whole_trajectory(ts):
    with torch.no_grad():
        pred, _ = node((y0, {"t": t}), ts.params, ts.states)
    return pred


STEPS = 400
schedule = lux.optim.cosine_decay_schedule(2e-3, STEPS, alpha=0.05)
ts = lux.TrainState(node, ps, st, lux.optim.rmsprop(schedule))
print("requires_autograd:", node.requires_autograd)
print(
    "mean error over [0, 25] before training:",
    f"{(whole_trajectory(ts) - true_y).abs().mean():.4f}",
)

start = time.perf_counter()
for step in range(1, STEPS + 1):
    ts, loss, _ = lux.train_step(
        loss_fn, get_batch(lux.random.fold_in(data_key, step)), ts
    )
    if step % 100 == 0:
        nfe = int(ts.states["stats"]["nfe"])
        print(
            f"step {step:3d}  window loss {float(loss):.4f}  forward nfe {nfe}"
        )
print(f"{STEPS} steps in {time.perf_counter() - start:.1f} s")
pred_y = whole_trajectory(ts)
print(
    "mean error over [0, 25] after training:",
    f"{(pred_y - true_y).abs().mean():.4f}",
)

# %% [markdown]
# ## Trajectories, phase portrait and the learned vector field
#
# The learned model is solved over the whole span from the first point only (`{"t": t}`
# again), and compared with the truth.

# %%
fig, axes = plt.subplot_mosaic(
    [["traj", "traj"], ["phase", "field"]], figsize=(9, 7.5)
)
ax_traj, ax_phase, ax_field = axes["traj"], axes["phase"], axes["field"]
tn, true_np, pred_np = t.numpy(), true_y[:, 0].numpy(), pred_y[:, 0].numpy()
ax_traj.plot(tn, true_np[:, 0], "g-", label="true x")
ax_traj.plot(tn, true_np[:, 1], "b-", label="true y")
ax_traj.plot(tn, pred_np[:, 0], "g--", label="learned x")
ax_traj.plot(tn, pred_np[:, 1], "b--", label="learned y")
ax_traj.set(title="Trajectories", xlabel="t", ylabel="x, y")
ax_traj.legend(loc="upper right", ncol=2, fontsize="small")

ax_phase.plot(true_np[:, 0], true_np[:, 1], "g-", label="true")
ax_phase.plot(pred_np[:, 0], pred_np[:, 1], "b--", label="learned")
ax_phase.set(title="Phase portrait", xlabel="x", ylabel="y", aspect="equal")
ax_phase.set(xlim=(-2.0, 2.2), ylim=(-2.0, 2.7))  # room for the legend on top
ax_phase.legend(loc="upper center", ncol=2, fontsize="small")

grid = torch.linspace(-2.0, 2.0, 21)
gy, gx = torch.meshgrid(grid, grid, indexing="ij")
points = torch.stack([gx, gy], dim=-1).reshape(-1, 2)
with torch.no_grad():
    dydt, _ = field(
        points, ts.params["vector_field"], ts.states["vector_field"]
    )
speed = dydt.norm(dim=-1).reshape(21, 21)
dydt = (dydt / dydt.norm(dim=-1, keepdim=True).clamp_min(1e-12)).reshape(
    21, 21, 2
)
stream = ax_field.streamplot(
    gx.numpy(),
    gy.numpy(),
    dydt[..., 0].numpy(),
    dydt[..., 1].numpy(),
    color=speed.numpy(),
)
fig.colorbar(stream.lines, ax=ax_field, label="|dy/dt|")
ax_field.set(
    title="Learned vector field", xlabel="x", ylabel="y", aspect="equal"
)
fig.tight_layout()
plt.show()

# %% [markdown]
# The learned orbit follows the true one in the phase portrait; in time it runs slightly
# out of phase, which is most of the remaining mean error. Longer training
# (`examples/neural_ode_spiral.py`) closes the gap.
#
# ## Backpropagation against the adjoint method
#
# By default (`adjoint=False`) gradients are backpropagated through the solver's
# operations: exact gradients of the discrete solve, with memory growing with the number
# of steps. `adjoint=True` uses torchdiffeq's `odeint_adjoint`, which solves a second ODE
# backwards in time: constant memory, gradients exact up to the tolerance of that backward
# solve. `dataclasses.replace` gives the same layer with another setting, and the same
# `ps` fit both.
#
# After the backward pass, `st["stats"]["nfe_adjoint"]` holds the evaluations of the
# backward solve (it is filled in place while the backward pass runs).

# %%
batch = get_batch(lux.random.key(123))
grads = {}
for adjoint in (False, True):
    model = dataclasses.replace(node, adjoint=adjoint)
    ts_a = lux.TrainState(model, ts.params, ts.states, lux.optim.adam(1e-3))
    start = time.perf_counter()
    g, loss, _, ts_a = lux.compute_gradients(loss_fn, batch, ts_a)
    elapsed = time.perf_counter() - start
    grads[adjoint] = lux.tree.ravel(g)[0]
    stats = ts_a.states["stats"]
    print(
        f"adjoint={adjoint!s:5}  {elapsed * 1e3:5.1f} ms  "
        f"nfe {int(stats['nfe'])}  nfe_adjoint {int(stats['nfe_adjoint'])}"
    )

diff = (grads[True] - grads[False]).abs().max() / grads[False].abs().max()
print(f"largest gradient difference / largest gradient: {diff:.1e}")

# %% [markdown]
# The two gradients agree to the solver tolerances (`rtol=1e-5`). The adjoint also refuses
# what it cannot differentiate: a field that reads a tensor requiring grad from outside
# `ps`/`st` (say, captured in a closure) would silently get no gradient from
# `odeint_adjoint`, so the call raises instead:

# %%
scale = torch.ones(
    2, requires_grad=True
)  # a trainable tensor hidden in a closure
leaky = lux.NeuralODE(
    lux.WrappedFunction(lambda y: -scale * y), t=[0.0, 1.0], adjoint=True
)
try:
    leaky(torch.ones(1, 2), *lux.setup(0, leaky))
except ValueError as err:
    print(textwrap.fill(str(err)[:300] + " ...", 79))

# %% [markdown]
# ## Where next
#
# - The [neural differential equations guide](../guide/neural-des.md) covers solvers and
#   options, events, dense output, tolerances, multiple shooting and what works under
#   `torch.func` and `torch.compile`.
# - The [latent ODE tutorial](11_latent_ode.py) puts a `NeuralODE` inside a variational
#   autoencoder.
# - API: [`lux_torch.sciml`](../api/sciml.md).
