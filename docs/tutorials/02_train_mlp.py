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
# # Training an MLP
#
# A regression MLP trained on mini-batches with the training API: `lux.TrainState`,
# `lux.train_step`, a pure optimizer from `lux.optim` with a learning-rate schedule, a
# held-out test set evaluated in test mode, and the same training compiled into one graph
# with `compile=True`.
#
# The longer script version is `examples/mlp_regression.py` (1500 steps, a progress bar and
# a PNG); this notebook trains for fewer steps to stay quick.

# %%
import time

import matplotlib.pyplot as plt
import torch

import lux_torch as lux

# The ops here are tiny: one thread avoids OpenMP spin-waiting when
# other processes share the cores (it can make steps many times slower).
torch.set_num_threads(1)

# %% [markdown]
# ## Data
#
# $y = \sin(3x) + \varepsilon$ with noise $\varepsilon \sim \mathcal N(0, 0.1^2)$, so the
# best possible test MSE is about $0.01$. Every random number comes from an explicit
# `lux.random` key: the notebook gives the same numbers on every run.

# %%
NOISE = 0.1


def make_data(key, n):
    x_key, noise_key = lux.random.split(key)
    x = lux.random.uniform(x_key, (n, 1), low=-1.0, high=1.0)
    y = torch.sin(3 * x) + NOISE * lux.random.normal(noise_key, (n, 1))
    return x, y


train_key, test_key, init_key, shuffle_key = lux.random.split(
    lux.random.key(0), 4
)
x_train, y_train = make_data(train_key, 1024)
x_test, y_test = make_data(test_key, 256)
print(x_train.shape, x_test.shape)

# %% [markdown]
# ## Model, optimizer and schedule
#
# The optimizers in `lux.optim` are pure and shaped like optax's: `init(ps) -> state`,
# `update(grads, state, ps) -> (updates, state)`. They compose with `lux.optim.chain`;
# here gradient clipping runs before AdamW. A learning rate may be a number or a
# schedule, a function of the step count: this one warms up linearly for 50 steps, then
# decays along a cosine.

# %%
model = lux.Chain(
    lux.Linear(1, 64, activation=torch.tanh),
    lux.Linear(64, 64, activation=torch.tanh),
    lux.Linear(64, 1),
)
ps, st = lux.setup(init_key, model)

BATCH = 64
EPOCHS = 40
steps_per_epoch = (
    x_train.shape[0] // BATCH
)  # drop a last partial batch: shapes stay fixed
total_steps = EPOCHS * steps_per_epoch

schedule = lux.optim.warmup_cosine_decay_schedule(0.0, 3e-3, 50, total_steps)
optimizer = lux.optim.chain(
    lux.optim.clip_by_global_norm(1.0),
    lux.optim.adamw(schedule, weight_decay=1e-4),
)
ts = lux.TrainState(model, ps, st, optimizer)
print(ts)

# %% [markdown]
# The train state holds the model, the parameters (`ts.params`), the state
# (`ts.states`), the optimizer and its state (`ts.opt_state`), and the step count. The
# optimizer state is a tree of tensors like `ps`: here the clipping and AdamW entries of
# the chain, with AdamW's moments `mu` and `nu` mirroring the parameter tree.

# %%
opt_leaves = lux.tree.leaves(ts.opt_state)
for path, leaf in zip(lux.tree.paths(ts.opt_state), opt_leaves, strict=True):
    print(f"{path:24s} {tuple(leaf.shape)}")

# %% [markdown]
# ## The training loop
#
# A loss function for `train_step` has the signature
# `loss_fn(model, ps, st, data) -> (loss, st, stats)`; the classes in `lux.losses` have it.
# Each `train_step` returns a new train state and the loss at the old parameters. After
# every epoch we evaluate the test loss with the state in test mode (`lux.test_mode`).
# This model has no dropout or normalization, so the mode changes nothing here, but the
# habit matters for the models of the next tutorials.

# %%
mse = lux.losses.MSELoss()


def test_loss(ts):
    test_st = lux.test_mode(ts.states)
    loss, _, _ = mse(ts.model, ts.params, test_st, (x_test, y_test))
    return loss.item()


