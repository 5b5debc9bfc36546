"""Compile latency: seconds of the FIRST compiled training step, cold and warm.

Run:  python benchmarks/compile_latency.py [--threads 2] [--rounds 1]

Every measurement runs in a fresh Python process (``--child``), timing the first call of
the step (the compile included) after the imports. Each case and candidate gets its own
new, empty Inductor cache directory (``TORCHINDUCTOR_CACHE_DIR``):

* **cold**: the first process, with the empty cache (Inductor generates and compiles C++);
* **warm**: a second process with the same cache directory (Inductor's FX graph cache and
  AOTAutograd's cache on disk: nothing is generated again).

Candidates, on the Adam steps of ``benchmarks/train_step.py`` (tiny MLP 2-32-32-1, medium
MLP 784-512-512-10):

* lux compiled: ``lux.train_step(..., compile=True)`` (one traced graph, see
  ``lux_torch.training``);
* torch.compile: ``torch.compile`` of the ``nn.Module`` and of ``torch.optim.Adam.step``
  (PyTorch's recipe, ``backward`` in between).

The ratios are lux / torch.compile, medians over ``--rounds`` cold/warm pairs; which
candidate runs first alternates between cases and rounds (use ``--rounds 3`` or more for
figures to quote: single runs vary by seconds). Both pay
Inductor's per-process start (importing ``torch._inductor``, probing the CPU's vector
instruction sets in subprocesses) on the warm path too.

Targets (performance issue, CPU): cold <= 0.5x torch.compile's, warm <= 1 s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CANDIDATES = ("lux compiled", "torch.compile")


def child(case: str, candidate: str, threads: int) -> None:
    """Build one step, time its first call (and a second one) and print them as JSON."""
    import torch
    from train_step import CASES, _data, _lux_step, _torch_step

    torch.set_num_threads(threads)
    sizes, act, batch = CASES[case]
    x, y = _data(sizes, batch)
    start = time.perf_counter()
    if candidate == "lux compiled":
        step = _lux_step(sizes, act, x, y, compile=True)
    else:
        step = _torch_step(sizes, act, x, y, "compile")
    step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    step()
    print(json.dumps({"first": first, "second": time.perf_counter() - start}))


def _run(case: str, candidate: str, threads: int, cache: str) -> float:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    command = [sys.executable, __file__, "--child", case, candidate, "--threads", str(threads)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case} / {candidate} failed:\n{out.stderr[-3000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["first"])


def main() -> None:
    from _harness import parse_args, print_table
    from train_step import CASES

    args = parse_args(__doc__, rounds=1)
    times: dict[tuple[str, str, str], list[float]] = {}
    for r in range(args.rounds):
        for i, case in enumerate(CASES):
            # alternate which candidate goes first (the first process after a pause
            # pays for cold OS caches: libraries, the compiler)
            order = CANDIDATES if (r + i) % 2 == 0 else CANDIDATES[::-1]
            for candidate in order:
                with tempfile.TemporaryDirectory(prefix="compile_latency_") as cache:
                    for kind in ("cold", "warm"):
                        t = _run(case, candidate, args.threads, cache)
                        times.setdefault((case, candidate, kind), []).append(t)
    rows = []
    for case in CASES:
        row = [case]
        for kind in ("cold", "warm"):
            lux_s, torch_s = (statistics.median(times[case, c, kind]) for c in CANDIDATES)
            row += [f"{lux_s:.2f}", f"{torch_s:.2f}", f"{lux_s / torch_s:.2f}x"]
        rows.append(tuple(row))
    headers = ["first compiled Adam step (s)"]
    for kind in ("cold", "warm"):
        headers += [f"lux {kind}", f"torch.compile {kind}", f"lux / torch.compile {kind}"]
    print_table("Compile latency, fresh processes, first step", rows, headers)


if __name__ == "__main__":
    if "--child" in sys.argv:
        at = sys.argv.index("--child")
        threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
        child(sys.argv[at + 1], sys.argv[at + 2], threads)
    else:
        main()
