"""Per-step communication overhead of data-parallel training, 2 processes (gloo, CPU).

Run:  python benchmarks/distributed.py [--threads 2] [--rounds 15]
      (starts its own 2 processes on 127.0.0.1, no torchrun needed; ``--threads`` is the
      total, each process gets half of it: 1 intra-op thread each by default)

Both processes train the same Adam step, each on its half of the global batch. Columns,
medians of seconds per step measured interleaved in one run after a warm-up, on rank 0:

* lux local: ``lux.train_step`` with ``lux.optim.adam`` (no communication: each rank
  would drift apart; the baseline);
* lux distributed: the same with ``DistributedOptimizer(lux.optim.adam)`` (the gradients
  averaged by a bucketed all-reduce before the fused Adam step);
* overhead: distributed - local, and the ratio distributed / local;
* all_reduce: ``lux.distributed.all_reduce`` of the gradient tree alone;
* torch local / torch DDP: ``nn.Module`` + ``torch.optim.Adam`` without and with
  ``DistributedDataParallel`` (the reference: DDP overlaps the all-reduce with backward).
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.nn.functional as F
from _harness import interleaved, parse_args, print_table

import lux_torch as lux
from lux_torch import distributed as ldist

CASES = {
    "tiny 2-32-32-1 tanh, b64, MSE": ((2, 32, 32, 1), "tanh", 64, 50),
    "medium 784-512-512-10 relu, b128, CE": ((784, 512, 512, 10), "relu", 128, 5),
}


def _data(sizes: tuple[int, ...], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's half of a global batch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, sizes[0], generator=gen)
    y = (
        torch.sin(x.sum(1, keepdim=True))
        if sizes[-1] == 1
        else torch.randint(0, sizes[-1], (batch,), generator=gen)
    )
    return ldist.shard((x, y))  # type: ignore[no-any-return]


def _lux(sizes: tuple[int, ...], act: str, xy: Any, opt: Any) -> Callable[[], Any]:
    activation = torch.tanh if act == "tanh" else torch.relu
    n = len(sizes) - 1
    model = lux.Chain(
        *(
            lux.Linear(a, b, activation=activation if i < n - 1 else None)
            for i, (a, b) in enumerate(itertools.pairwise(sizes))
        )
    )
    ps, st = lux.setup(0, model)
    loss_fn = lux.losses.MSELoss() if sizes[-1] == 1 else lux.losses.CrossEntropyLoss()
    box = [lux.TrainState(model, ps, st, opt)]

    def step() -> None:
        box[0], _, _ = lux.train_step(loss_fn, xy, box[0])

    return step


def _torch(sizes: tuple[int, ...], act: str, xy: Any, ddp: bool) -> Callable[[], Any]:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh() if act == "tanh" else torch.nn.ReLU())
    model: torch.nn.Module = torch.nn.Sequential(*layers)
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model)
    loss_fn = F.mse_loss if sizes[-1] == 1 else F.cross_entropy
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = xy

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def _all_reduce(sizes: tuple[int, ...]) -> Callable[[], Any]:
    grads = {
        f"layer_{i}": {"weight": torch.randn(b, a), "bias": torch.randn(b)}
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    }
    return lambda: ldist.all_reduce(grads)


def _worker(rank: int, port: int, threads: int, rounds: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(threads)
    ldist.initialize("gloo", timeout=timedelta(seconds=120))
    rows = []
    for label, (sizes, act, batch, number) in CASES.items():
        xy = _data(sizes, batch)
        steps = {
            "lux local": _lux(sizes, act, xy, lux.optim.adam(1e-3)),
            "lux distributed": _lux(
                sizes, act, xy, ldist.DistributedOptimizer(lux.optim.adam(1e-3))
            ),
            "all_reduce": _all_reduce(sizes),
            "torch local": _torch(sizes, act, xy, ddp=False),
            "torch DDP": _torch(sizes, act, xy, ddp=True),
        }
        t = interleaved(steps, rounds=rounds, number=number, warmup=10)
        local, dist_, ddp_local, ddp = (
            t["lux local"],
            t["lux distributed"],
            t["torch local"],
            t["torch DDP"],
        )
        nparams = sum(a * b + b for a, b in itertools.pairwise(sizes))
        rows.append(
            (
                f"{label} ({nparams:,} params)",
                f"{local * 1e6:.0f}",
                f"{dist_ * 1e6:.0f}",
                f"{(dist_ - local) * 1e6:+.0f} ({dist_ / local:.2f}x)",
                f"{t['all_reduce'] * 1e6:.0f}",
                f"{ddp_local * 1e6:.0f}",
                f"{ddp * 1e6:.0f}",
                f"{(ddp - ddp_local) * 1e6:+.0f} ({ddp / ddp_local:.2f}x)",
            )
        )
    if rank == 0:
        headers = [
            "Adam step, 2 ranks, half batch each",
            "lux local (µs)",
            "lux distributed (µs)",
            "lux overhead (µs, ratio)",
            "all_reduce alone (µs)",
            "torch local (µs)",
            "torch DDP (µs)",
            "DDP overhead (µs, ratio)",
        ]
        print_table("Data-parallel step, 2 gloo processes on 127.0.0.1", rows, headers)
    ldist.shutdown()


def main() -> None:
    args = parse_args(__doc__, rounds=15)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    threads = max(1, args.threads // 2)
    torch.multiprocessing.spawn(_worker, args=(port, threads, args.rounds), nprocs=2)


if __name__ == "__main__":
    main()
