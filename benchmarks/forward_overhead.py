"""Eager inference overhead: lux Chain of 10 Linear(64, 64, relu) vs nn.Sequential.

Run:  python benchmarks/forward_overhead.py [--threads N]

Target (foundation issue): ratio lux / torch <= 1.0 at batch 1 and <= 1.05 at batch 256.
Both run under torch.no_grad(); the lux model gets the nn.Sequential's own weights.
"""

from __future__ import annotations

import torch
from _harness import interleaved, parse_args, print_table, ratio_row

import lux_torch as lux


def build(depth: int = 10, width: int = 64):
    model = lux.Chain(*[lux.Linear(width, width, activation=torch.relu) for _ in range(depth)])
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    ref = torch.nn.Sequential(*layers).eval()
    ps = {
        f"layer_{i + 1}": {"weight": ref[2 * i].weight.detach(), "bias": ref[2 * i].bias.detach()}
        for i in range(depth)
    }
    return model, ps, ref


def main() -> None:
    args = parse_args(__doc__)
    model, ps, ref = build()
    st = lux.init_state(0, model)
    rows = []
    for batch, number in ((1, 500), (256, 100)):
        x = torch.ones(batch, 64)
        with torch.no_grad():
            assert torch.allclose(model(x, ps, st)[0], ref(x), atol=1e-6)
            t = interleaved(
                {"torch": lambda x=x: ref(x), "lux": lambda x=x: model(x, ps, st)},
                rounds=args.rounds,
                number=number,
            )
        rows.append(ratio_row(batch, t, "torch", "lux"))
    print_table(
        "Chain of 10 Linear(64, 64, relu), eager inference",
        rows,
        ["batch", "nn.Sequential (µs)", "lux.Chain (µs)", "ratio lux/torch"],
    )


if __name__ == "__main__":
    main()
