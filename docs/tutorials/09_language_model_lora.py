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
# # A small language model: KV cache, LoRA and safetensors
#
# `lux_torch.models.TransformerLM` is a Llama-style decoder: token embedding, blocks of
# RMSNorm → grouped-query attention with RoPE → RMSNorm → SwiGLU, a final RMSNorm and an LM
# head. This notebook trains one on two-digit addition, generates answers with the KV cache
# (kept in `st`, so decoding stays a pure function), teaches it subtraction with LoRA while
# its weights stay frozen, merges the adapters back exactly, and saves the result as
# safetensors.
#
# The script version, `examples/tiny_lm.py`, trains longer (800 + 500 steps); this
# notebook trains for 500 + 300 steps at a higher learning rate.

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import lux_torch as lux
from lux_torch.layers.lora import apply_lora, merge_lora
from lux_torch.models import TransformerLM, generate

torch.set_num_threads(1)  # small ops: one thread avoids OpenMP spin-waiting

# %% [markdown]
# ## Data
#
# Strings `"ab+cd=xyz"` of fixed width, as tokens: digits 0–9, `+` (10), `-` (11), `=` (12).
# The three answer digits are written least-significant first (`27+85=211` means 112), the
# order in which a left-to-right model can carry. A tenth of all operand pairs is held out.

# %%
PLUS, MINUS, EQUALS, VOCAB, PROMPT, LENGTH = 10, 11, 12, 13, 6, 9


