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
# # An LSTM sequence classifier
#
# An LSTM that tells clockwise from anticlockwise spirals: each sample is a noisy 2-D
# trajectory of 20 points, and the model reads it point by point. It shows recurrent
# cells and `lux.Recurrence`, which runs a cell over the time axis, and how the same
# parameters serve a second model description.
#
# The script version, `examples/lstm_spirals.py`, trains on 2048 trajectories for 8 epochs
# and saves a PNG; this notebook uses 1024 trajectories and 3 epochs.

# %%
import math

import matplotlib.pyplot as plt
import torch

import lux_torch as lux

# The ops here are tiny: one thread avoids OpenMP spin-waiting when other processes
# share the cores (which can make each step tens of times slower).
torch.set_num_threads(1)

# %% [markdown]
# ## Data
#
# Every random number comes from a `lux.random` key: the label (0 clockwise, 1
# anticlockwise), the start angle and radius, the angular speed, the radial growth, and
# Gaussian noise on every point.

# %%
SEQ_LEN = 20
CLASSES = ("clockwise", "anticlockwise")


def make_spirals(key, n, noise=0.05):
    k_label, k_angle, k_radius, k_speed, k_growth, k_noise = lux.random.split(key, 6)
    y = lux.random.randint(k_label, (n,), 0, 2)
    direction = (2 * y - 1).float()  # -1 clockwise, +1 anticlockwise
    angle0 = lux.random.uniform(k_angle, (n, 1), high=2 * math.pi)
    radius0 = lux.random.uniform(k_radius, (n, 1), low=0.3, high=1.0)
    speed = lux.random.uniform(k_speed, (n, 1), low=0.15, high=0.45)
    growth = lux.random.uniform(k_growth, (n, 1), low=0.01, high=0.06)
    t = torch.arange(SEQ_LEN, dtype=torch.float32)
    angle = angle0 + direction[:, None] * speed * t
    radius = radius0 + growth * t
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    return x + noise * lux.random.normal(k_noise, x.shape), y


train_key, test_key, init_key, shuffle_key = lux.random.split(lux.random.key(0), 4)
x_train, y_train = make_spirals(train_key, 1024)
x_test, y_test = make_spirals(test_key, 512)
print(x_train.shape, y_train.shape)  # (samples, time, features), labels

# %% [markdown]
# ## A cell, and a cell run over time
#
# `lux.LSTMCell` is `torch.nn.LSTMCell`'s maths with explicit parameters (the same names
# and shapes). A cell maps `(x_t, carry)` to `((y_t, carry), st)`; the carry of an LSTM is
# `(h, c)`. Given only `x_t`, it starts from zeros.

# %%
cell = lux.LSTMCell(2, 32)
cell_ps, cell_st = lux.setup(init_key, cell)
for path, leaf in zip(lux.tree.paths(cell_ps), lux.tree.leaves(cell_ps), strict=True):
    print(f"{path:10s} {tuple(leaf.shape)}")

(h, (h, c)), _ = cell(x_train[:4, 0], cell_ps, cell_st)  # the first time step of 4 samples
(h, (h, c)), _ = cell((x_train[:4, 1], (h, c)), cell_ps, cell_st)  # the second, with the carry
print(h.shape, c.shape)

# %% [markdown]
# `lux.Recurrence(cell)` does this loop over the time axis of a batch-first input
# `(N, T, F)` and returns the last output `(N, H)`, so a `Linear` head follows directly.

# %%
model = lux.Chain(
    lux.Recurrence(lux.LSTMCell(2, 32)),  # (N, T, 2) -> last h: (N, 32)
    lux.Linear(32, 2),  # logits (N, 2)
)
ps, st = lux.setup(init_key, model)
print(model)
print(model(x_train[:4], ps, st)[0].shape)

# %% [markdown]
# ## Training

