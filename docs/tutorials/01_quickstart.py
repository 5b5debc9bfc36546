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
# # Quickstart
#
# This notebook walks through the whole lux_torch workflow on a tiny regression problem:
# describe a model, create its parameters and state, call it, train it with
# `lux.train_step`, and look at the result.
#
# The one idea to keep in mind: **a layer is an immutable description**. It holds no
# tensors. Its parameters `ps` and its state `st` are plain nested dicts of tensors that
# you pass in, and every call is a pure function
#
# ```python
# y, st = model(x, ps, st)
# ```
#
# that returns the output and the new state. The script version of this notebook is
# `examples/quickstart.py` in the repository.

# %%
import matplotlib.pyplot as plt
import torch
from IPython.display import display

import lux_torch as lux

# The ops here are tiny: one thread avoids OpenMP spin-waiting when
# other processes share the cores (it can make steps many times slower).
torch.set_num_threads(1)

# %% [markdown]
# ## A model is a description
#
# `lux.Chain` runs its layers one after another and names them `layer_1`, `layer_2`, ...
# (as Lux.jl does). Printing a model shows every layer with its parameter and state
# counts; nothing has been allocated yet.

# %%
model = lux.Chain(
    lux.Linear(1, 32, activation=torch.tanh),
    lux.Dropout(0.05),
    lux.Linear(32, 32, activation=torch.tanh),
    lux.Linear(32, 1),
)
print(model)

# %% [markdown]
# In a notebook, a model that is displayed as a cell's result (or with IPython's
# `display`) uses its HTML rendering:

# %%
display(model)

# %% [markdown]
# The counts come from the description alone: `lux.param_count` and `lux.state_count`
# allocate no memory.

# %%
lux.param_count(model), lux.state_count(model)

# %% [markdown]
# ## Parameters and state are explicit trees
#
# `lux.setup(key, model)` creates both trees from an explicit random key. Keys come from
# `lux.random`; no global random number generator is read, so the same key always gives
# the same parameters. Each child layer gets its own key derived from its name.

# %%
key = lux.random.key(0)
init_key, data_key = lux.random.split(key)
ps, st = lux.setup(init_key, model)


def show(tree):
    """Print each leaf's path, shape and dtype (not its values)."""
    leaves = lux.tree.leaves(tree)
    for path, leaf in zip(lux.tree.paths(tree), leaves, strict=True):
        print(f"{path:18s} {tuple(leaf.shape)!s:10s} {leaf.dtype}")


show(ps)

# %% [markdown]
# The parameter names and shapes are those of `torch.nn.Linear` (`weight` is
# `(out_features, in_features)`). The state holds what is not trained: here the
# `Dropout` layer's random key and its mode flag.

# %%
show(st)
st["layer_2"]["training"]

# %% [markdown]
# The `training` flag is *static*: part of the tree's structure, not a leaf, so
# `torch.func.vmap` and `torch.compile` never see a non-tensor leaf.
# `lux.test_mode(st)` and `lux.train_mode(st)` return copies with every flag set.

# %%
lux.test_mode(st)["layer_2"]["training"], st["layer_2"]["training"]

# %% [markdown]
# ## Calling the model
#
# The data: 256 points of $y = \sin(3x)$ plus a little noise, drawn from keys as well.

# %%
x_key, noise_key = lux.random.split(data_key)
x = lux.random.uniform(x_key, (256, 1), low=-1.0, high=1.0)
y = torch.sin(3 * x) + 0.05 * lux.random.normal(noise_key, (256, 1))

pred, new_st = model(x, ps, st)
print(pred.shape)

# %% [markdown]
# The call is pure: the same inputs give the same output, and the dropout key in the
# returned state has advanced, so the *next* call draws a new mask.

# %%
again, _ = model(x, ps, st)
print("same inputs, same output:", torch.equal(pred, again))
print(
    "dropout key advanced:    ",
    not torch.equal(new_st["layer_2"]["key"], st["layer_2"]["key"]),
)

# %% [markdown]
# `lux.summary` traces one call and tabulates every layer's output shape and counts.

# %%
print(lux.summary(model, x[:4], ps, st))

# %% [markdown]
# ## Training
#
# `lux.TrainState` bundles the model, `ps`, `st` and an optimizer. `lux.optim` holds pure,
# optax-shaped optimizers: their state is a tree of tensors too. `lux.train_step` takes a
# loss function `loss_fn(model, ps, st, data) -> (loss, st, stats)`, which every
# `lux.losses` class is, computes the gradients and applies the update. It returns a
# *new* train state; nothing is mutated.

# %%
ts = lux.TrainState(model, ps, st, lux.optim.adam(3e-3))
mse = lux.losses.MSELoss()

losses = []
for _ in range(400):
    ts, loss, _ = lux.train_step(mse, (x, y), ts)
    losses.append(loss.item())
print(f"step {ts.step}: training loss {losses[0]:.4f} -> {losses[-1]:.4f}")

# %% [markdown]
# To evaluate, switch the state to test mode (dropout off) and call the model with the
# trained parameters `ts.params`.

# %%
test_st = lux.test_mode(ts.states)
test_loss, _, _ = mse(model, ts.params, test_st, (x, y))
print(f"test-mode loss on the training points: {test_loss.item():.4f}")
print(f"variance of the label noise:           {0.05**2:.4f}")

grid = torch.linspace(-1, 1, 200).unsqueeze(1)
with torch.no_grad():
    fit, _ = model(grid, ts.params, test_st)

g = grid.squeeze(1)
fig, (ax_loss, ax_fit) = plt.subplots(1, 2, figsize=(9, 3.3))
ax_loss.semilogy(losses)
ax_loss.set(xlabel="step", ylabel="training MSE", title="training loss")
ax_fit.scatter(x.squeeze(1), y.squeeze(1), s=5, alpha=0.4, label="data")
ax_fit.plot(g, torch.sin(3 * g), "k--", lw=1, label="sin(3x)")
ax_fit.plot(g, fit.squeeze(1), "r", lw=2, label="model (test mode)")
ax_fit.set(xlabel="x", ylabel="y", title="fit")
ax_fit.legend(loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Gradients are plain `torch.func`
#
# Because a call is a pure function of `ps`, `torch.func.grad` differentiates with respect
# to the whole parameter tree and returns a tree of the same structure. `train_step` does
# this for you; here it is by hand.


# %%
def loss_of(ps):
    pred, _ = model(x, ps, test_st)
    return torch.mean((pred - y) ** 2)


grads = torch.func.grad(loss_of)(ts.params)
show(grads)

# %% [markdown]
# The trees flatten into one vector and back with `lux.tree.ravel`, in `torch.nn`'s
# `parameters()` order:

# %%
flat, unravel = lux.tree.ravel(ts.params)
print(flat.shape, lux.tree.allclose(unravel(flat), ts.params))

# %% [markdown]
# ## Next
#
# - [Training an MLP](02_train_mlp.py): mini-batches, schedules, `compile=True`.
# - [Ensembles and per-sample gradients](03_ensembles_per_sample_grads.py): `vmap` over
#   stacked parameters.
# - [Writing your own layers](08_custom_layers.py).
