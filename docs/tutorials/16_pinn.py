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
# # Physics-informed neural network: nested AD in a compiled training step
#
# A physics-informed neural network (PINN) is trained so that its derivatives satisfy a
# PDE: the loss differentiates the network with respect to its *input*, and training
# differentiates that loss again with respect to the parameters. This is Lux's "Training a
# PINN on 2D PDE" problem, the heat equation in two space dimensions
#
#     u_t = u_xx + u_yy   on  x, y, t in [0, 2],
#
# with initial and boundary values from the analytic solution
# `u(x, y, t) = exp(x + y) cos(x + y + 4t)`. The full example, `examples/pinn_poisson.py` in
# the repository, trains 3000 steps and reaches a relative error of about 0.11; this
# notebook trains fewer.
#
# It shows the nested derivatives written with `torch.func` and with `lux.ad`, and
# `lux.train_step(..., compile=True)` tracing forward, nested derivatives, backward and the
# Adam update into one compiled graph.

# %%
import time
import warnings

import matplotlib.pyplot as plt
import torch
from IPython.display import display

import lux_torch as lux

torch.set_num_threads(1)
# torch 2.13's Inductor calls one of its own deprecated helpers while compiling
warnings.filterwarnings(
    "ignore", category=FutureWarning, module="torch._inductor"
)

# %% [markdown]
# ## The problem

# %%
LOW, HIGH = 0.0, 2.0


def analytic(xyt):
    s = xyt[:, 0] + xyt[:, 1]
    return torch.exp(s) * torch.cos(s + 4 * xyt[:, 2])