def encode(a, b, op):
    result = a + b if op == PLUS else a - b
    digits = [a // 10, a % 10, torch.full_like(a, op), b // 10, b % 10]
    answer = [result % 10, result // 10 % 10, result // 100]
    return torch.stack([*digits, torch.full_like(a, EQUALS), *answer], 1)


def pairs(op, key):
    a, b = torch.meshgrid(torch.arange(100), torch.arange(100), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    if op == MINUS:
        a, b = a[a >= b], b[a >= b]
    both = torch.stack([a, b], 1)[lux.random.permutation(key, a.numel())]
    n_test = both.shape[0] // 10
    return both[n_test:], both[:n_test]


keys = lux.random.split(lux.random.key(0), 6)
add_train, add_test = pairs(PLUS, keys[0])
sub_train, sub_test = pairs(MINUS, keys[1])
print(encode(add_test[:3, 0], add_test[:3, 1], PLUS))

# %% [markdown]
# ## The model
#
# Two blocks, 4 query heads sharing 2 key/value heads (grouped-query attention), a
# preallocated KV cache for sequences up to 9 tokens. The printout shows every layer with
# its parameter count.

# %%
model = TransformerLM(
    VOCAB, 64, 2, 4, num_kv_heads=2, hidden_dim=128, max_len=LENGTH
)
ps, st = lux.setup(keys[2], model)
print(model)

# %% [markdown]
# ## Training
#
# The loss is the cross-entropy of the three answer tokens; `lux.train_step` does the
# forward, the backward and the AdamW update in one pure call.


# %%
def loss_fn(model, ps, st, tokens):
    logits, st = model(tokens[:, :-1], ps, st)
    answer = logits[:, PROMPT - 1 :].reshape(-1, VOCAB)
    return F.cross_entropy(answer, tokens[:, PROMPT:].reshape(-1)), st, {}


def train(ts, data, op, steps, key):
    losses = []
    for step in range(steps):
        idx = lux.random.randint(
            lux.random.fold_in(key, step), (128,), 0, data.shape[0]
        )
        tokens = encode(data[idx, 0], data[idx, 1], op)
        ts, loss, _ = lux.train_step(loss_fn, tokens, ts)
        losses.append(loss.item())
    return ts, losses


schedule = lux.optim.warmup_cosine_decay_schedule(0.0, 1e-2, 30, 500)
ts = lux.TrainState(
    model, ps, st, lux.optim.adamw(schedule, weight_decay=0.01)
)
ts, add_losses = train(ts, add_train, PLUS, 500, keys[3])
print(f"final loss {add_losses[-1]:.4f}")

# %% [markdown]
# ## Generation with the KV cache
#
# `generate` feeds the prompt once, then one token per step: each call appends the new
# keys and values to the cache in `st` and returns the updated state. Greedy decoding
# here (pass `key=` to sample). Cached decoding gives the same tokens as recomputing the
# whole prefix at every step (`cache=False`), and logits equal to rounding.


# %%
def accuracy(model, ps, st, test, op):
    tokens = encode(test[:, 0], test[:, 1], op)
    with torch.no_grad():
        out = generate(model, ps, st, tokens[:, :PROMPT], LENGTH - PROMPT)
    right = (out.tokens[:, PROMPT:] == tokens[:, PROMPT:]).all(1)
    return right.float().mean().item(), out


add_acc, cached = accuracy(model, ts.params, ts.states, add_test, PLUS)
uncached = generate(
    model, ts.params, ts.states, cached.tokens[:, :PROMPT], 3, cache=False
)
print(f"held-out addition accuracy: {add_acc:.3f}")
print(
    "cached == uncached tokens:", torch.equal(cached.tokens, uncached.tokens)
)
print(
    f"largest logit difference: {(cached.logits - uncached.logits).abs().max():.1e}"
)
sub_before, _ = accuracy(model, ts.params, ts.states, sub_test, MINUS)
print(f"subtraction before fine-tuning: {sub_before:.3f}")

# %% [markdown]
# ## LoRA fine-tuning on subtraction
#
# `apply_lora` wraps the named linear maps of every block in `LoRA(layer, rank, alpha)` and
# freezes everything else: frozen weights move to `st`, so `ps` — what the optimizer and
# the gradients see — holds only the low-rank `A`/`B` matrices. `B` starts at zero, so
# the wrapped model computes exactly what the trained one does.

# %%
targets = ("q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3")
lora_model, lora_ps, lora_st = apply_lora(
    model, ts.params, ts.states, keys[4], targets, rank=8, alpha=16.0
)
n_lora, n_base = lux.tree.count(lora_ps), lux.param_count(model)
print(
    f"trainable: {n_lora:,} of {n_base:,} parameters ({n_lora / n_base:.1%})"
)

x = encode(sub_test[:4, 0], sub_test[:4, 1], MINUS)
before, _ = model(x, ts.params, lux.test_mode(ts.states))
wrapped, _ = lora_model(x, lora_ps, lux.test_mode(lora_st))
print("wrapped model equals the base model:", torch.equal(before, wrapped))

# %%
schedule = lux.optim.warmup_cosine_decay_schedule(0.0, 1e-2, 20, 300)
ts2 = lux.TrainState(lora_model, lora_ps, lora_st, lux.optim.adam(schedule))
ts2, sub_losses = train(ts2, sub_train, MINUS, 300, keys[5])
sub_lora, _ = accuracy(lora_model, ts2.params, ts2.states, sub_test, MINUS)
print(f"subtraction after LoRA: {sub_lora:.3f}")

# %% [markdown]
# ## Merging the adapters
#
# `merge_lora` folds each `(alpha / rank) * B @ A` into its base weight and returns a plain
# `TransformerLM` again; its outputs equal the adapted model's to float rounding.

# %%
merged, m_ps, m_st = merge_lora(lora_model, ts2.params, ts2.states)
adapted, _ = lora_model(x, ts2.params, lux.test_mode(ts2.states))
plain, _ = merged(x, m_ps, lux.test_mode(m_st))
print(
    type(merged).__name__,
    f"max |difference| {(adapted - plain).abs().max():.1e}",
)

# %% [markdown]
# ## Saving and loading safetensors
#
# `save_safetensors` writes `ps` and `st` under their dotted names (`blocks_1.attn.q_proj.weight`
# …); `load_safetensors` rebuilds them for a model and checks every name and shape. (Needs
# the `lm` extra: `pip install "lux_torch[lm]"`.)

# %%
import tempfile
from pathlib import Path

from lux_torch.interop.safetensors import load_safetensors, save_safetensors

with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "adder_subtractor.safetensors"
    save_safetensors(path, m_ps, m_st)
    loaded_ps, loaded_st = load_safetensors(path, merged)
print("round trip exact:", lux.tree.allclose(loaded_ps, m_ps, rtol=0, atol=0))

# %% [markdown]
# The two training phases:

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.semilogy(add_losses, lw=0.8, label="addition (all weights)")
steps = range(len(add_losses), len(add_losses) + len(sub_losses))
ax.semilogy(steps, sub_losses, lw=0.8, label="subtraction (LoRA only)")
ax.set(xlabel="step", ylabel="answer cross-entropy")
ax.legend()
ax.grid(True, which="both", alpha=0.3)
plt.show()