def train(ts, compile=False):
    train_losses, test_curve = [], [(0, test_loss(ts))]
    for epoch in range(EPOCHS):
        epoch_key = lux.random.fold_in(shuffle_key, epoch)
        perm = lux.random.permutation(epoch_key, len(x_train))
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            batch = (x_train[idx], y_train[idx])
            ts, loss, _ = lux.train_step(mse, batch, ts, compile=compile)
            train_losses.append(loss.item())
        test_curve.append((ts.step, test_loss(ts)))
    return ts, train_losses, test_curve


start = time.perf_counter()
trained, train_losses, test_curve = train(ts)
eager_s = time.perf_counter() - start
print(f"{trained.step} steps in {eager_s:.1f} s")
print(f"test MSE at the start: {test_curve[0][1]:.4f}")
print(f"test MSE at the end:   {test_curve[-1][1]:.4f}")
print(f"noise floor:           {NOISE**2:.4f}")

# %% [markdown]
# The loss curves and the learning rate:

# %%
fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.3))
steps = range(1, len(train_losses) + 1)
ax_loss.semilogy(steps, train_losses, lw=0.5, label="train batch")
test_steps, test_values = zip(*test_curve, strict=True)
ax_loss.semilogy(test_steps, test_values, "o-", ms=3, label="test")
ax_loss.axhline(NOISE**2, color="gray", ls="--", lw=0.8, label="noise floor")
ax_loss.set(xlabel="step", ylabel="MSE", title="loss (test: in test mode)")
ax_loss.legend(loc="upper right")

lrs = [schedule(s).item() for s in range(total_steps)]
ax_lr.plot(lrs)
ax_lr.set(xlabel="step", ylabel="learning rate", title="warm-up cosine")
fig.tight_layout()
plt.show()

# %% [markdown]
# And the fitted function, evaluated in test mode on a grid:

# %%
grid = torch.linspace(-1, 1, 300).unsqueeze(1)
with torch.no_grad():
    fit, _ = model(grid, trained.params, lux.test_mode(trained.states))
g = grid.squeeze(1)

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.scatter(x_train, y_train, s=3, alpha=0.3, label="training data")
ax.plot(g, torch.sin(3 * g), "k--", lw=1, label="sin(3x)")
ax.plot(g, fit.squeeze(1), "r", lw=2, label="MLP")
ax.set(xlabel="x", ylabel="y", title="fit")
ax.legend(loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The same training, compiled
#
# With `compile=True`, `train_step` traces forward pass, backward pass, the finiteness
# check and the optimizer update into one graph and compiles it with Inductor. The first
# call pays for tracing and compilation; later calls with the same input shapes reuse the
# graph, which is why the loop drops the last partial batch.
#
# We time one compiled step from the initial train state `ts`, then run the loop above
# with `compile=True` from that same state. The graph is cached in the train state and in
# every state derived from it, so the loop reuses it.

# %%
start = time.perf_counter()
lux.train_step(mse, (x_train[:BATCH], y_train[:BATCH]), ts, compile=True)
first_s = time.perf_counter() - start
print(f"first compiled step (tracing + compiling): {first_s:.1f} s")

start = time.perf_counter()
trained_c, losses_c, test_curve_c = train(ts, compile=True)
compiled_s = time.perf_counter() - start
print(f"{trained_c.step} compiled steps: {compiled_s:.1f} s")
print(f"{trained.step} eager steps:    {eager_s:.1f} s")
print(f"final test MSE, compiled: {test_curve_c[-1][1]:.4f}")
print(f"final test MSE, eager:    {test_curve[-1][1]:.4f}")

# %% [markdown]
# The compiled run starts from the same parameters and sees the same batches, so it
# follows the eager run closely (the compiled kernels round differently, so the numbers
# need not agree to the last digit). Whether compiling pays off depends on the run's
# length: the one-off compilation against the time saved per step, both printed above.
# Everything a compiled step reads that is not in its arguments is a constant of the
# graph, as under `jax.jit`: pass what changes through `data`.

# %%
diff = max(abs(a - b) for a, b in zip(train_losses, losses_c, strict=True))
print(f"largest difference of the training losses: {diff:.2e}")
