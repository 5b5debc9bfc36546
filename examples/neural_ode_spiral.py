"""Neural ODE: learn the dynamics of a spiral (torchdiffeq's ``examples/ode_demo.py``).

Run:  python examples/neural_ode_spiral.py          (about a minute on 2 CPU threads)

The true system is ``dy/dt = (y**3) @ A`` with ``A = [[-0.1, 2.0], [-2.0, -0.1]]``, solved
from ``y0 = [2, 0]`` at 1000 times in ``[0, 25]``. A neural ODE whose vector field is
``Linear(2, 50) - tanh - Linear(50, 2)`` applied to ``y**3`` is fitted to random windows
of 10 consecutive points (20 windows per batch), with an L1 loss and RMSprop, as in the
original. It shows the lux_torch workflow for neural ODEs:

- the vector field is an ordinary layer, and :class:`lux_torch.ode.NeuralODE` makes it
  an ODE layer (its parameters are ``ps["vector_field"]``);
- the true dynamics are a parameter-free layer solved by the same machinery;
- :class:`lux_torch.TrainState` and :func:`lux_torch.train_step` train it (the adaptive
  ``dopri5`` solver makes ``train_step`` use ``torch.autograd``);
- batches are drawn with explicit ``lux_torch.random`` keys (no global RNG);
- ``dataclasses.replace(node, t=...)`` solves the trained model over the whole time span
  with the same ``ps``.

It writes a PNG with the true and learned trajectories, the phase portrait and the learned
vector field, and prints the loss over the whole trajectory before and after training.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

import lux_torch as lux
from lux_torch.ode import NeuralODE

A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])


def spiral(y: torch.Tensor) -> torch.Tensor:
    """The true dynamics ``dy/dt = (y**3) @ A``."""
    return (y**3) @ A


def cube(y: torch.Tensor) -> torch.Tensor:
    return y**3


def make_model(batch_t: torch.Tensor) -> NeuralODE:
    """ode_demo's ``ODEFunc`` (weights ``N(0, 0.1)``, zero biases) as a neural ODE."""
    init = {
        "weight_init": functools.partial(lux.init.normal, std=0.1),
        "bias_init": lux.init.zeros,
    }
    field = lux.Chain(
        cube,
        lux.Linear(2, 50, activation=torch.tanh, **init),
        lux.Linear(50, 2, **init),
    )
    return NeuralODE(field, batch_t, method="dopri5")


def get_batch(
    key: torch.Tensor, true_y: torch.Tensor, batch_time: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``batch_time`` points: ``(y0, targets)``."""
    starts = lux.random.permutation(key, true_y.shape[0] - batch_time)[:batch_size]
    batch_y0 = true_y[starts]  # (batch_size, 1, 2)
    batch_y = torch.stack([true_y[starts + i] for i in range(batch_time)])  # (T, M, 1, 2)
    return batch_y0, batch_y


def total_loss(
    node: NeuralODE, t: torch.Tensor, y0: torch.Tensor, true_y: torch.Tensor, ts: lux.TrainState
) -> tuple[float, torch.Tensor]:
    """Mean absolute error over the whole time span (ode_demo's "Total Loss")."""
    full = dataclasses.replace(node, t=t)
    with torch.no_grad():
        pred_y, _ = full(y0, ts.params, lux.test_mode(ts.states))
    return float(torch.mean(torch.abs(pred_y - true_y))), pred_y


def plot(
    path: pathlib.Path,
    t: torch.Tensor,
    true_y: torch.Tensor,
    pred_y: torch.Tensor,
    node: NeuralODE,
    ts: lux.TrainState,
) -> None:
    """PNG of trajectories, phase portrait and learned vector field (ode_demo's visualize)."""
    fig = Figure(figsize=(15, 4.5))  # Agg canvas, no pyplot state
    ax_traj, ax_phase, ax_field = fig.subplots(1, 3)
    tn, true_np, pred_np = t.numpy(), true_y[:, 0].numpy(), pred_y[:, 0].numpy()
    ax_traj.plot(tn, true_np[:, 0], "g-", label="true x")
    ax_traj.plot(tn, true_np[:, 1], "b-", label="true y")
    ax_traj.plot(tn, pred_np[:, 0], "g--", label="learned x")
    ax_traj.plot(tn, pred_np[:, 1], "b--", label="learned y")
    ax_traj.set(title="Trajectories", xlabel="t", ylabel="x, y", xlim=(tn[0], tn[-1]))
    ax_traj.legend(loc="upper right", fontsize="small")

    ax_phase.plot(true_np[:, 0], true_np[:, 1], "g-", label="true")
    ax_phase.plot(pred_np[:, 0], pred_np[:, 1], "b--", label="learned")
    ax_phase.set(title="Phase portrait", xlabel="x", ylabel="y", xlim=(-2, 2), ylim=(-2, 2))
    ax_phase.legend(loc="upper right", fontsize="small")

    grid = torch.linspace(-2.0, 2.0, 21)
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([gx, gy], dim=-1).reshape(-1, 2)
    with torch.no_grad():
        dydt, _ = node.vector_field(
            points, ts.params["vector_field"], lux.test_mode(ts.states)["vector_field"]
        )
    dydt = dydt / dydt.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    dydt = dydt.reshape(21, 21, 2)
    ax_field.streamplot(
        gx.numpy(), gy.numpy(), dydt[..., 0].numpy(), dydt[..., 1].numpy(), color="black"
    )
    ax_field.set(title="Learned vector field", xlabel="x", ylabel="y", xlim=(-2, 2), ylim=(-2, 2))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(
    iters: int = 1000,
    out: str | pathlib.Path = "neural_ode_spiral.png",
    progress: bool = True,
    *,
    batch_time: int = 10,
    batch_size: int = 20,
    data_size: int = 1000,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """Train for ``iters`` steps, write the figure to ``out``; return the final total loss."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.perf_counter()
    t = torch.linspace(0.0, 25.0, data_size)
    true_y0 = torch.tensor([[2.0, 0.0]])
    truth = NeuralODE(lux.WrappedFunction(spiral), t, method="dopri5")
    with torch.no_grad():
        true_y, _ = truth(true_y0, *lux.setup(0, truth))  # (data_size, 1, 2)

    node = make_model(t[:batch_time])
    print(node)
    init_key, data_key = lux.random.split(lux.random.key(seed))
    ps, st = lux.setup(init_key, node)
    ts = lux.TrainState(node, ps, st, lux.optim.rmsprop(lr))
    loss_fn = lux.losses.L1Loss()
    before, _ = total_loss(node, t, true_y0, true_y, ts)
    print(f"total loss before training {before:.4f}")

    bar = tqdm(range(1, iters + 1), disable=not progress, desc="training", unit="step")
    for itr in bar:
        batch = get_batch(lux.random.fold_in(data_key, itr), true_y, batch_time, batch_size)
        ts, loss, _ = lux.train_step(loss_fn, batch, ts)
        if itr % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}", nfe=int(ts.states["stats"]["nfe"]))

    final, pred_y = total_loss(node, t, true_y0, true_y, ts)
    path = pathlib.Path(out)
    plot(path, t, true_y, pred_y, node, ts)
    print(
        f"final total loss {final:.4f} after {iters} steps in "
        f"{time.perf_counter() - start:.1f} s; figure written to {path}"
    )
    return final


if __name__ == "__main__":
    main()
