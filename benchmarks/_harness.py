"""Shared timing helper: interleaved runs, warm-up first, medians and ratios.

Each candidate is timed in turn inside every round (A, B, A, B, ...), so slow drifts of
the machine (frequency scaling, other processes) hit all candidates alike; a ratio is the
ratio of medians over rounds measured side by side in one run.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from tabulate import tabulate


def interleaved(
    candidates: dict[str, Callable[[], object]],
    *,
    rounds: int = 30,
    number: int = 100,
    warmup: int = 20,
) -> dict[str, float]:
    """Median seconds per call of every candidate, measured interleaved."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(s) for name, s in samples.items()}


def environment() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU"


def ratio_row(label: object, t: dict[str, float], base: str, new: str) -> tuple[str, ...]:
    """``(label, base µs, new µs, new/base)`` for one measured configuration."""
    return (str(label), f"{t[base] * 1e6:.1f}", f"{t[new] * 1e6:.1f}", f"{t[new] / t[base]:.3f}")


def print_table(title: str, rows: list[tuple[str, ...]], headers: list[str]) -> None:
    """Print ``title`` with the environment, then a GitHub-style table."""
    print(f"{title} — {environment()}")
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))


def parse_args(
    doc: str | None, *, rounds: int = 30, baseline: bool = False, **extra: int
) -> argparse.Namespace:
    """``--threads`` (default 2, applied with ``torch.set_num_threads``), ``--rounds``,
    ``--baseline REV`` where ``baseline`` (see :func:`load_baseline`) and any ``--name``
    integer options given as ``name=default``."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=rounds)
    if baseline:
        parser.add_argument(
            "--baseline",
            metavar="REV",
            help="also time lux_torch as of this git revision, interleaved with the rest",
        )
    for name, default in extra.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def load_baseline(rev: str) -> ModuleType:
    """``lux_torch`` as of the git revision ``rev``, importable next to the current one.

    ``git archive`` extracts its ``lux_torch/`` into a temporary directory as the package
    ``lux_torch_baseline``. Its modules import each other relatively, so its optimizers and
    training step are the old code; the old module aliases (``lux_torch.ode``, ...) are
    registered under the current package's names and point into it.
    """
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "lux_torch"], check=True, capture_output=True
    ).stdout
    where = Path(tempfile.mkdtemp(prefix="lux_torch_baseline_"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where)  # our own repository's archive
    (where / "lux_torch").rename(where / "lux_torch_baseline")
    sys.path.insert(0, str(where))
    return importlib.import_module("lux_torch_baseline")