def sample(key, n_interior=256, n_boundary=128):
    """Interior collocation points, and points on the initial plane and
    the four side faces with their analytic values; fixed shapes, so the
    compiled step is reused."""
    k_in, k_bd, k_face = lux.random.split(key, 3)
    interior = lux.random.uniform(k_in, (n_interior, 3), low=LOW, high=HIGH)
    boundary = lux.random.uniform(k_bd, (n_boundary, 3), low=LOW, high=HIGH)
    face = lux.random.randint(
        k_face, (n_boundary,), 0, 5
    )  # t = 0, x = 0 / 2, y = 0 / 2
    axis = torch.where(face == 0, 2, (face - 1) // 2)
    value = torch.where((face == 0) | (face % 2 == 1), LOW, HIGH).to(
        boundary.dtype
    )
    boundary = boundary.index_put((torch.arange(n_boundary), axis), value)
    return {
        "interior": interior,
        "boundary": boundary,
        "u_boundary": analytic(boundary),
    }


model = lux.Chain(
    lux.Linear(3, 32, activation=torch.tanh),
    lux.Linear(32, 32, activation=torch.tanh),
    lux.Linear(32, 32, activation=torch.tanh),
    lux.Linear(32, 1),
)
init_key, data_key = lux.random.split(lux.random.key(0))
ps, st = lux.setup(init_key, model)
display(model)

# %% [markdown]
# ## The PDE residual by nested AD
#
# For one point, `u` maps a 3-vector to a scalar. `jacrev(u)` is its gradient
# `(u_x, u_y, u_t)`; `jacfwd` of that is the Hessian, and `vmap` runs both over all
# collocation points in one pass (the gradient rides along as auxiliary output).


# %%
def residual(model, ps, st, points):
    def u(point):
        return model(point.unsqueeze(0), ps, st)[0].squeeze()

    def grad_twice(point):
        g = torch.func.jacrev(u)(point)
        return g, g

    hess, grad = torch.func.vmap(torch.func.jacfwd(grad_twice, has_aux=True))(
        points
    )
    return grad[:, 2] - hess[:, 0, 0] - hess[:, 1, 1]  # u_t - u_xx - u_yy


# %% [markdown]
# `lux.ad` computes the same derivatives from the layer call directly:
# `batched_jacobian` gives every sample's Jacobian `(batch, out, in)` (forward mode, one
# pass per input feature), and `hessian_vector_product` gives `H v` without forming the
# Hessian. With `loss=torch.sum` the Hessian of the sum over samples is block diagonal
# (samples are independent), so the direction `e_x` in every sample returns each sample's
# `(u_xx, u_xy, u_xt)`.

# %%
points = sample(lux.random.key(1))["interior"][:8]
jac, _ = lux.ad.batched_jacobian(model, points, ps, st)  # (8, 1, 3)


def direction(k):
    return torch.zeros_like(points).index_fill(1, torch.tensor([k]), 1.0)


_, h_x, _ = lux.ad.hessian_vector_product(
    model, points, ps, st, direction(0), loss=torch.sum
)
_, h_y, _ = lux.ad.hessian_vector_product(
    model, points, ps, st, direction(1), loss=torch.sum
)
via_lux_ad = jac[:, 0, 2] - h_x[:, 0] - h_y[:, 1]
via_torch_func = residual(model, ps, st, points)
print("largest difference:", float((via_lux_ad - via_torch_func).abs().max()))

# %% [markdown]
# ## The loss, and one compiled step
#
# The loss is the mean squared residual at the interior points plus the mean squared misfit
# at the boundary points. `lux.train_step(..., compile=True)` differentiates it with
# respect to `ps` (derivatives of derivatives) and compiles the whole step with
# `make_fx` and Inductor on its first call; later calls with the same shapes reuse the
# graph. Collocation points are redrawn every step with the same shapes, so it compiles
# once.


# %%
def pinn_loss(model, ps, st, data):
    r = residual(model, ps, st, data["interior"])
    fit = model(data["boundary"], ps, st)[0].squeeze(-1) - data["u_boundary"]
    pde, bc = (r**2).mean(), (fit**2).mean()
    return pde + bc, st, {"pde": pde.detach(), "bc": bc.detach()}


def relative_error(ts, t=1.0, n=64):
    axis = torch.linspace(LOW, HIGH, n)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack(
        [gx.reshape(-1), gy.reshape(-1), torch.full((n * n,), t)], dim=1
    )
    with torch.no_grad():
        pred = ts.model(grid, ts.params, ts.states)[0].reshape(n, n)
    exact = analytic(grid).reshape(n, n)
    return pred, exact, float((pred - exact).norm() / exact.norm())


STEPS = 1500
ts = lux.TrainState(
    model, ps, st, lux.optim.adam(lux.optim.cosine_decay_schedule(1e-2, STEPS))
)
print(
    f"relative L2 error at t = 1 before training: {relative_error(ts)[2]:.3f}"
)
start = time.perf_counter()
ts, loss, stats = lux.train_step(
    pinn_loss, sample(lux.random.fold_in(data_key, 0)), ts, compile=True
)
print(
    f"first step (tracing and compiling): {time.perf_counter() - start:.1f} s"
)

# %% [markdown]
# ## Training

# %%
losses = [float(loss)]
start = time.perf_counter()
for step in range(1, STEPS):
    data = sample(lux.random.fold_in(data_key, step))
    ts, loss, stats = lux.train_step(pinn_loss, data, ts, compile=True)
    losses.append(float(loss))
elapsed = time.perf_counter() - start
print(
    f"{STEPS - 1} compiled steps in {elapsed:.1f} s "
    f"({elapsed / (STEPS - 1) * 1e3:.1f} ms a step)"
)
first, last = sum(losses[:100]) / 100, sum(losses[-100:]) / 100
print(f"mean loss over the first / last 100 steps: {first:.3g} / {last:.3g}")
pred, exact, error = relative_error(ts)
print(f"relative L2 error at t = 1 after training: {error:.3f}")

# %% [markdown]
# ## The solution at t = 1 against the analytic one

# %%
fig, axes = plt.subplots(2, 2, figsize=(9, 7))
axes = axes.reshape(-1)
axes[0].semilogy(range(1, len(losses) + 1), losses, lw=0.6)
axes[0].set(xlabel="step", ylabel="loss", title="Training loss")
extent = (LOW, HIGH, LOW, HIGH)
vmin, vmax = float(exact.min()), float(exact.max())
for ax, (values, title) in zip(
    axes[1:3],
    [(pred, "network u(x, y, 1)"), (exact, "analytic u(x, y, 1)")],
    strict=True,
):
    image = ax.imshow(
        values, origin="lower", extent=extent, vmin=vmin, vmax=vmax
    )
    ax.set(xlabel="x", ylabel="y", title=title)
    fig.colorbar(image, ax=ax, label="u")
image = axes[3].imshow(
    (pred - exact).abs(), origin="lower", extent=extent, cmap="magma"
)
axes[3].set(xlabel="x", ylabel="y", title="|network - analytic|")
fig.colorbar(image, ax=axes[3], label="absolute error")
fig.tight_layout()
plt.show()

# %% [markdown]
# The loss is noisy because every step draws new collocation points. The largest errors
# sit near the `x = 2` and `y = 2` edges, where `u` grows like `exp(x + y)`.
#
# ## Where next
#
# - The [automatic differentiation guide](../guide/autodiff.md) covers `lux.ad`, forward
#   mode, nested AD in `train_step` and activation checkpointing.
# - API: [`lux_torch.ad`](../api/ad.md).
