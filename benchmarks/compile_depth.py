"""Compile time against depth: a stack of identical blocks, unrolled (``Chain``) or scanned
(``StackedChain``: stacked parameters, one ``scan`` under ``torch.compile``).

Run:  python benchmarks/compile_depth.py [--threads 2] [--rounds 10] [--steady 1]
      [--models transformer,mlp] [--depths 2,24]

Models (float32, CPU):

* transformer: Llama-style :class:`~lux_torch.layers.lm.DecoderBlock` (dim 64, 4 heads,
  SwiGLU 176), input ``(4, 32, 64)``;
* mlp: ``Linear(256, 256, tanh)``, input ``(64, 256)``.

Compile rows: the first training step (``torch.compile(fullgraph=True)`` of the forward
and loss, then ``backward()``: Dynamo, AOTAutograd and Inductor for forward and backward)
in a **fresh process with an empty Inductor cache** (``TORCHINDUCTOR_CACHE_DIR`` a new
temporary directory, FX graph cache off), one process per row; ratios against the 2-block
model of the same kind. Reported as CPU time (the process and its C++ compiler runs;
Inductor compiles in-process) and wall time: on a shared machine the CPU time is the
steadier figure. Issue 22's target: 24 scanned blocks within 1.5x of 2 scanned.

Steady-state rows (``--steady 1``): a training step (forward, loss, backward) at the
largest depth, eager and compiled, scanned vs unrolled, interleaved medians in one process.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from _harness import interleaved, parse_args, print_table, ratio_row

import lux_torch as lux
from lux_torch.layers.lm import DecoderBlock
from lux_torch.layers.stacked import StackedChain


def _block(kind: str) -> tuple[lux.Layer, torch.Tensor]:
    if kind == "transformer":
        return DecoderBlock(64, 4, max_len=None), torch.randn(4, 32, 64)
    return lux.Linear(256, 256, activation=torch.tanh), torch.randn(64, 256)


def _model(kind: str, depth: int, mode: str) -> tuple[lux.Layer, Any, Any, torch.Tensor]:
    """The stack and its ``ps``/``st``; the unrolled one holds the scanned one's blocks."""
    block, x = _block(kind)
    scanned = StackedChain(block, depth)
    ps, st = lux.setup(0, scanned)
    if mode == "scanned":
        return scanned, ps, st, x
    chain = lux.Chain(*[block] * depth)
    ps_c = {
        f"layer_{i + 1}": lux.tree.map(lambda t, i=i: t[i].clone(), ps["layer"])
        for i in range(depth)
    }
    st_c = {f"layer_{i + 1}": lux.tree.map(lambda t, i=i: t[i], st["layer"]) for i in range(depth)}
    return chain, ps_c, st_c, x


def _step(model: lux.Layer, st: Any, compiled: bool) -> Callable[[Any, torch.Tensor], None]:
    """forward + loss + backward; with ``compiled`` the forward and loss go through
    ``torch.compile`` (the backward graph is compiled at the first ``backward()``)."""

    def loss(ps: Any, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = model(x, ps, st)[0]
        return y.square().mean()

    fn = torch.compile(loss, fullgraph=True) if compiled else loss

    def step(ps: Any, x: torch.Tensor) -> None:
        for p in lux.tree.leaves(ps):
            p.grad = None
        fn(ps, x).backward()

    return step


def _child(kind: str, depth: int, mode: str) -> None:
    """Measure one cold compile in this (fresh) process; print it as JSON."""
    model, ps, st, x = _model(kind, depth, mode)
    ps = lux.tree.map(lambda t: t.detach().requires_grad_(), ps)
    step = _step(model, st, compiled=True)
    start, cpu = time.perf_counter(), _cpu_seconds()
    step(ps, x)
    print(json.dumps({"wall": time.perf_counter() - start, "cpu": _cpu_seconds() - cpu}))


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the C++ compiler runs)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _cold_compile(kind: str, depth: int, mode: str, threads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cache:
        env = {
            **os.environ,
            "TORCHINDUCTOR_CACHE_DIR": cache,
            "TORCHINDUCTOR_FX_GRAPH_CACHE": "0",
            "TORCHINDUCTOR_AUTOGRAD_CACHE": "0",
            "OMP_NUM_THREADS": str(threads),
            "TORCHINDUCTOR_COMPILE_THREADS": "1",  # in this process: its CPU time counts
        }
        args = [sys.executable, __file__, "--child", kind, str(depth), mode]
        out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} x{depth} {mode} failed:\n{out.stderr[-3000:]}")
    seconds: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds


def _steady(kind: str, depth: int, rounds: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for compiled in (False, True):
        steps: dict[str, Callable[[], object]] = {}
        for mode in ("unrolled", "scanned"):
            model, ps, st, x = _model(kind, depth, mode)
            ps = lux.tree.map(lambda t: t.detach().requires_grad_(), ps)
            step = _step(model, st, compiled)
            steps[mode] = functools.partial(step, ps, x)
        t = interleaved(steps, rounds=rounds, number=5, warmup=3)
        label = f"{kind} x{depth} step, {'compiled' if compiled else 'eager'}"
        rows.append(ratio_row(label, t, "unrolled", "scanned"))
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    import argparse

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--models", default="transformer,mlp")
    extra.add_argument("--depths", default="2,24")
    known, rest = extra.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    args = parse_args(__doc__, rounds=10, steady=1)
    depths = [int(d) for d in known.depths.split(",")]
    rows: list[tuple[str, ...]] = []
    for kind in known.models.split(","):
        times = {
            (mode, depth): _cold_compile(kind, depth, mode, args.threads)
            for depth in depths
            for mode in ("unrolled", "scanned")
        }
        for mode in ("unrolled", "scanned"):
            base = times[(mode, depths[0])]
            for depth in depths:
                t = times[(mode, depth)]
                cpu, wall = t["cpu"], t["wall"]
                ratios = f"{cpu / base['cpu']:.2f}", f"{wall / base['wall']:.2f}"
                rows.append((f"{kind} x{depth}", mode, f"{cpu:.1f}", f"{wall:.1f}", *ratios))
    print_table(
        "Cold compile of the first training step (fresh process, empty Inductor cache)",
        rows,
        ["model", "blocks", "CPU s", "wall s", f"CPU vs x{depths[0]}", f"wall vs x{depths[0]}"],
    )
    if args.steady:
        steady: list[tuple[str, ...]] = []
        for kind in known.models.split(","):
            steady += _steady(kind, depths[-1], args.rounds)
        print()
        print_table(
            "Training step, scanned (StackedChain) vs unrolled (Chain)",
            steady,
            ["step", "unrolled µs", "scanned µs", "scanned/unrolled"],
        )


if __name__ == "__main__":
    main()
