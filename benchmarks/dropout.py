"""Eager Dropout(0.5) on a (256, 1024) float32 input: lux vs torch.nn.Dropout (training mode).

Run:  python benchmarks/dropout.py [--threads N]

Target (foundation issue): ratio lux / torch <= 1.0. lux's mask comes from the
counter-based Philox generator in plain tensor ops (bit-identical eager, compiled, CPU,
CUDA); torch's from its global CPU generator.
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
        rows.append(ratio_row(shape, t, "torch", "lux"))
    print_table(
        "Dropout(0.5), training mode, eager",
        rows,
        ["input", "nn.Dropout (µs)", "lux.Dropout (µs)", "ratio lux/torch"],
    )


if __name__ == "__main__":
    main()
