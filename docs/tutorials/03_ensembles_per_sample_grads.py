# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Ensembles and per-sample gradients
#
# A lux_torch model is a pure function of its parameter tree, so `torch.func.vmap` can map
# it over a *batch of parameter trees* (an ensemble) or map its gradient over a batch of
# *samples* (per-sample gradients). This notebook does both:
#
# 1. trains an ensemble of eight small MLPs in one vectorized loop, optimizer state
#    included;
# 2. computes per-sample gradients with `vmap(grad(...))`, as a tree and as one matrix
#    of flat parameter vectors (`lux.tree.ravel`).

# %%
import matplotlib.pyplot as plt
import torch

import lux_torch as lux

# The ops here are tiny: one thread avoids OpenMP spin-waiting when
# other processes share the cores (it can make steps many times slower).
torch.set_num_threads(1)

# %% [markdown]
# ## Data with a gap
#
# 1-D regression data on $[-1, -0.3] \cup [0.3, 1]$: the members of an ensemble should
# agree where there is data and may disagree in the gap and beyond the ends, which is
# what makes ensembles useful as an uncertainty estimate.

# %%
data_key, init_key = lux.random.split(lux.random.key(0))
x_key, noise_key = lux.random.split(data_key)
u = lux.random.uniform(x_key, (64, 1), low=0.3, high=1.0)
x = torch.cat([-u[:32], u[32:]])
y = torch.sin(3 * x) + 0.05 * lux.random.normal(noise_key, x.shape)
print(x.shape, y.shape)

# %% [markdown]
# ## Stacked parameters
#
# Each member is set up from its own key; `lux.tree.stack` stacks the eight trees leaf by
# leaf, so every leaf gains a leading member dimension of size 8.


# %%
def show(tree):
    """Each leaf's dotted path and shape (not its values)."""
    leaves = lux.tree.leaves(tree)
    for path, leaf in zip(lux.tree.paths(tree), leaves, strict=True):
        print(f"{path:16s} {tuple(leaf.shape)}")


model = lux.Chain(
    lux.Linear(1, 32, activation=torch.tanh),
    lux.Linear(32, 32, activation=torch.tanh),
    lux.Linear(32, 1),
)
N_MEMBERS = 8
keys = lux.random.split(init_key, N_MEMBERS)
members = [lux.setup(k, model) for k in keys]
ps_all = lux.tree.stack([ps for ps, _ in members])
st = members[0][1]  # no state tensors here: one (empty) state serves all
show(ps_all)

# %% [markdown]
# One `vmap` evaluates all members on the same input:

# %%
ys, _ = torch.func.vmap(lambda p: model(x, p, st))(ps_all)
print(ys.shape)  # (members, samples, outputs)

# %% [markdown]
# ## Training all members in one vectorized step
#
# The optimizer state of `lux.optim.adam` is a tree of tensors too, so it stacks like
# the parameters. A step for *one* member -- gradient, update, new parameters -- is an
# ordinary function; `vmap` turns it into a step for all eight.

# %%
optimizer = lux.optim.adam(1e-2)
opt_all = lux.tree.stack([optimizer.init(ps) for ps, _ in members])


def loss_fn(ps):
    pred, _ = model(x, ps, st)
    return torch.mean((pred - y) ** 2)


def member_step(ps, opt_state):
    grads, loss = torch.func.grad_and_value(loss_fn)(ps)
    updates, opt_state = optimizer.update(grads, opt_state, ps)
    return lux.optim.apply_updates(ps, updates), opt_state, loss


ensemble_step = torch.func.vmap(member_step)

history = []
for _ in range(500):
    ps_all, opt_all, losses = ensemble_step(ps_all, opt_all)
    history.append(losses)
history = torch.stack(history)  # (steps, members)
print("final training MSE of each member:")
print([round(v, 4) for v in history[-1].tolist()])

# %% [markdown]
# The vectorized step computes exactly what a Python loop over the members would. Check
# it for member 3 on a fresh start: two steps alone, two steps inside the `vmap`.

# %%
ps_3, opt_3 = members[3][0], optimizer.init(members[3][0])
ps_b = lux.tree.stack([ps for ps, _ in members])
opt_b = lux.tree.stack([optimizer.init(ps) for ps, _ in members])
for _ in range(2):
    ps_3, opt_3, _ = member_step(ps_3, opt_3)
    ps_b, opt_b, _ = ensemble_step(ps_b, opt_b)
member_3 = lux.tree.unstack(ps_b)[3]
print("equal:", lux.tree.allclose(ps_3, member_3, rtol=1e-5, atol=1e-6))

# %% [markdown]
# ## The ensemble's prediction
#
# The members' spread (standard deviation across members), where there is data and
# where there is none:

