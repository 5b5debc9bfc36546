"""Import time: ``import torch`` vs ``import lux_torch``, each in a fresh process.

Run:  python benchmarks/import_time.py [--rounds 15]

Each round starts one fresh interpreter per row, in turn (interleaved, so drifts of the
machine hit every row alike), after one warm-up round (file caches). A child times its own
imports with ``time.perf_counter`` (interpreter start-up excluded) and prints the seconds.
Bytecode is cached as for an installed package (``PYTHONDONTWRITEBYTECODE`` is dropped for
the children; the ``.pyc`` files go to a temporary ``PYTHONPYCACHEPREFIX``, written by the
warm-up): without it every import compiles lux's sources anew, which costs more than the
imports themselves. Rows:

* ``import torch``;
* ``import lux_torch`` (imports torch first): what every script pays; the issue's target
  is at most 0.3 s over ``import torch``;
* ``import lux_torch`` + first use: also touches what a training script uses (``Chain``,
  ``Linear``, ``setup``, ``TrainState``, ``optim.adam``, ``losses.MSELoss``,
  ``train_step``), so the modules that ``import lux_torch`` leaves out load too (no step is
  run).

The table gives the median seconds over rounds and the difference to ``import torch``,
of wall-clock time and of the process's CPU time (``time.process_time``: on a busy machine
it moves far less than wall-clock time, which also counts the waits for a core).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

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


def _child(code: str, pycache: str) -> tuple[float, float]:
    """Wall and CPU seconds ``code`` takes in a fresh interpreter (timed inside it), with
    bytecode cached under ``pycache``."""
    script = (
        "import time\nt, c = time.perf_counter(), time.process_time()\n"
        f"{code}\nprint(time.perf_counter() - t, time.process_time() - c)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=os.pathsep.join(sys.path), PYTHONPYCACHEPREFIX=pycache)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    wall, cpu = done.stdout.split()[-2:]
    return float(wall), float(cpu)


def main() -> None:
    args = parse_args(__doc__, rounds=15)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in ROWS}
    with tempfile.TemporaryDirectory() as pycache:
        for code in ROWS.values():  # warm-up: file caches, bytecode written
            _child(code, pycache)
        for _ in range(args.rounds):
            for name, code in ROWS.items():
                samples[name].append(_child(code, pycache))
    rows = []
    base = [statistics.median(s[i] for s in samples["import torch"]) for i in (0, 1)]
    for name, got in samples.items():
        row = [name]
        for i in (0, 1):
            t = statistics.median(s[i] for s in got)
            row += [f"{t:.3f}", f"{t - base[i]:+.3f}"]
        rows.append(tuple(row))
    print_table(
        f"Import time, fresh processes, median of {args.rounds} (seconds)",
        rows,
        ["import", "wall", "wall - import torch", "CPU", "CPU - import torch"],
    )


if __name__ == "__main__":
    main()
