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
# # Writing your own layers
#
# A layer is a small class: configuration fields, `init_params` (and `init_state` if it
# keeps state) returning dicts of tensors, and a pure `__call__(x, ps, st) -> (y, st)`.
# Printing with counts, containers, `torch.func`, `torch.compile` and mode switching come
# for free. This notebook writes
#
# 1. a layer with parameters (a SIREN sine layer), checks it against a `torch.nn`
#    reference with `lux.testing.check_layer`, and trains a small network of them;
# 2. a layer with state and a training flag, and shows `check_layer` catching an impure
#    version of it;
# 3. a layer without a class, with `lux.compact`;
# 4. edits of models and parameter trees with `lux.tree.at`.

# %%
import dataclasses
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import lux_torch as lux
from lux_torch.testing import check_layer

# The ops here are tiny: one thread avoids OpenMP spin-waiting when
# other processes share the cores (it can make steps many times slower).
torch.set_num_threads(1)

# %% [markdown]
# ## A layer with parameters
#
# SIREN (Sitzmann et al., *Implicit Neural Representations with Periodic Activation
# Functions*, NeurIPS 2020) uses layers $y = \sin(\omega_0 (W x + b))$ with an
# initialization scaled so that activations stay well distributed through depth: $W \sim
# U(-1/n, 1/n)$ in the first layer, $U(-\sqrt{6/n}/\omega_0, \sqrt{6/n}/\omega_0)$ after it
# ($n$ = `in_features`).
#
# Subclasses of `lux.Layer` become frozen dataclasses: the annotated class attributes
# are the configuration fields. Tensors are created in `init_params` from the key it
# receives, with the initializers of `lux.init` (explicit keys, no global generator).


# %%
class SineLayer(lux.Layer):
    """``y = sin(omega_0 * (x @ weight.T + bias))`` (SIREN).

    Parameters: ``weight`` ``(out_features, in_features)``,
    ``bias`` ``(out_features,)``.
    """

    in_features: int
    out_features: int
    omega_0: float = 30.0
    is_first: bool = False

    def init_params(self, key):
        w_key, b_key = lux.random.split(key)
        n = self.in_features
        w = 1 / n if self.is_first else math.sqrt(6 / n) / self.omega_0
        b = 1 / math.sqrt(n)  # torch.nn.Linear's default bias bound
        out = self.out_features
        return {
            "weight": lux.init.uniform(w_key, out, n, low=-w, high=w),
            "bias": lux.init.uniform(b_key, out, low=-b, high=b),
        }

    def __call__(self, x, ps, st):
        z = F.linear(x, ps["weight"], ps["bias"])
        return torch.sin(self.omega_0 * z), st

    def extra_repr(self):
        sizes = f"{self.in_features} => {self.out_features}"
        return f"{sizes}, omega_0={self.omega_0}"


siren = lux.Chain(
    SineLayer(1, 32, is_first=True),
    SineLayer(32, 32),
    lux.Linear(32, 1),
)
print(siren)

# %% [markdown]
# The printout with counts, `lux.setup`, and the call work as for the built-in layers.
# The layer is immutable and compares by configuration:

# %%
ps, st = lux.setup(0, siren)
print(siren(torch.zeros(4, 1), ps, st)[0].shape)
print("equal by configuration:", SineLayer(1, 32) == SineLayer(1, 32))
try:
    siren.children()["layer_1"].omega_0 = 10.0
except dataclasses.FrozenInstanceError as err:
    print("FrozenInstanceError:", err)

# %% [markdown]
# ## Checking it with `check_layer`
#
# `lux.testing.check_layer` runs a layer through the same conformance checks as every
# built-in layer: structure and counts, shapes, purity (no input modified in place),
# determinism, parity with a reference, `gradcheck` in float64, forward-mode AD,
# `torch.compile(fullgraph=True)`, `vmap` over a batch of parameter sets, and the device
# check (skipped without CUDA). The reference here is a `torch.nn` module computing the
# same function; `rename` maps our parameter names to its. `compile_backend="aot_eager"`
# checks graph capture only, which is quicker than the default Inductor.


