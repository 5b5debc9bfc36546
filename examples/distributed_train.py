"""Data-parallel training on 2 processes: fit y = sin(3x) + noise with torch.distributed.

Run:  torchrun --nproc_per_node=2 examples/distributed_train.py [--epochs 20] [--compile]
      [--quick] [--out distributed_train.png] [--no-progress]
      (gloo on CPU, NCCL on CUDA; about 10 s on 2 CPU cores. Without torchrun,
      ``python examples/distributed_train.py`` runs the same script as a single process)

Shows: ``lux.distributed.initialize`` reading torchrun's environment; the same data drawn
from the same ``lux.random`` key on every rank, then sharded per epoch with
``lux.distributed.shard_indices`` (``DistributedSampler``'s indices, reshuffled every
epoch); ``synchronize`` so every rank starts from rank 0's parameters; a
``DistributedOptimizer`` around ``lux.optim.adam`` that averages the gradients (bucketed
all-reduce) inside an unchanged ``lux.train_step``; the epoch loss averaged over ranks and
printed by rank 0 (with a tqdm bar over the epochs); a final check that the parameters are
identical on every rank; and a PNG, written by rank 0, of the loss per epoch and the fit.

The global batch of ``--batch`` examples is split evenly between the ranks, and the loss is
a mean, so two ranks take exactly the steps one process would take on the full batches.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

import lux_torch as lux
from lux_torch import distributed as dist

NOISE = 0.1  # the best achievable test MSE is NOISE**2 = 0.01


def make_data(key: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points ``x ~ U[-1, 1)``, ``y = sin(3x) + NOISE * N(0, 1)``, both ``(n, 1)``."""
    x_key, noise_key = lux.random.split(key)
    x = lux.random.uniform(x_key, (n, 1), low=-1.0, high=1.0)
    return x, torch.sin(3 * x) + NOISE * lux.random.normal(noise_key, (n, 1))


def identical_on_all_ranks(tree: object) -> bool:
    """Whether every leaf has the same value on every rank (max == min over ranks)."""
    high, low = dist.all_reduce(tree, "max"), dist.all_reduce(tree, "min")
    pairs = zip(lux.tree.leaves(high), lux.tree.leaves(low), strict=True)
    return all(torch.equal(a, b) for a, b in pairs)


def main(
    epochs: int = 20,
    *,
    n: int = 4096,
    batch: int = 64,
    compile: bool = False,
    lr: float = 3e-3,
    out: str = "distributed_train.png",
    progress: bool = True,
) -> float:
    """Train for ``epochs`` epochs, rank 0 writes the figure to ``out``; return the final
    test MSE (the same on every rank)."""
    torch.set_num_threads(1)
    dist.initialize(timeout=timedelta(minutes=2))
    rank, world = dist.rank(), dist.world_size()
    if batch % world:
        raise ValueError(f"--batch {batch} must be divisible by the number of ranks {world}")

    train_key, test_key = lux.random.split(lux.random.key(0))
    x, y = make_data(train_key, n)  # the whole data set on every rank; each uses its shard
    x_test, y_test = make_data(test_key, 1024)

    model = lux.Chain(
        lux.Linear(1, 64, activation=torch.tanh),
        lux.Linear(64, 64, activation=torch.tanh),
        lux.Linear(64, 1),
    )
    ps, st = lux.setup(lux.random.key(rank), model)  # deliberately different per rank ...
    ps, st = dist.synchronize(ps, st)  # ... until rank 0's values are broadcast
    opt = dist.DistributedOptimizer(lux.optim.adam(lr))
    ts = lux.TrainState(model, ps, st, opt)
    loss_fn = lux.losses.MSELoss()
    if rank == 0:
        print(model)
        print(f"{world} rank(s), {n // world} examples and batches of {batch // world} per rank")

    local_batch = batch // world
    curve: list[float] = []
    bar = tqdm(range(1, epochs + 1), disable=not progress or rank != 0, desc="epochs", unit="epoch")
    for epoch in bar:
        idx = dist.shard_indices(n, shuffle=True, seed=0, epoch=epoch, drop_last=True)
        total = torch.zeros(())
        steps = len(idx) // local_batch  # drop the last partial batch: fixed shapes
        for b in idx[: steps * local_batch].split(local_batch):
            ts, loss, _ = lux.train_step(loss_fn, (x[b], y[b]), ts, compile=compile)
            total += loss
        epoch_loss = dist.all_reduce({"loss": total / steps})["loss"]
        curve.append(epoch_loss.item())
        if rank == 0:
            bar.write(f"epoch {epoch:3d}   loss {curve[-1]:.5f}")  # printed above the bar
            bar.set_postfix(loss=f"{curve[-1]:.4f}", refresh=False)
    bar.close()

    pred, _ = model(x_test, ts.params, lux.test_mode(ts.states))
    test_mse = float(torch.mean((pred - y_test) ** 2))
    same = identical_on_all_ranks(ts.params)
    if rank == 0:
        print(f"final test MSE {test_mse:.5f} (noise floor {NOISE**2:.3f})")
        print(f"parameters identical on all {world} ranks: {same}")
        _plot(out, model, ts, curve, (x_test, y_test), world)
        print(f"figure written to {out}")
    dist.shutdown()
    if not same:
        raise SystemExit(f"rank {rank}: the parameters differ between ranks")
    return test_mse


def _plot(
    out: str,
    model: lux.Layer,
    ts: lux.TrainState,
    curve: list[float],
    test: tuple[torch.Tensor, torch.Tensor],
    world: int,
) -> None:
    """The epoch loss (mean over ranks) and the trained model against the test data."""
    fig = Figure(figsize=(11, 4))  # Agg canvas, no pyplot state
    ax_loss, ax_fit = fig.subplots(1, 2)
    ax_loss.semilogy(range(1, len(curve) + 1), curve, "o-", ms=3)
    ax_loss.axhline(NOISE**2, color="gray", ls="--", lw=0.8, label="noise floor")
    ax_loss.set(xlabel="epoch", ylabel="training MSE (mean over ranks)")
    ax_loss.set_title(f"loss, {world} rank(s)")
    ax_loss.legend()
    grid = torch.linspace(-1, 1, 400).unsqueeze(1)
    with torch.no_grad():
        pred, _ = model(grid, ts.params, lux.test_mode(ts.states))
    x, y = test
    ax_fit.scatter(x.squeeze(1), y.squeeze(1), s=4, alpha=0.4, label="test data")
    ax_fit.plot(grid.squeeze(1), torch.sin(3 * grid).squeeze(1), "k--", lw=1, label="sin(3x)")
    ax_fit.plot(grid.squeeze(1), pred.squeeze(1), "r", lw=2, label="MLP (rank 0)")
    ax_fit.set(xlabel="x", ylabel="y", title="fit")
    ax_fit.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64, help="global batch (all ranks)")
    parser.add_argument("--compile", action="store_true", help="lux.train_step(compile=True)")
    parser.add_argument("--quick", action="store_true", help="a small data set (for tests)")
    parser.add_argument("--out", default="distributed_train.png", help="output PNG (rank 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args()
    main(
        args.epochs,
        n=512 if args.quick else 4096,
        batch=args.batch,
        compile=args.compile,
        out=args.out,
        progress=not args.no_progress,
    )
