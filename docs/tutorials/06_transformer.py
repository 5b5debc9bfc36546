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
# # A small transformer that reverses sequences
#
# An encoder-only transformer learns to reverse sequences of 8 digits. Output position
# $t$ must predict the input token at position $T - 1 - t$; no position can do that on its
# own, so self-attention has to learn to look at its mirror position. The notebook shows
# `Embedding`, `SinusoidalPositionalEmbedding` and `TransformerEncoderLayer` in one
# `lux.Chain`, a hand-written loss function that returns statistics, a warm-up cosine
# schedule, and the learned attention pattern.
#
# The script version, `examples/transformer_reversal.py`, trains for 1500 steps; this
# notebook trains for 400.

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import lux_torch as lux

# The ops here are small: one thread avoids OpenMP spin-waiting when
# other processes share the cores (it can make steps many times slower).
torch.set_num_threads(1)

# %% [markdown]
# ## Data
#
# Random token sequences and their reversals. A fresh batch per step comes from
# `lux.random.fold_in(key, step)`: reproducible, and no global random state.

# %%
VOCAB, SEQ_LEN, D_MODEL = 10, 8, 32


def make_data(key, n):
    x = lux.random.randint(key, (n, SEQ_LEN), 0, VOCAB)
    return x, x.flip(1)


data_key, test_key, init_key = lux.random.split(lux.random.key(0), 3)
x_test, y_test = make_data(test_key, 1000)
print("input: ", x_test[0].tolist())
print("target:", y_test[0].tolist())

# %% [markdown]
# ## The model
#
# `Chain` accepts names for its children; they become the keys of `ps` and `st`. The
# encoder blocks follow `torch.nn.TransformerEncoderLayer` (arguments, maths and parameter
# names), here post-norm, without dropout.


# %%
def encoder():
    return lux.TransformerEncoderLayer(
        D_MODEL, 4, dim_feedforward=64, dropout=0.0, batch_first=True
    )


model = lux.Chain(
    embed=lux.Embedding(VOCAB, D_MODEL),  # (N, T) -> (N, T, 32)
    position=lux.SinusoidalPositionalEmbedding(D_MODEL),  # adds position codes
    block_1=encoder(),
    block_2=encoder(),
    head=lux.Linear(D_MODEL, VOCAB),  # (N, T, 10) logits
)
ps, st = lux.setup(init_key, model)
print(model)

# %% [markdown]
# The parameters of the first block, with `torch.nn`'s names and shapes:

# %%
block_ps = ps["block_1"]
for path, leaf in zip(
    lux.tree.paths(block_ps), lux.tree.leaves(block_ps), strict=True
):
    print(f"{path:26s} {tuple(leaf.shape)}")

# %% [markdown]
# ## A loss function with statistics
#
# Any function `loss_fn(model, ps, st, data) -> (loss, st, stats)` works with
# `lux.train_step`. This one averages the cross-entropy over all positions and reports
# the token accuracy as its `stats`.


# %%
def loss_fn(model, ps, st, data):
    x, y = data
    logits, st = model(x, ps, st)
    flat = logits.reshape(-1, VOCAB)
    loss = F.cross_entropy(flat, y.reshape(-1))
    accuracy = (flat.detach().argmax(1) == y.reshape(-1)).float().mean()
    return loss, st, {"accuracy": accuracy}


# %% [markdown]
# ## Training
#
# Adam with a learning rate that warms up over 40 steps and then follows a cosine decay,
# 128 fresh sequences per step.

# %%
STEPS, BATCH = 400, 128
schedule = lux.optim.warmup_cosine_decay_schedule(0.0, 3e-3, 40, STEPS)
ts = lux.TrainState(model, ps, st, lux.optim.adam(schedule))

losses, accuracies = [], []
for step in range(STEPS):
    batch = make_data(lux.random.fold_in(data_key, step), BATCH)
    ts, loss, stats = lux.train_step(loss_fn, batch, ts)
    losses.append(loss.item())
    accuracies.append(stats["accuracy"].item())
    if (step + 1) % 100 == 0:
        acc = accuracies[-1]
        print(
            f"step {step + 1}: loss {losses[-1]:.4f}, batch accuracy {acc:.3f}"
        )

# %% [markdown]
# ## Held-out accuracy

# %%
with torch.no_grad():
    logits, _ = model(x_test, ts.params, lux.test_mode(ts.states))
predicted = logits.argmax(-1)
correct = predicted == y_test
print(f"token accuracy:         {correct.float().mean():.4f}")
print(f"whole-sequence accuracy: {correct.all(1).float().mean():.4f}")

# %% [markdown]
# ## Where does the model attend?
#
# To look inside, we run the model layer by layer and call each block's self-attention
# on its own with `need_weights=True`: a `MultiheadAttention` with the same
# configuration otherwise, called with the block's trained `ps[...]["self_attn"]`. (The
# blocks are post-norm, so a block's attention sees the block's input directly.) The
# weights are averaged over the 4 heads and over the test sequences.

# %%
layers = model.children()
attention = lux.MultiheadAttention(
    D_MODEL, 4, batch_first=True, need_weights=True
)
test_st = lux.test_mode(ts.states)


def run(name, h):
    return layers[name](h, ts.params[name], test_st[name])[0]


maps = {}
with torch.no_grad():
    h = run("position", run("embed", x_test))
    for name in ("block_1", "block_2"):
        attn_ps, attn_st = (
            ts.params[name]["self_attn"],
            test_st[name]["self_attn"],
        )
        (_, weights), _ = attention((h, h, h), attn_ps, attn_st)
        maps[name] = weights.mean(0)  # (query position, key position)
        h = run(name, h)
        # the weight of query t on key T - 1 - t
        mirror = maps[name].flip(1).diagonal()
        print(
            f"{name}: mean weight on the mirror position {mirror.mean():.2f}"
        )
print(f"(uniform attention would give {1 / SEQ_LEN:.3f})")

# %% [markdown]
# The first block spreads its attention; the second puts almost all of it on the mirror
# position, the anti-diagonal below:

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, (name, m) in zip(axes, maps.items(), strict=True):
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
    ax.set(xlabel="key position", ylabel="query (output) position")
    ax.set_title(f"{name} attention")
fig.colorbar(im, ax=axes, label="mean attention weight")
plt.show()

# %% [markdown]
# The training loss, and a few held-out sequences with the model's output:

# %%
fig, ax = plt.subplots(figsize=(7, 3))
ax.semilogy(losses, lw=0.8)
ax.set(xlabel="step", ylabel="cross-entropy", title="training loss")
fig.tight_layout()
plt.show()

for xi, pi, ok in zip(
    x_test[:6], predicted[:6], correct.all(1)[:6], strict=True
):
    mark = "correct" if ok else "WRONG"
    print(f"{xi.tolist()} -> {pi.tolist()}  {mark}")
