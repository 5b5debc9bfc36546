"""Import time: ``import torch`` vs ``import lux_torch``, each in a fresh process.

Run:  python benchmarks/import_time.py [--rounds 15]

Each round starts one fresh interpreter per row, in turn (interleaved, so drifts of the
machine hit every row alike), after one warm-up round (file caches). A child times its own
imports with ``time.perf_counter`` (interpreter start-up excluded) and prints the seconds.
Rows:

* ``import torch``;
* ``import lux_torch`` (imports torch first): what every script pays; the issue's target
  is at most 0.3 s over ``import torch``;
* ``import lux_torch`` + first use: also touches what a training script uses (``Chain``,
  ``Linear``, ``setup``, ``TrainState``, ``optim.adam``, ``losses.MSELoss``,
  ``train_step``), so the modules that ``import lux_torch`` leaves out load too (no step is
  run).

The table gives the median seconds over rounds and the difference to ``import torch``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

from _harness import parse_args, print_table

FIRST_USE = (
    "lux.Chain, lux.Linear, lux.setup, lux.TrainState, lux.optim.adam, "
    "lux.losses.MSELoss, lux.train_step"
)
ROWS = {
    "import torch": "import torch",
    "import lux_torch": "import lux_torch as lux",
    "import lux_torch + first use": f"import lux_torch as lux\n{FIRST_USE}",
}


def _child(code: str) -> float:
    """Seconds ``code`` takes in a fresh interpreter (timed inside it)."""
    script = f"import time\nt = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    args = parse_args(__doc__, rounds=15)
    for code in ROWS.values():  # warm-up: file caches, .pyc files
        _child(code)
    samples: dict[str, list[float]] = {name: [] for name in ROWS}
    for _ in range(args.rounds):
        for name, code in ROWS.items():
            samples[name].append(_child(code))
    t = {name: statistics.median(s) for name, s in samples.items()}
    base = t["import torch"]
    rows = [
        (name, f"{t[name]:.3f}", f"{t[name] - base:+.3f}", f"{t[name] / base:.2f}") for name in ROWS
    ]
    print_table(
        f"Import time, fresh processes, median of {args.rounds}",
        rows,
        ["import", "seconds", "minus import torch (s)", "ratio"],
    )


if __name__ == "__main__":
    main()
