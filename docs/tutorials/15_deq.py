# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Deep equilibrium model: a classifier defined by a fixed point
#
# A deep equilibrium model (Bai, Kolter & Koltun 2019) replaces a stack of weight-tied
# layers by their fixed point: `z* = f(z*, x)`, found by a root solver, with gradients from
# the implicit function theorem instead of backpropagation through the iterations. Here a
# convolutional DEQ classifies scikit-learn's 8x8 digits (bundled, no download):
#
#     u  = Conv2d(1 => C)(x)                       input injection
#     z* = tanh(Conv2d(C => C)(z*) + u)            the DEQ
#     y  = Linear(C*16 => 10)(Flatten(MaxPool2d(2)(z*)))
#
# The full example, `examples/deq_digits.py` in the repository, trains 12 epochs and
# compares the DEQ with the explicit CNN of the same size.

# %%
import dataclasses

import matplotlib.pyplot as plt
import torch
from IPython.display import display
from sklearn.datasets import load_digits

import lux_torch as lux
from lux_torch.sciml.fixed_point import solve

torch.set_num_threads(1)

# %% [markdown]
# ## Data
#
# The 1797 digits as `(N, 1, 8, 8)` images in `[0, 1]`, shuffled by a key; a fifth is held
# out for testing.

# %%
images, labels = load_digits(return_X_y=True)
data_key, model_key, shuffle_key = lux.random.split(lux.random.key(0), 3)
order = lux.random.permutation(data_key, len(labels)).numpy()
x_all = (
    torch.as_tensor(images[order], dtype=torch.float32).reshape(-1, 1, 8, 8)
    / 16.0
)
y_all = torch.as_tensor(labels[order], dtype=torch.int64)
cut = len(y_all) * 4 // 5
x_train, y_train, x_test, y_test = (
    x_all[:cut],
    y_all[:cut],
    x_all[cut:],
    y_all[cut:],
)
print(x_train.shape, x_test.shape)

# %% [markdown]
# ## The model
#
# `lux.DEQ(f)` calls `f((z, x), ps, st)`: here a `Parallel` adds the convolution of `z` to
# the injected input `x`, then `tanh`. The Anderson solver runs at most 25 evaluations of
# `f` per batch, per-sample convergence at `rtol=1e-3`. `regularize="jacobian"` adds Bai et
# al.'s 2021 Jacobian penalty to the state, which keeps `f` contractive so the solver keeps
# converging as training goes on. `on_nonconvergence="ignore"` keeps this notebook quiet
# about batches that stop at `max_iter` (they are reported in `st["stats"]`; the default
# warns).

# %%
C = 16
cell = lux.Chain(
    lux.Parallel(torch.add, lux.Conv2d(C, C, 3, padding=1), lux.NoOpLayer()),
    torch.tanh,
)
deq = lux.DEQ(
    cell,
    solver="anderson",
    max_iter=25,
    rtol=1e-3,
    atol=1e-5,
    regularize="jacobian",
    on_nonconvergence="ignore",
)
model = lux.Chain(
    injection=lux.Conv2d(1, C, 3, padding=1),
    deq=deq,
    readout=lux.Chain(lux.MaxPool2d(2), lux.Flatten(), lux.Linear(C * 16, 10)),
)
ps, st = lux.setup(model_key, model)
display(model)

# %% [markdown]
# The DEQ's state reports every solve: evaluations of `f`, the largest residual
# `||f(z) - z||`, whether every sample converged, and (after a backward pass) the
# iterations of the adjoint solve.

# %%
_, st_out = model(x_train[:64], ps, st)
print({k: v.item() for k, v in st_out["deq"]["stats"].items()})

# %% [markdown]
# ## Training
#
# Cross-entropy plus twice the Jacobian penalty, read from the DEQ's returned state; the
# solver statistics come back as the step's `stats`. `grad="implicit"` (the default) gives
# exact gradients: the backward pass solves the adjoint fixed point
# `g = v + (df/dz)^T g` with the same solver.
# The log shows the solver iterations of each epoch's last batch, forward / backward
# (adjoint).


# %%
def deq_loss(model, ps, st, data):
    x, y = data
    logits, new_st = model(x, ps, st)
    deq_st = new_st["deq"]
    loss = torch.nn.functional.cross_entropy(logits, y)
    return (
        loss + 2.0 * deq_st["regularization"]["jacobian"],
        new_st,
        deq_st["stats"],
    )


def accuracy(ts):
    with torch.no_grad():
        logits, _ = model(x_test, ts.params, ts.states)
    return (logits.argmax(1) == y_test).float().mean().item()


