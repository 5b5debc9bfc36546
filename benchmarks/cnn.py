"""Eager CNN training passes: lux layers vs the same torch.nn modules, identical weights.

Run:  python benchmarks/cnn.py [--threads 2] [--rounds 30]

Rows (forward + backward in training mode, medians of interleaved rounds after a warm-up):

* LeNet-style CNN, batch 64 of 1x28x28: ``Conv2d(1, 6, 5) - BatchNorm2d - relu -
  MaxPool2d(2) - Conv2d(6, 16, 5) - BatchNorm2d - relu - MaxPool2d(2) - Flatten -
  Linear(256, 120, relu) - Linear(120, 10)``, cross-entropy; lux through
  ``torch.autograd.grad`` w.r.t. its parameter leaves (what ``lux.train_step``'s eager
  path does), torch through ``backward()``;
* BatchNorm2d alone, training mode, batch 64 of 32x28x28: ``sum(y * w)`` backward.

Targets (layer-library issue): CNN ratio lux / torch <= 1.05, BatchNorm2d <= 1.10.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _harness import interleaved, parse_args, print_table, ratio_row

import lux_torch as lux


def _lenet() -> tuple[lux.Chain, torch.nn.Sequential]:
    ours = lux.Chain(
        lux.Conv2d(1, 6, 5),
        lux.BatchNorm2d(6, activation=torch.relu),
        lux.MaxPool2d(2),
        lux.Conv2d(6, 16, 5),
        lux.BatchNorm2d(16, activation=torch.relu),
        lux.MaxPool2d(2),
        lux.Flatten(),
        lux.Linear(256, 120, activation=torch.relu),
        lux.Linear(120, 10),
    )
    nn = torch.nn
    theirs = nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 120),
        nn.ReLU(),
        nn.Linear(120, 10),
    )
    return ours, theirs


def _copy_weights(ps: dict[str, Any], theirs: torch.nn.Sequential) -> dict[str, Any]:
    """Our parameter tree holding the torch model's weights (same architecture order)."""
    modules = [m for m in theirs if any(True for _ in m.parameters(recurse=False))]
    names = sorted(ps, key=lambda n: int(n.split("_")[1]))
    names = [n for n in names if ps[n]]
    assert len(names) == len(modules)
    return {
        **ps,
        **{
            n: {k: getattr(m, k).detach().clone() for k in ps[n]}
            for n, m in zip(names, modules, strict=True)
        },
    }


def _cnn_cases() -> dict[str, Callable[[], Any]]:
    ours, theirs = _lenet()
    theirs.train()
    ps, st = lux.setup(0, ours)
    ps = _copy_weights(ps, theirs)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    leaves = [p.requires_grad_(True) for p in lux.tree.leaves(ps)]
    params = list(theirs.parameters())
    with torch.no_grad():
        lux_out, _ = ours(x, ps, st)
        torch.testing.assert_close(lux_out, theirs(x), rtol=1e-4, atol=1e-5)

    def torch_step() -> None:
        for p in params:
            p.grad = None
        F.cross_entropy(theirs(x), y).backward()

    def lux_step() -> None:
        logits, _ = ours(x, ps, st)
        torch.autograd.grad(F.cross_entropy(logits, y), leaves)

    return {"torch": torch_step, "lux": lux_step}


def _batchnorm_cases() -> dict[str, Callable[[], Any]]:
    layer, module = lux.BatchNorm2d(32), torch.nn.BatchNorm2d(32).train()
    ps, st = lux.setup(0, layer)
    leaves = [p.requires_grad_(True) for p in lux.tree.leaves(ps)]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 32, 28, 28, generator=gen).requires_grad_(True)
    w = torch.randn(64, 32, 28, 28, generator=gen)
    params = list(module.parameters())

    def torch_step() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        (module(x) * w).sum().backward()

    def lux_step() -> None:
        y, _ = layer(x, ps, st)
        torch.autograd.grad((y * w).sum(), [x, *leaves])

    return {"torch": torch_step, "lux": lux_step}


def main() -> None:
    args = parse_args(__doc__)
    rows = []
    for label, cases, number in (
        ("LeNet CNN, b64 1x28x28, fwd+bwd", _cnn_cases(), 20),
        ("BatchNorm2d(32), b64 28x28, fwd+bwd", _batchnorm_cases(), 10),
    ):
        t = interleaved(cases, rounds=args.rounds, number=number)
        rows.append(ratio_row(label, t, "torch", "lux"))
    print_table(
        "Eager training passes, ratio lux / torch.nn (targets: CNN <= 1.05, BatchNorm2d <= 1.10)",
        rows,
        ["case", "torch.nn (µs)", "lux (µs)", "ratio lux/torch"],
    )


if __name__ == "__main__":
    main()