# %%
grid = torch.linspace(-1.5, 1.5, 301).unsqueeze(1)
with torch.no_grad():
    preds, _ = torch.func.vmap(lambda p: model(grid, p, st))(ps_all)
preds = preds.squeeze(-1)  # (members, points)
mean, std = preds.mean(0), preds.std(0)

g = grid.squeeze(1)
regions = {
    "where there is data": (g.abs() >= 0.3) & (g.abs() <= 1.0),
    "in the gap": g.abs() < 0.3,
    "beyond the ends": g.abs() > 1.0,
}
for name, where in regions.items():
    print(f"mean spread {name + ':':20s} {std[where].mean():.3f}")

# %%
fig, (ax_fit, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.5))
for i, member in enumerate(preds):
    label = "members" if i == 0 else None
    ax_fit.plot(g, member, lw=0.8, alpha=0.6, color="tab:blue", label=label)
band = (mean - 2 * std, mean + 2 * std)
ax_fit.fill_between(g, *band, color="tab:orange", alpha=0.25, label="±2 std")
ax_fit.plot(g, mean, color="tab:orange", lw=2, label="mean")
ax_fit.scatter(x, y, s=8, color="black", zorder=3, label="data")
ax_fit.set(xlabel="x", ylabel="y", title="8 MLPs, one vmap", ylim=(-2, 2))
ax_fit.legend(loc="lower right", fontsize=8)
ax_loss.semilogy(history, lw=1)
ax_loss.set(xlabel="step", ylabel="training MSE", title="each member's loss")
fig.tight_layout()
plt.show()

# %% [markdown]
# The same ensemble is also available as a layer: `lux.Ensemble(model, 8, in_dim=None)`
# keeps the stacked trees under `ps["member"]` and trains with `lux.train_step` like any
# other model.

# %%
ensemble = lux.Ensemble(model, N_MEMBERS, in_dim=None)
ens_ps, ens_st = lux.setup(init_key, ensemble)
print(ensemble)
print(ensemble(x, ens_ps, ens_st)[0].shape)

# %% [markdown]
# ## Per-sample gradients
#
# For a single trained member, the gradient of the loss on *one* sample is
# `torch.func.grad` of a function of `(ps, x_i, y_i)`. Mapping it over the samples
# (`in_dims=(None, 0, 0)`: the same parameters, one sample each) gives every sample's
# gradient in one call, as a tree whose leaves have a leading sample dimension.

# %%
ps = lux.tree.unstack(ps_all)[0]


def sample_loss(ps, xi, yi):
    pred, _ = model(xi[None], ps, st)  # a batch of one
    return torch.mean((pred - yi[None]) ** 2)


grad_per_sample = torch.func.vmap(
    torch.func.grad(sample_loss), in_dims=(None, 0, 0)
)
per_sample = grad_per_sample(ps, x, y)
show(per_sample)

# %% [markdown]
# Since the batch loss is the mean of the sample losses, the mean of the per-sample
# gradients is the batch gradient:

# %%
batch_grad = torch.func.grad(loss_fn)(ps)
mean_grad = lux.tree.map(lambda g: g.mean(0), per_sample)
same = lux.tree.allclose(mean_grad, batch_grad, rtol=1e-4, atol=1e-7)
print("mean of the per-sample gradients == batch gradient:", same)

# %% [markdown]
# ## One flat vector per sample
#
# `lux.tree.ravel(ps)` gives the parameters as one flat vector and a function `unravel`
# that rebuilds the tree (differentiably, in `torch.nn`'s `parameters()` order).
# Differentiating with respect to the flat vector gives per-sample gradients as one
# `(samples, parameters)` matrix: the form that, for example, per-sample clipping
# (DP-SGD), gradient-similarity analyses, or a Gauss-Newton approximation want.

# %%
flat, unravel = lux.tree.ravel(ps)


def flat_sample_loss(flat, xi, yi):
    return sample_loss(unravel(flat), xi, yi)


G = torch.func.vmap(torch.func.grad(flat_sample_loss), in_dims=(None, 0, 0))(
    flat, x, y
)
print("flat parameters:", tuple(flat.shape))
print("per-sample gradient matrix:", tuple(G.shape))

# row 0 is sample 0's gradient tree, flattened in the same order
row0, _ = lux.tree.ravel(lux.tree.map(lambda g: g[0], per_sample))
print("row 0 equals the tree of sample 0:", torch.allclose(G[0], row0))

# %% [markdown]
# The norms of the rows show which samples pull hardest on the parameters:

# %%
norms = G.norm(dim=1)
fig, ax = plt.subplots(figsize=(6.5, 3.5))
sc = ax.scatter(x, y, c=norms, cmap="viridis", s=25)
fig.colorbar(sc, ax=ax, label="per-sample gradient norm")
ax.set(xlabel="x", ylabel="y", title="training points (member 0)")
fig.tight_layout()
plt.show()