# %%
class TorchSine(nn.Module):
    def __init__(self, in_features, out_features, omega_0):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.omega_0 = omega_0

    def forward(self, x):
        return torch.sin(self.omega_0 * self.linear(x))


x = lux.random.normal(lux.random.key(1), (5, 3))
report = check_layer(
    SineLayer(3, 4, omega_0=2.0),
    x,
    reference=TorchSine(3, 4, 2.0),
    rename=lambda name: "linear." + name,
    compile_backend="aot_eager",
)
for check, result in report.items():
    print(f"{check:12s} {result}")

# %% [markdown]
# ## Training it
#
# A custom layer trains like any other. Fitting a signal with a sharp feature, SIREN
# against a tanh MLP of the same size, 500 full-batch Adam steps each:

# %%
x_fit = torch.linspace(-1, 1, 256).unsqueeze(1)
y_fit = (
    torch.sin(8 * x_fit) * torch.exp(-4 * x_fit**2)
    + (x_fit > 0.3).float() * 0.5
)

tanh_mlp = lux.Chain(
    lux.Linear(1, 32, activation=torch.tanh),
    lux.Linear(32, 32, activation=torch.tanh),
    lux.Linear(32, 1),
)
mse = lux.losses.MSELoss()
fits = {}
for name, model in (("SIREN", siren), ("tanh MLP", tanh_mlp)):
    ts = lux.TrainState(
        model, *lux.setup(lux.random.key(2), model), lux.optim.adam(1e-3)
    )
    for _ in range(500):
        ts, loss, _ = lux.train_step(mse, (x_fit, y_fit), ts)
    fits[name] = model(x_fit, ts.params, ts.states)[0].detach()
    n = lux.param_count(model)
    print(f"{name:9s} {n} parameters, final MSE {loss.item():.2e}")

fig, ax = plt.subplots(figsize=(7.5, 3.5))
ax.plot(x_fit, y_fit, "k", lw=2.5, alpha=0.3, label="target")
for name, fit in fits.items():
    ax.plot(x_fit, fit, lw=1.2, label=name)
ax.set(xlabel="x", ylabel="y", title="500 Adam steps")
ax.legend(loc="lower left")
fig.tight_layout()
plt.show()

# %% [markdown]
# With the same optimizer settings and step count, the SIREN follows the target, jump
# included, while the tanh MLP is still a smooth curve far from it.

# %% [markdown]
# ## A layer with state and a training flag
#
# State goes in `init_state`; a layer that behaves differently in training and inference
# keeps a `training` flag there as a `lux.tree.Static(True)`: part of the tree's
# structure, not a tensor leaf, so `lux.test_mode` can clear it and `vmap`/`compile` never
# see it as data. The call returns the new state; it never modifies the given one.
#
# This layer standardizes its input with running estimates of each feature's mean and
# variance, updated in training mode (a BatchNorm without the affine part):


# %%
class RunningStandardize(lux.Layer):
    """Standardize with running mean/variance (updated in training mode).

    States: ``mean``, ``var`` ``(features,)``, ``training``.
    """

    features: int
    momentum: float = 0.1
    eps: float = 1e-5

    def init_state(self, key):
        return {
            "mean": torch.zeros(self.features),
            "var": torch.ones(self.features),
            "training": lux.tree.Static(True),
        }

    def __call__(self, x, ps, st):
        if st["training"]:
            mean, var = x.mean(0), x.var(0, unbiased=False)
            m = self.momentum
            st = {
                **st,
                "mean": (1 - m) * st["mean"] + m * mean.detach(),
                "var": (1 - m) * st["var"] + m * var.detach(),
            }
        else:
            mean, var = st["mean"], st["var"]
        return (x - mean) / torch.sqrt(var + self.eps), st


layer = RunningStandardize(3)
print(layer)
data = 2 * lux.random.normal(lux.random.key(3), (64, 3)) + 1
ps, st = lux.setup(0, layer)
for _ in range(50):
    _, st = layer(data, ps, st)
# after 50 training-mode calls:
print("running mean:", st["mean"])
print("data mean:   ", data.mean(0))

