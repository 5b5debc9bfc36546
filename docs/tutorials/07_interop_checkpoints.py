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
# # Interop with torch.nn, and checkpoints
#
# lux_torch lives next to `torch.nn`, not instead of it. This notebook moves one small
# network back and forth and checks at each step that the outputs agree:
#
# - `lux.from_torch(module)`: any `nn.Module` as a pure lux layer;
# - `lux.load_state_dict(model, sd)` / `lux.state_dict(ps, st)`: a native lux model
#   from a torch `state_dict`, and back;
# - `lux.to_torch(model, ps, st)`: a lux model as an `nn.Module` (for `torch.optim`, or any
#   code that wants a module);
# - `lux.save` / `lux.load`: checkpoints of whole trees (parameters, state, optimizer
#   state, step);
# - `lux.export`: a `torch.export` program that runs without lux_torch.

# %%
import os
import tempfile
from collections import OrderedDict

import torch
from torch import nn

import lux_torch as lux

# The ops here are tiny: one thread avoids OpenMP spin-waiting when
# other processes share the cores (it can make steps many times slower).
torch.set_num_threads(1)

# %% [markdown]
# ## A torch network
#
# A small classifier with BatchNorm, so that there is state (running statistics) as well
# as parameters. Its submodules are named like a `lux.Chain`'s children (`layer_1`,
# `layer_2`, ...), which makes its `state_dict` load into the lux model below unchanged.
# `torch.manual_seed` here initialises the *torch* module only; lux never reads torch's
# global generator.

# %%
torch.manual_seed(0)
net = nn.Sequential(
    OrderedDict(
        layer_1=nn.Linear(4, 16),
        layer_2=nn.BatchNorm1d(16),
        layer_3=nn.ReLU(),
        layer_4=nn.Linear(16, 3),
    )
)
# give BatchNorm non-trivial running statistics: a few forward passes in training mode
with torch.no_grad():
    for _ in range(5):
        net(torch.randn(32, 4) * 2 + 1)
net.eval()

x = lux.random.normal(lux.random.key(0), (8, 4))
with torch.no_grad():
    y_torch = net(x)
list(net.state_dict())

# %% [markdown]
# ## `from_torch`: a module as a lux layer
#
# The wrapped module's parameters become `ps`, its buffers become `st`, nested by module
# path. `lux.setup` copies the module's current tensors; `st["training"]` starts as
# `module.training`. The call is pure: the module is never modified.

# %%
layer = lux.from_torch(net)
ps, st = lux.setup(0, layer)


def show(tree, prefix):
    """Each leaf's dotted path and shape (not its values)."""
    leaves = lux.tree.leaves(tree)
    for path, leaf in zip(lux.tree.paths(tree), leaves, strict=True):
        print(f"{prefix} {path:28s} {tuple(leaf.shape)}")


show(ps, "ps")
show(st, "st")
y_wrapped, _ = layer(x, ps, st)
print("output equals the module's:", torch.equal(y_wrapped, y_torch))

# %% [markdown]
# Because it is now a pure function of `ps`, `torch.func` applies directly, for example
# for per-sample gradients of the wrapped module:


# %%
def sample_loss(ps, xi):
    out, _ = layer(xi[None], ps, st)
    return out.square().sum()


per_sample = torch.func.vmap(torch.func.grad(sample_loss), in_dims=(None, 0))(
    ps, x
)
tuple(per_sample["layer_1"]["weight"].shape)

# %% [markdown]
# ## A native lux model from the torch `state_dict`
#
# The same architecture built from lux layers has the same parameter and buffer names,
# so the module's `state_dict` loads directly. `lux.load_state_dict` returns `(ps, st)`
# in training mode; every missing, unexpected or mis-shaped entry would raise a
# `lux.StateDictError` listing them all.

# %%
model = lux.Chain(
    lux.Linear(4, 16), lux.BatchNorm1d(16), lux.ReLU(), lux.Linear(16, 3)
)
print(model)
ps, st = lux.load_state_dict(model, net.state_dict())
y_lux, _ = model(
    x, ps, lux.test_mode(st)
)  # net is in eval mode: compare in test mode
print("max |lux - torch|:", (y_lux - y_torch).abs().max().item())
torch.testing.assert_close(y_lux, y_torch)

# %% [markdown]
# The lux layers compute the same maths with their own code, so the outputs agree to
# floating-point rounding (printed above), not necessarily bit for bit.
#
# And back: `lux.state_dict(ps, st)` is a flat `state_dict` with the module's names,
# which a fresh torch module accepts. It lists the parameters first, then the state
# tensors (torch lists them module by module); `load_state_dict` goes by name, so the
# order does not matter for loading.

# %%
sd = lux.state_dict(ps, st)
print(*sd, sep="\n")
print(
    "same names as the module's state_dict:",
    sorted(sd) == sorted(net.state_dict()),
)

