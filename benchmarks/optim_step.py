"""One optimizer step alone: lux ``adam().update`` + ``apply_updates`` vs ``torch.optim.Adam``.

Run:  python benchmarks/optim_step.py [--threads 2] [--rounds 30]

The gradients are fixed tensors (no forward/backward): this times the optimizer only.
``torch.optim.Adam.step()`` updates the parameters in place: the default (on CPU tensors,
the for-loop implementation), ``foreach=True`` and ``fused=True``. The lux step is pure:
``updates, state = opt.update(grads, state, ps)`` then ``ps = apply_updates(ps,
updates)``, both new trees; ``lux.optim.step`` runs torch's fused Adam kernel on copies
(pure), and with ``donate=True`` on the given buffers (in place, like torch fused).
A second table times the optimizers torch has besides Adam that lux_torch also has with
torch's numerics: ``torch.optim.Muon`` (the weight matrices only; Newton-Schulz in
bfloat16: lux ``muon(ns_dtype=torch.bfloat16)``) and ``torch.optim.Adafactor`` (lux
``adafactor(lr, relative_step=True, min_dim_size_to_factor=1)``), both lux update+apply.
Models: the tiny MLP 2-32-32-1 (6 tensors, 1153 numbers) and the 784-512-512-10 MLP
(6 tensors, 670K numbers).

Target (optimizer issue, CPU, 2 threads): lux / torch foreach <= 1.0 on the tiny MLP.
On the medium MLP a pure step allocates new moments, updates and parameters (megabytes)
every step, and glibc hands freed memory back to the OS between steps, so page faults
dominate: compare with ``MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=134217728``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from _harness import interleaved, parse_args, print_table

import lux_torch as lux

LUX = ("update", "step", "donate")
MODELS = {"tiny 2-32-32-1": (2, 32, 32, 1), "medium 784-512-512-10": (784, 512, 512, 10)}


def _tensors(sizes: tuple[int, ...]) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return {
        f"layer_{i + 1}": {
            "weight": torch.randn(b, a, generator=gen) / a**0.5,
            "bias": torch.randn(b, generator=gen) / a**0.5,
        }
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    }


def _torch_step(sizes: tuple[int, ...], **kwargs: bool) -> Callable[[], object]:
    params = [torch.nn.Parameter(t) for t in lux.tree.leaves(_tensors(sizes))]
    for p, g in zip(params, lux.tree.leaves(_tensors(sizes)), strict=True):
        p.grad = g
    return torch.optim.Adam(params, lr=1e-3, **kwargs).step


def _lux_step(sizes: tuple[int, ...], mode: str) -> Callable[[], object]:
    """``mode``: "update" (update + apply_updates), "step" (lux.optim.step: the fused
    kernel on copies) or "donate" (lux.optim.step(donate=True): in place)."""
    opt = lux.optim.adam(1e-3)
    ps, grads = _tensors(sizes), _tensors(sizes)
    box = [ps, opt.init(ps)]

    def step() -> None:
        if mode == "update":
            updates, box[1] = opt.update(grads, box[1], box[0])
            box[0] = lux.optim.apply_updates(box[0], updates)
        else:
            box[0], box[1] = lux.optim.step(opt, grads, box[1], box[0], donate=mode == "donate")

    return step


def _weights(sizes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    return {k: v["weight"] for k, v in _tensors(sizes).items()}


def _torch_other(sizes: tuple[int, ...], kind: str) -> Callable[[], object]:
    tree = _weights(sizes) if kind == "muon" else _tensors(sizes)
    params = [torch.nn.Parameter(t) for t in lux.tree.leaves(tree)]
    for p, g in zip(params, lux.tree.leaves(tree), strict=True):
        p.grad = g.clone()
    if kind == "muon":
        return torch.optim.Muon(params, lr=1e-3).step
    return torch.optim.Adafactor(params, lr=1e-2).step


def _lux_other(sizes: tuple[int, ...], kind: str) -> Callable[[], object]:
    ps = _weights(sizes) if kind == "muon" else _tensors(sizes)
    grads = lux.tree.map(torch.clone, ps)
    if kind == "muon":
        opt = lux.optim.muon(1e-3, ns_dtype=torch.bfloat16)
    else:
        opt = lux.optim.adafactor(1e-2, relative_step=True, min_dim_size_to_factor=1)
    box = [ps, opt.init(ps)]

    def step() -> None:
        updates, box[1] = opt.update(grads, box[1], box[0])
        box[0] = lux.optim.apply_updates(box[0], updates)

    return step


def _other_rows(rounds: int) -> list[tuple[str, ...]]:
    rows = []
    for kind, (label, sizes) in itertools.product(("muon", "adafactor"), MODELS.items()):
        number = 100 if sizes[1] < 100 else 5
        t = interleaved(
            {"torch": _torch_other(sizes, kind), "lux": _lux_other(sizes, kind)},
            rounds=rounds,
            number=number,
        )
        ratio = t["lux"] / t["torch"]
        rows.append(
            (kind, label, f"{t['torch'] * 1e6:.1f}", f"{t['lux'] * 1e6:.1f} ({ratio:.2f}x)")
        )
    return rows


def main() -> None:
    args = parse_args(__doc__)
    rows = []
    for label, sizes in MODELS.items():
        number = 200 if sizes[1] < 100 else 20
        t = interleaved(
            {
                "default": _torch_step(sizes),
                "foreach": _torch_step(sizes, foreach=True),
                "fused": _torch_step(sizes, fused=True),
                "update": _lux_step(sizes, "update"),
                "step": _lux_step(sizes, "step"),
                "donate": _lux_step(sizes, "donate"),
            },
            rounds=args.rounds,
            number=number,
        )
        rows.append(
            (
                label,
                *(f"{t[k] * 1e6:.1f}" for k in ("default", "foreach", "fused")),
                *(f"{t[k] * 1e6:.1f} ({t[k] / t['default']:.2f}x)" for k in LUX),
            )
        )
    print_table(
        "Adam optimizer step alone, eager",
        rows,
        [
            "model",
            "torch default (µs)",
            "torch foreach (µs)",
            "torch fused (µs)",
            "lux update+apply (µs, /default)",
            "lux optim.step (µs, /default)",
            "lux step donate (µs, /default)",
        ],
    )
    print_table(
        "Muon and Adafactor steps alone, eager",
        _other_rows(args.rounds),
        ["optimizer", "model", "torch.optim (µs)", "lux update+apply (µs, /torch)"],
    )


if __name__ == "__main__":
    main()
