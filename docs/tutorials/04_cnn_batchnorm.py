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
# # A CNN with BatchNorm and Dropout
#
# A small convolutional network on scikit-learn's 8x8 handwritten digits (bundled with
# scikit-learn, no download). The point of this notebook is **state**: `BatchNorm2d`'s
# running statistics and `Dropout`'s random key live in the state tree `st`, every call
# returns them updated, and switching between training and inference is a change of
# `st`, not of the model.
#
# The script version, `examples/cnn_digits.py`, trains for 15 epochs and plots the
# misclassified digits; this notebook trains for 8.

# %%
import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits

import lux_torch as lux

# The ops here are small: one thread avoids OpenMP spin-waiting when
# other processes share the cores (it can make steps many times slower).
torch.set_num_threads(1)

# %% [markdown]
# ## Data
#
# 1797 images as `(N, 1, 8, 8)` tensors scaled to $[0, 1]$, shuffled with a `lux.random`
# key and split 80/20.

# %%
images, labels = load_digits(return_X_y=True)
x_all = (
    torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
)
y_all = torch.as_tensor(labels, dtype=torch.int64)

split_key, init_key, shuffle_key = lux.random.split(lux.random.key(0), 3)
perm = lux.random.permutation(split_key, x_all.shape[0])
n_test = round(0.2 * x_all.shape[0])
x_test, y_test = x_all[perm[:n_test]], y_all[perm[:n_test]]
x_train, y_train = x_all[perm[n_test:]], y_all[perm[n_test:]]
print(f"{len(x_train)} training and {len(x_test)} test images")

# %% [markdown]
# ## The model
#
# Two convolution blocks (`Conv2d`, `BatchNorm2d` with a ReLU, `MaxPool2d`), then a
# classifier head with `Dropout`. Names and shapes of parameters follow `torch.nn`;
# BatchNorm takes an `activation=` as in Lux.

# %%
model = lux.Chain(
    lux.Conv2d(1, 16, 3, padding=1),
    lux.BatchNorm2d(16, activation=torch.relu),
    lux.MaxPool2d(2),  # 8x8 -> 4x4
    lux.Conv2d(16, 32, 3, padding=1),
    lux.BatchNorm2d(32, activation=torch.relu),
    lux.MaxPool2d(2),  # 4x4 -> 2x2
    lux.Flatten(),
    lux.Dropout(0.3),
    lux.Linear(128, 64, activation=torch.relu),
    lux.Linear(64, 10),
)
ps, st = lux.setup(init_key, model)
print(model)

# %% [markdown]
# The state tree holds the running statistics of both BatchNorm layers and the dropout
# key, plus a `training` flag in each of these three layers:


# %%
def show(tree):
    """Each leaf's dotted path, shape and dtype (not its values)."""
    leaves = lux.tree.leaves(tree)
    for path, leaf in zip(lux.tree.paths(tree), leaves, strict=True):
        print(f"{path:28s} {tuple(leaf.shape)!s:6s} {leaf.dtype}")


show(st)
for name in ("layer_2", "layer_5", "layer_8"):
    print(f"{name}.training: {st[name]['training']}")

# %% [markdown]
# ## Threading the state by hand
#
# In training mode, BatchNorm normalizes with the batch's statistics and returns running
# averages updated with them; Dropout draws a mask from its key and returns the next key.
# The input `st` is never modified: the new values are in the returned state.

# %%
batch = x_train[:64]
logits, st_after = model(batch, ps, st)
bn, bn_after = st["layer_2"], st_after["layer_2"]
print("running_mean before:", bn["running_mean"][:4])
print("running_mean after: ", bn_after["running_mean"][:4])
n0, n1 = bn["num_batches_tracked"], bn_after["num_batches_tracked"]
print(f"batches tracked: {int(n0)} -> {int(n1)}")
key0, key1 = st["layer_8"]["key"], st_after["layer_8"]["key"]
print("dropout key advanced:", not torch.equal(key0, key1))

# %% [markdown]
# `lux.test_mode(st)` returns a copy of the state with every `training` flag off:
# BatchNorm then uses its running statistics (and returns them unchanged) and Dropout is
# the identity. In test mode the same input gives the same output on every call; in
# training mode consecutive calls (threading the state) draw different dropout masks.