# %%
EPOCHS, BATCH = 3, 64
n_batches = len(x_train) // BATCH
ts = lux.TrainState(model, ps, st, lux.optim.adam(1e-2))
loss_fn = lux.losses.CrossEntropyLoss()


def predict(model, ps, st, x):
    with torch.no_grad():
        return model(x, ps, lux.test_mode(st))[0].argmax(-1)


losses = []
epoch_keys = lux.random.split(shuffle_key, EPOCHS)
for epoch in range(EPOCHS):
    order = lux.random.permutation(epoch_keys[epoch], len(x_train))
    for i in range(n_batches):
        idx = order[i * BATCH : (i + 1) * BATCH]
        ts, loss, _ = lux.train_step(loss_fn, (x_train[idx], y_train[idx]), ts)
        losses.append(loss.item())
    acc = (predict(model, ts.params, ts.states, x_test) == y_test).float().mean().item()
    print(f"epoch {epoch + 1}: last batch loss {losses[-1]:.4f}, test accuracy {acc:.4f}")

# %% [markdown]
# ## The same parameters, another description
#
# A layer holds no tensors, so a second model that differs only in what it returns can
# use the trained parameters unchanged: with `return_sequence=True` the recurrence
# returns the hidden state at every step, `(N, T, 32)`, and the `Linear` head (which acts
# on the last dimension) classifies after each prefix of the trajectory. The parameter
# trees of the two descriptions have the same structure; at the last step the
# predictions are those of the trained model.

# %%
every_step = lux.Chain(lux.Recurrence(lux.LSTMCell(2, 32), return_sequence=True), lux.Linear(32, 2))
lux.check_structure(every_step, ts.params, ts.states)  # raises if the trees do not fit

pred_per_step = predict(every_step, ts.params, ts.states, x_test)  # (N, T)
acc_per_step = (pred_per_step == y_test[:, None]).float().mean(0)
final = predict(model, ts.params, ts.states, x_test)
print("last step equals the trained model:", torch.equal(pred_per_step[:, -1], final))
print(
    "accuracy after 1, 2, 3, 5, 20 points:",
    [round(acc_per_step[t - 1].item(), 3) for t in (1, 2, 3, 5, 20)],
)

# %% [markdown]
# ## Results

# %%
fig = plt.figure(figsize=(13, 4.5))
grid = fig.add_gridspec(2, 8)
colors = ("tab:blue", "tab:orange")
for i in range(8):
    ax = fig.add_subplot(grid[i // 4, i % 4])
    xi, t, p = x_test[i], int(y_test[i]), int(final[i])
    ax.plot(xi[:, 0], xi[:, 1], "-", color=colors[p], lw=1.5)
    ax.plot(xi[0, 0], xi[0, 1], "o", color=colors[p], ms=4)  # start
    ax.annotate(
        "",
        xy=(float(xi[-1, 0]), float(xi[-1, 1])),
        xytext=(float(xi[-2, 0]), float(xi[-2, 1])),
        arrowprops={"arrowstyle": "->", "color": colors[p], "lw": 1.5},
    )
    wrong = "" if t == p else f" (true: {CLASSES[t]})"
    ax.set_title(CLASSES[p] + wrong, fontsize=8, color="black" if t == p else "crimson")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])

ax_loss = fig.add_subplot(grid[:, 4:6])
ax_loss.semilogy(losses, lw=0.8)
ax_loss.set(xlabel="training step", ylabel="cross-entropy", title="training loss")
ax_acc = fig.add_subplot(grid[:, 6:])
ax_acc.plot(range(1, SEQ_LEN + 1), acc_per_step, "o-", ms=3)
ax_acc.set(
    xlabel="points seen",
    ylabel="test accuracy",
    title="accuracy vs. prefix length",
    ylim=(0.4, 1.02),
)
fig.suptitle("test trajectories, coloured by predicted class (dot: start, arrow: end)", fontsize=10)
fig.tight_layout()
plt.show()
