"""Eager Dropout(0.5) in training mode: lux vs torch.nn.Dropout; and lux's key operations.

Run:  python benchmarks/dropout.py [--threads N]

Targets (issue 22): ratio lux / torch <= 1.5 on (64, 64) and <= 1.0 on (256, 1024). lux's
mask comes from the counter-based Philox generator (bit-identical eager, compiled, CPU,
CUDA); torch's from its global CPU generator. The key rows time ``lux.random.split`` and
``lux.random.fold_in`` on a CPU key against the nearest torch call, drawing two 64-bit
words from a ``torch.Generator`` (``torch.randint(2**32, (2, 2), generator=g)``).
"""

from __future__ import annotations

import torch
from _harness import interleaved, parse_args, print_table, ratio_row

import lux_torch as lux


def main() -> None:
    args = parse_args(__doc__)
    rows = []
    for shape in ((256, 1024), (64, 64)):
        x = lux.random.normal(lux.random.key(0), shape)
        ref = torch.nn.Dropout(0.5).train()
        layer = lux.Dropout(0.5)
        ps, st = lux.setup(0, layer)
        number = 20 if shape[0] * shape[1] > 100_000 else 500
        with torch.no_grad():
            t = interleaved(
                {
                    "torch": lambda x=x, ref=ref: ref(x),
                    "lux": lambda x=x, layer=layer, ps=ps, st=st: layer(x, ps, st),
                },
                rounds=args.rounds,
                number=number,
            )
        rows.append(ratio_row(f"Dropout {shape}", t, "torch", "lux"))
    key = lux.random.key(0)
    gen = torch.Generator().manual_seed(0)
    keyops = {
        "split(key)": lambda: lux.random.split(key),
        "fold_in(key, 7)": lambda: lux.random.fold_in(key, 7),
    }
    for name, fn in keyops.items():
        t = interleaved(
            {"torch": lambda: torch.randint(2**32, (2, 2), generator=gen), "lux": fn},
            rounds=args.rounds,
            number=500,
        )
        rows.append(ratio_row(name, t, "torch", "lux"))
    print_table(
        "Dropout(0.5), training mode, eager; key operations",
        rows,
        ["call", "torch (µs)", "lux (µs)", "ratio lux/torch"],
    )


if __name__ == "__main__":
    main()