# %%
test_st = lux.test_mode(st_after)
a, st_a = model(batch, ps, test_st)
b, _ = model(batch, ps, st_a)
print("test mode, two calls equal:", torch.equal(a, b))
same_bn = torch.equal(
    st_a["layer_2"]["running_mean"], bn_after["running_mean"]
)
print("test mode, running_mean unchanged:", same_bn)

c, st_c = model(batch, ps, st_after)
d, _ = model(batch, ps, st_c)
print("training mode, two calls equal:", torch.equal(c, d))

# %% [markdown]
# ## Training
#
# `lux.train_step` threads the state for us: the loss function returns the new state, and
# the returned train state holds it in `ts.states`. AdamW with a cosine-decay schedule,
# mini-batches of 64 (the last partial batch of each epoch is dropped), and the test
# accuracy in test mode after every epoch.

# %%
EPOCHS = 8
BATCH = 64
n_batches = len(x_train) // BATCH
schedule = lux.optim.cosine_decay_schedule(3e-3, EPOCHS * n_batches)
optimizer = lux.optim.adamw(schedule, weight_decay=1e-3)
ts = lux.TrainState(model, ps, st, optimizer)
loss_fn = lux.losses.CrossEntropyLoss()


def accuracy(ts, x, y):
    with torch.no_grad():
        logits, _ = ts.model(x, ts.params, lux.test_mode(ts.states))
    return (logits.argmax(1) == y).float().mean().item()


losses, test_acc = [], []
epoch_keys = lux.random.split(shuffle_key, EPOCHS)
for epoch in range(EPOCHS):
    order = lux.random.permutation(epoch_keys[epoch], len(x_train))
    for i in range(n_batches):
        idx = order[i * BATCH : (i + 1) * BATCH]
        batch = (x_train[idx], y_train[idx])
        ts, loss, _ = lux.train_step(loss_fn, batch, ts)
        losses.append(loss.item())
    test_acc.append(accuracy(ts, x_test, y_test))
    print(f"epoch {epoch + 1}: test accuracy {test_acc[-1]:.3f}")

# %% [markdown]
# The running statistics have been tracked through every step:

# %%
bn = ts.states["layer_2"]
print("batches tracked:", int(bn["num_batches_tracked"]))
print("running_var:", bn["running_var"][:4])

# %% [markdown]
# Evaluating with the state still in training mode would normalize each test batch by its
# own statistics and apply dropout; here is the difference on the test set:

# %%
with torch.no_grad():
    logits_train_mode, _ = model(x_test, ts.params, ts.states)
train_mode_acc = (logits_train_mode.argmax(1) == y_test).float().mean()
print(f"test accuracy, test mode:     {test_acc[-1]:.3f}")
print(f"test accuracy, training mode: {train_mode_acc:.3f}")

# %% [markdown]
# ## Results
#
# The training loss, and the confusion matrix of the test set in test mode (rows: true
# digit, columns: predicted digit).

# %%
fig, ax = plt.subplots(figsize=(7, 3))
ax.semilogy(losses, lw=0.8)
for e in range(1, EPOCHS):
    ax.axvline(e * n_batches, color="gray", ls=":", lw=0.8)
ax.set(xlabel="step (dotted: epochs)", ylabel="cross-entropy", title="loss")
fig.tight_layout()
plt.show()

# %%
with torch.no_grad():
    logits, _ = model(x_test, ts.params, lux.test_mode(ts.states))
predicted = logits.argmax(1)
confusion = torch.zeros(10, 10, dtype=torch.int64)
ones = torch.ones_like(y_test)
confusion.index_put_((y_test, predicted), ones, accumulate=True)

fig, ax = plt.subplots(figsize=(6, 5))
im = ax.imshow(confusion, cmap="Blues")
for i, j in confusion.nonzero().tolist():
    count = int(confusion[i, j])
    color = "white" if count > confusion.max() / 2 else "black"
    ax.text(j, i, count, ha="center", va="center", fontsize=9, color=color)
ax.set(xticks=range(10), yticks=range(10))
ax.set(xlabel="predicted digit", ylabel="true digit")
ax.set_title(f"test set, accuracy {test_acc[-1]:.3f}")
fig.colorbar(im, ax=ax, label="test images")
fig.tight_layout()
plt.show()