EPOCHS, BATCH = 3, 64
n_batches = len(x_train) // BATCH
ts = lux.TrainState(
    model,
    ps,
    st,
    lux.optim.adam(lux.optim.cosine_decay_schedule(5e-3, EPOCHS * n_batches)),
)
for epoch, key in enumerate(lux.random.split(shuffle_key, EPOCHS), start=1):
    perm = lux.random.permutation(key, len(x_train))
    for i in range(n_batches):
        idx = perm[i * BATCH : (i + 1) * BATCH]
        ts, loss, stats = lux.train_step(
            deq_loss, (x_train[idx], y_train[idx]), ts
        )
    print(
        f"epoch {epoch}  loss {loss.item():.3f}  "
        f"test accuracy {accuracy(ts):.3f}  iterations "
        f"{int(stats['iterations'])} / {int(stats['backward_iterations'])}"
    )

# %% [markdown]
# ## Residual per iteration, per solver
#
# `lux_torch.sciml.fixed_point.solve` is the solver the DEQ uses; its `callback` reports
# the residual of every sample after each evaluation of `f`. Solving the trained DEQ's
# fixed point on the test set with each of the three solvers (30 evaluations, no early
# stop) shows how fast each one converges on this map. The curve is the *largest* residual
# over the test set.

# %%
p, s = ts.params, ts.states
u, _ = model.layers["injection"](x_test, p["injection"], s["injection"])


def f(z):
    return deq.model((z, u), p["deq"]["model"], s["deq"]["model"])[0]


curves = {}
for solver in ("fixed_point", "anderson", "broyden"):
    curve = curves[solver] = []
    solve(
        f,
        torch.zeros_like(u),
        solver=solver,
        max_iter=30,
        atol=1e-9,
        rtol=0.0,
        callback=lambda k, res, curve=curve: curve.append(float(res.max())),
    )
    print(
        f"{solver:12s} residual after 10 / 30 evaluations: "
        f"{curve[9]:.1e} / {curve[-1]:.1e}"
    )

fig, ax = plt.subplots(figsize=(9, 4.2))
for solver, curve in curves.items():
    ax.semilogy(range(1, len(curve) + 1), curve, marker=".", label=solver)
ax.set(
    xlabel="solver iteration (evaluations of f)",
    ylabel="largest residual ||f(z) - z||",
    title="Forward solve of the trained DEQ on the test set",
)
ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.tight_layout()
plt.show()

# %% [markdown]
# Anderson acceleration is ahead of plain fixed-point iteration for most of the run, then
# stalls in the last iterations (the curve is the *worst* test sample); fixed-point
# iteration converges slowly but steadily. Broyden's method takes unit steps without a
# line search and overshoots on this barely contractive map; inside the DEQ the solver
# returns each sample's best iterate, not the last one. None of them reaches the DEQ's
# tolerance within 30 evaluations on every sample, which is why the training log shows
# solves stopping at `max_iter` (`on_nonconvergence="ignore"` kept them quiet).

# %% [markdown]
# ## Gradient modes
#
# Besides the exact implicit gradient, `grad=` offers cheaper approximations: `"jfb"`
# (Jacobian-free backpropagation: `(I - df/dz)^{-1}` replaced by `I`), `"phantom"` (a few
# damped unrolled steps from `z*`) and `"unroll"` (plain unrolled steps). They are the same
# layer with another setting (`ps` unchanged); their gradients on one batch, compared with
# the implicit one by cosine similarity:

# %%
batch = (x_test[:64], y_test[:64])
flat = {}
for mode in ("implicit", "jfb", "phantom", "unroll"):
    m = lux.Chain(
        injection=model.layers["injection"],
        deq=dataclasses.replace(deq, grad=mode),
        readout=model.layers["readout"],
    )
    grads, _, _, _ = lux.compute_gradients(
        deq_loss, batch, lux.TrainState(m, p, s, lux.optim.adam(1e-3))
    )
    flat[mode] = lux.tree.ravel(grads)[0]
for mode, g in flat.items():
    cos = torch.nn.functional.cosine_similarity(g, flat["implicit"], dim=0)
    print(f"{mode:9s} cosine similarity with the implicit gradient: {cos:.3f}")

# %% [markdown]
# ## Where next
#
# - The [neural differential equations guide](../guide/neural-des.md#deq) covers the
#   solvers and their options, warm starts and what works under `vmap` and
#   `torch.compile`.
# - API: [`lux_torch.sciml`](../api/sciml.md).
