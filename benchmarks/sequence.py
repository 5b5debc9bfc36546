"""Sequence layers, forward + backward: lux LSTM / MultiheadAttention vs torch.nn.

Run:  python benchmarks/sequence.py [--threads 2] [--rounds 15]

Rows (identical weights, medians of interleaved rounds after a warm-up):

* LSTM, 2 layers, hidden 128, batch 32, sequence 50, input 64: ``sum(output * w)``
  backward w.r.t. the parameters. Eager, lux calls the same fused kernel as ``nn.LSTM``
  (``torch._VF.lstm``); compiled (``torch.compile`` of the same function, fullgraph) it
  runs the unrolled cells, with each layer's input projection done for the whole
  sequence in one matmul;
* MultiheadAttention, embed 128, 8 heads, batch 32, sequence 50, self-attention.

Targets (sequence-layers issue): LSTM eager <= 1.5, compiled <= 1.0; attention <= 1.05.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from _harness import interleaved, parse_args, print_table, ratio_row

import lux_torch as lux


def _lstm_cases() -> dict[str, Callable[[], Any]]:
    module = torch.nn.LSTM(64, 128, num_layers=2, batch_first=True)
    layer = lux.LSTM(64, 128, num_layers=2, batch_first=True)
    ps, st = lux.load_state_dict(layer, module.state_dict())
    leaves = [p.requires_grad_(True) for p in lux.tree.leaves(ps)]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 50, 64, generator=gen)
    w = torch.randn(32, 50, 128, generator=gen)
    params = list(module.parameters())

    def lux_loss(x: torch.Tensor) -> torch.Tensor:
        (out, _), _ = layer(x, ps, st)
        return (out * w).sum()

    compiled = torch.compile(lux_loss, fullgraph=True)

    def torch_step() -> None:
        out, _ = module(x)
        torch.autograd.grad((out * w).sum(), params)

    return {
        "torch": torch_step,
        "lux": lambda: torch.autograd.grad(lux_loss(x), leaves),
        "lux compiled": lambda: torch.autograd.grad(compiled(x), leaves),
    }


def _attention_cases() -> dict[str, Callable[[], Any]]:
    module = torch.nn.MultiheadAttention(128, 8, batch_first=True)
    layer = lux.MultiheadAttention(128, 8, batch_first=True)
    ps, st = lux.load_state_dict(layer, module.state_dict())
    leaves = [p.requires_grad_(True) for p in lux.tree.leaves(ps)]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 50, 128, generator=gen)
    w = torch.randn(32, 50, 128, generator=gen)
    params = list(module.parameters())

    def torch_step() -> None:
        out, _ = module(x, x, x, need_weights=False)
        torch.autograd.grad((out * w).sum(), params)

    def lux_step() -> None:
        out, _ = layer(x, ps, st)
        torch.autograd.grad((out * w).sum(), leaves)

    return {"torch": torch_step, "lux": lux_step}


def main() -> None:
    args = parse_args(__doc__, rounds=15)
    rows = []
    lstm = interleaved(_lstm_cases(), rounds=args.rounds, number=3)
    rows.append(ratio_row("LSTM 2x128, b32 L50, eager", lstm, "torch", "lux"))
    rows.append(ratio_row("LSTM 2x128, b32 L50, compiled", lstm, "torch", "lux compiled"))
    attention = interleaved(_attention_cases(), rounds=args.rounds, number=10)
    rows.append(ratio_row("MultiheadAttention 128/8, b32 L50", attention, "torch", "lux"))
    print_table(
        "Forward + backward, ratio lux / torch.nn (targets: LSTM eager <= 1.5, compiled <= "
        "1.0; attention <= 1.05)",
        rows,
        ["case", "torch.nn (µs)", "lux (µs)", "ratio lux/torch"],
    )


if __name__ == "__main__":
    main()