# %% [markdown]
# `check_layer` runs every check in both modes when the state has a `training` flag:

# %%
report = check_layer(layer, data[:8], compile_backend="aot_eager")
passed = [c for c, r in report.items() if r == "passed"]
print(len(passed), "checks passed; skipped:")
for check, result in report.items():
    if result != "passed":
        print(f"  {check:14s} {result}")

# %% [markdown]
# An in-place update of the state is a classic bug: it silently changes the caller's
# `st`. `check_layer` catches it and names the tensor:


# %%
class LeakyStandardize(RunningStandardize):
    def __call__(self, x, ps, st):
        if st["training"]:
            st["mean"].mul_(1 - self.momentum).add_(
                self.momentum * x.mean(0)
            )  # in place!
        return x - st["mean"], st


try:
    check_layer(LeakyStandardize(3), data[:8], compile_backend="aot_eager")
except AssertionError as err:
    print(err)

# %% [markdown]
# ## Without a class: `lux.compact`
#
# For a one-off layer, `lux.compact` declares the children (layers), parameters
# (`lux.Param(shape, init)`) and state tensors (`lux.Buffer`) by name and turns a
# function `forward(x, ps, st, layers) -> (y, st)` into a layer. Here a residual SIREN
# block with a learned gate that starts at zero, so the block starts as the identity:


# %%
@lux.compact(
    sine=SineLayer(32, 32),
    gate=lux.Param((32,), lux.init.zeros),
)
def gated_residual(x, ps, st, layers):
    h, st_sine = layers.sine(x, ps["sine"], st["sine"])
    return x + ps["gate"] * h, {**st, "sine": st_sine}


print(gated_residual)
ps, st = lux.setup(0, gated_residual)
for path, leaf in zip(lux.tree.paths(ps), lux.tree.leaves(ps), strict=True):
    print(f"{path:12s} {tuple(leaf.shape)}")
h = lux.random.normal(lux.random.key(4), (4, 32))
print(
    "identity at initialization:", torch.equal(gated_residual(h, ps, st)[0], h)
)

# %% [markdown]
# It composes with containers and goes through `check_layer` like a class:

# %%
deep = lux.Chain(
    SineLayer(1, 32, is_first=True),
    gated_residual,
    gated_residual,
    lux.Linear(32, 1),
)
print(deep)
report = check_layer(gated_residual, h, compile_backend="aot_eager")
print(sorted(set(report.values())))

# %% [markdown]
# ## Surgery with `lux.tree.at`
#
# `lux.tree.at(where, tree, replace=...)` returns a copy of a tree with selected parts
# replaced (Equinox's `tree_at`); nothing is mutated. On a **model**, `where` selects
# fields or child layers, and the layers on the way are rebuilt (their constructor
# checks run again):

# %%
slower = lux.tree.at(lambda m: m.layer_2.omega_0, siren, replace=10.0)
print(slower)
print("the original is unchanged:", siren.children()["layer_2"].omega_0)

# %% [markdown]
# Replacing a whole child layer works the same way, e.g. swapping the output layer for a
# wider one (its parameters then need a new `setup`, as the shapes changed):

# %%
two_outputs = lux.tree.at(
    lambda m: m.layer_3, siren, replace=lux.Linear(32, 2)
)
print(two_outputs)

# %% [markdown]
# On a **parameter tree**, `where` selects leaves, by a function or a dotted path, and
# `replace_fn` transforms them. Here the bias of the output layer is zeroed, and the
# first layer's weight scaled:

# %%
ps, st = lux.setup(0, siren)
edited = lux.tree.at("layer_3.bias", ps, replace=torch.zeros(1))
edited = lux.tree.at(
    lambda p: p["layer_1"]["weight"], edited, replace_fn=lambda w: 2 * w
)
print("bias zeroed:", torch.equal(edited["layer_3"]["bias"], torch.zeros(1)))
print(
    "weight doubled:",
    torch.equal(edited["layer_1"]["weight"], 2 * ps["layer_1"]["weight"]),
)
print(
    "other leaves shared, not copied:",
    edited["layer_2"]["weight"] is ps["layer_2"]["weight"],
)