net_copy = nn.Sequential(
    OrderedDict(
        layer_1=nn.Linear(4, 16),
        layer_2=nn.BatchNorm1d(16),
        layer_3=nn.ReLU(),
        layer_4=nn.Linear(16, 3),
    )
)
net_copy.load_state_dict(sd)
net_copy.eval()
with torch.no_grad():
    print(
        "round trip through lux, module outputs equal:",
        torch.equal(net_copy(x), y_torch),
    )

# %% [markdown]
# ## `to_torch`: a lux model as an `nn.Module`
#
# `lux.to_torch(model, ps, st)` registers `ps` as `nn.Parameter`s and the state tensors
# as buffers, named as in `lux.state_dict`. `.train()` and `.eval()` switch the lux
# modes. Here a few steps of `torch.optim.SGD` train the module in place; the trees come
# back with `module.lux_params()` and `module.lux_state()`. With `copy=True` (the
# default) the given `ps` and `st` are left untouched.

# %%
module = lux.to_torch(model, ps, st)
print(*(name for name, _ in module.named_parameters()), sep="\n")

opt = torch.optim.SGD(module.parameters(), lr=0.1)
targets = lux.random.randint(lux.random.key(1), (8,), 0, 3)
module.train()
for _ in range(20):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(module(x), targets)
    loss.backward()
    opt.step()
print(f"loss after 20 SGD steps: {loss.item():.4f}")

ps_trained, st_trained = module.lux_params(), module.lux_state()
module.eval()
with torch.no_grad():
    y_module = module(x)
y_tree, _ = model(x, ps_trained, lux.test_mode(st_trained))
print("module and lux call agree:", torch.equal(y_module, y_tree))
print(
    "the original ps is unchanged:",
    torch.equal(ps["layer_1"]["weight"], net.state_dict()["layer_1.weight"]),
)

# %% [markdown]
# ## Checkpoints: `lux.save` and `lux.load`
#
# `lux.save(path, tree)` writes any tree of tensors, Python scalars and strings, lists,
# tuples, dicts and mode flags: a whole training run's state in one file. The write is
# atomic (a temporary file renamed into place), and `lux.load` never executes code from
# the file: it reads only what `lux.save` writes and rejects anything else.

# %%
ts = lux.TrainState(model, ps_trained, st_trained, lux.optim.adam(1e-3))
ts, _, _ = lux.train_step(lux.losses.CrossEntropyLoss(), (x, targets), ts)

checkpoint = {
    "params": ts.params,
    "states": ts.states,
    "opt_state": ts.opt_state,
    "step": ts.step,
    "note": "after one Adam step",
}
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "checkpoint.pt")
    lux.save(path, checkpoint)
    print(f"{os.path.getsize(path):,} bytes written")
    restored = lux.load(path)

print("step and note:", restored["step"], repr(restored["note"]))


def identical(a, b):
    pairs = zip(lux.tree.leaves(a), lux.tree.leaves(b), strict=True)
    return all(torch.equal(u, v) for u, v in pairs)


for part in ("params", "states", "opt_state"):
    same = identical(checkpoint[part], restored[part])
    print(f"{part:9s} restored exactly: {same}")
print("mode flag restored:", restored["states"]["layer_2"]["training"])

# %% [markdown]
# Training resumes from the restored trees as if nothing had happened:

# %%
resumed = lux.TrainState(
    model,
    restored["params"],
    restored["states"],
    ts.optimizer,
    opt_state=restored["opt_state"],
    step=restored["step"],
)
loss_fn = lux.losses.CrossEntropyLoss()
ts_a, loss_a, _ = lux.train_step(loss_fn, (x, targets), ts)
ts_b, loss_b, _ = lux.train_step(loss_fn, (x, targets), resumed)
print(
    "the next step is identical:",
    torch.equal(loss_a, loss_b)
    and lux.tree.allclose(ts_a.params, ts_b.params, rtol=0, atol=0),
)

# %% [markdown]
# ## `lux.export`: a program without lux_torch
#
# `lux.export` traces the model in test mode with `torch.export` and bakes `ps` and the
# state in as the program's parameters and buffers. `ep.module()` then takes only the
# input; `dynamic_batch=True` leaves the batch size free. `torch.export.save` and
# `torch.export.load` store and read such programs.

# %%
ep = lux.export(model, ts.params, ts.states, x, dynamic_batch=True)
x_other = lux.random.normal(lux.random.key(2), (5, 4))  # another batch size
with torch.no_grad():
    y_exported = ep.module()(x_other)
y_expected, _ = model(x_other, ts.params, lux.test_mode(ts.states))
print(
    "exported program equals the test-mode model:",
    torch.allclose(y_exported, y_expected),
)
