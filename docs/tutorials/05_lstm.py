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

# The ops here are tiny: one thread avoids OpenMP spin-waiting when
# other processes share the cores (it can make steps many times slower).
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
    k_label, k_angle, k_radius, k_speed, k_growth, k_noise = lux.random.split(
        key, 6
    )
    y = lux.random.randint(k_label, (n,), 0, 2)
    direction = (2 * y - 1).float()  # -1 clockwise, +1 anticlockwise
    angle0 = lux.random.uniform(k_angle, (n, 1), high=2 * math.pi)
    radius0 = lux.random.uniform(k_radius, (n, 1), low=0.3, high=1.0)
    speed = lux.random.uniform(k_speed, (n, 1), low=0.15, high=0.45)
    growth = lux.random.uniform(k_growth, (n, 1), low=0.01, high=0.06)
    t = torch.arange(SEQ_LEN, dtype=torch.float32)
    angle = angle0 + direction[:, None] * speed * t
    radius = radius0 + growth * t
    x = torch.stack(
        [radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1
    )
    return x + noise * lux.random.normal(k_noise, x.shape), y


train_key, test_key, init_key, shuffle_key = lux.random.split(
    lux.random.key(0), 4
)
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
for name, leaf in cell_ps.items():
    print(f"{name:10s} {tuple(leaf.shape)}")

x0, x1 = x_train[:4, 0], x_train[:4, 1]  # time steps 0 and 1 of 4 samples
(h, (h, c)), _ = cell(x0, cell_ps, cell_st)  # carry starts at zeros
(h, (h, c)), _ = cell((x1, (h, c)), cell_ps, cell_st)  # with the carry
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
        batch = (x_train[idx], y_train[idx])
        ts, loss, _ = lux.train_step(loss_fn, batch, ts)
        losses.append(loss.item())
    predicted = predict(model, ts.params, ts.states, x_test)
    acc = (predicted == y_test).float().mean()
    print(f"epoch {epoch + 1}: test accuracy {acc:.4f}")

# %% [markdown]
# ## The same parameters, another description
#
# A layer holds no tensors, so a second model that differs only in what it returns can
# use the trained parameters unchanged: with `return_sequence=True` the recurrence
# returns the hidden state at every step, `(N, T, 32)`, and the `Linear` head (which acts
# on the last dimension) classifies after each prefix of the trajectory. The parameter
# trees of the two descriptions have the same structure (`lux.check_structure` would
# raise otherwise); at the last step the predictions are those of the trained model.

# %%
every_step = lux.Chain(
    lux.Recurrence(lux.LSTMCell(2, 32), return_sequence=True),
    lux.Linear(32, 2),
)
lux.check_structure(every_step, ts.params, ts.states)

per_step = predict(every_step, ts.params, ts.states, x_test)  # (N, T)
acc_per_step = (per_step == y_test[:, None]).float().mean(0)
final = predict(model, ts.params, ts.states, x_test)
print("last step as the model:", torch.equal(per_step[:, -1], final))
for t in (1, 2, 3, 5, 10, 20):
    print(f"test accuracy after {t:2d} points: {acc_per_step[t - 1]:.3f}")

# %% [markdown]
# The model was trained on the last step only, yet its prediction after a prefix of the
# trajectory is right more and more often as the prefix grows (the curve below).
#
# ## Results

# %%
fig, axes = plt.subplots(2, 4, figsize=(8, 4.4))
colors = ("tab:blue", "tab:orange")
for i, ax in enumerate(axes.flat):
    xi, t, p = x_test[i], int(y_test[i]), int(final[i])
    ax.plot(xi[:, 0], xi[:, 1], "-", color=colors[p], lw=1.5)
    ax.plot(xi[0, 0], xi[0, 1], "o", color=colors[p], ms=4)  # start
    end, before = xi[-1].tolist(), xi[-2].tolist()
    arrow = {"arrowstyle": "->", "color": colors[p], "lw": 1.5}
    ax.annotate("", xy=end, xytext=before, arrowprops=arrow)
    wrong = "" if t == p else f"\n(true: {CLASSES[t]})"
    ax.set_title(CLASSES[p] + wrong, fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("test trajectories by predicted class (dot: start)")
fig.tight_layout()
plt.show()

# %%
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.3))
ax_loss.semilogy(losses, lw=0.8)
ax_loss.set(xlabel="step", ylabel="cross-entropy", title="training loss")
ax_acc.plot(range(1, SEQ_LEN + 1), acc_per_step, "o-", ms=3)
ax_acc.set(xlabel="points seen", ylabel="test accuracy", ylim=(0.4, 1.02))
ax_acc.set_title("accuracy after a prefix")
fig.tight_layout()
plt.show()
