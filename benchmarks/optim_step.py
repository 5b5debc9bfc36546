"""One optimizer step alone: lux ``adam``/``sgd`` vs ``torch.optim.Adam``/``SGD``.

Run:  python benchmarks/optim_step.py [--threads 2] [--rounds 30] [--baseline REV]

The gradients are fixed tensors (no forward/backward): this times the optimizer only.
``torch.optim.Adam.step()`` updates the parameters in place: the default (on CPU tensors,
the for-loop implementation), ``foreach=True`` and ``fused=True``. The lux step is pure:
``updates, state = opt.update(grads, state, ps)`` then ``ps = apply_updates(ps,
updates)``, both new trees; ``lux.optim.step`` runs torch's fused Adam kernel on copies
(pure), and with ``donate=True`` on the given buffers (in place, like torch fused). The
same columns for SGD with momentum 0.9 (lr 0.01): ``lux.optim.step`` runs torch's fused SGD
kernel (``optim.FusedSGD``).
A second table times the optimizers torch has besides Adam that lux_torch also has with
torch's numerics: ``torch.optim.Muon`` (the weight matrices only; Newton-Schulz in
bfloat16: lux ``muon(ns_dtype=torch.bfloat16)``) and ``torch.optim.Adafactor`` (lux
``adafactor(lr, relative_step=True, min_dim_size_to_factor=1)``), both lux update+apply.
Models: the tiny MLP 2-32-32-1 (6 tensors, 1153 numbers) and the 784-512-512-10 MLP
(6 tensors, 670K numbers).

A second table times the ``torch.optim`` namesakes (NAdam, RAdam, Adamax, Adadelta, Rprop,
ASGD): lux ``update`` + ``apply_updates`` against ``torch.optim.<Name>(foreach=True)``, with
default hyperparameters, interleaved in the same harness.

``--baseline REV`` (a git revision, e.g. the commit before an optimizer change) also times
lux_torch as of ``REV`` (``_harness.load_baseline``) in the same interleaved rounds and
prints a third table: the Adam and SGD rows before and after, as ratios to the same torch
runs.

Target (optimizer issue, CPU, 2 threads): lux / torch foreach <= 1.0 on the tiny MLP.
On the medium MLP a pure step allocates new moments, updates and parameters (megabytes)
every step, and glibc hands freed memory back to the OS between steps, so page faults
dominate: compare with ``MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=134217728``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from _harness import interleaved, load_baseline, parse_args, print_table, ratio_row

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


# (lux optimizer of a lux_torch package, torch optimizer class with its hyperparameters)
OPTIMIZERS: dict[str, tuple[Callable[[Any], Any], Callable[..., torch.optim.Optimizer]]] = {
    "Adam": (lambda lib: lib.optim.adam(1e-3), partial(torch.optim.Adam, lr=1e-3)),
    "SGD": (
        lambda lib: lib.optim.sgd(1e-2, momentum=0.9),
        partial(torch.optim.SGD, lr=1e-2, momentum=0.9),
    ),
}


def _torch_step(sizes: tuple[int, ...], name: str, **kwargs: bool) -> Callable[[], object]:
    params = [torch.nn.Parameter(t) for t in lux.tree.leaves(_tensors(sizes))]
    for p, g in zip(params, lux.tree.leaves(_tensors(sizes)), strict=True):
        p.grad = g
    return OPTIMIZERS[name][1](params, **kwargs).step


def _lux_step(sizes: tuple[int, ...], name: str, mode: str, lib: Any = lux) -> Callable[[], object]:
    """``mode``: "update" (update + apply_updates), "step" (lux.optim.step: the fused
    kernel on copies) or "donate" (lux.optim.step(donate=True): in place); ``lib``: the
    lux_torch package (or a baseline's)."""
    opt = OPTIMIZERS[name][0](lib)
    ps, grads = _tensors(sizes), _tensors(sizes)
    box = [ps, opt.init(ps)]

    def step() -> None:
        if mode == "update":
            updates, box[1] = opt.update(grads, box[1], box[0])
            box[0] = lib.optim.apply_updates(box[0], updates)
        else:
            box[0], box[1] = lib.optim.step(opt, grads, box[1], box[0], donate=mode == "donate")

    return step


# torch.optim namesakes: (lux factory, torch factory, matrices only); Muon takes 2-D
# parameters only, so it runs on the weights; Adafactor with relative steps and every leaf
# factored is torch's Adafactor
Make = Callable[[], lux.optim.GradientTransformation]
NAMESAKES: dict[str, tuple[Make, Callable[..., torch.optim.Optimizer], bool]] = {
    "NAdam": (lux.optim.nadam, partial(torch.optim.NAdam, foreach=True), False),
    "RAdam": (lux.optim.radam, partial(torch.optim.RAdam, foreach=True), False),
    "Adamax": (lux.optim.adamax, partial(torch.optim.Adamax, foreach=True), False),
    "Adadelta": (lux.optim.adadelta, partial(torch.optim.Adadelta, foreach=True), False),
    "Rprop": (lux.optim.rprop, partial(torch.optim.Rprop, foreach=True), False),
    "ASGD": (lux.optim.asgd, partial(torch.optim.ASGD, foreach=True), False),
    "Muon": (
        partial(lux.optim.muon, 1e-3, ns_dtype=torch.bfloat16),
        partial(torch.optim.Muon, lr=1e-3),
        True,
    ),
    "Adafactor": (
        partial(lux.optim.adafactor, 1e-2, relative_step=True, min_dim_size_to_factor=1),
        partial(torch.optim.Adafactor, lr=1e-2),
        False,
    ),
}


def _tree(sizes: tuple[int, ...], matrices: bool) -> dict[str, Any]:
    tree = _tensors(sizes)
    return {k: v["weight"] for k, v in tree.items()} if matrices else tree


def _torch_namesake(
    sizes: tuple[int, ...], make: Callable[..., torch.optim.Optimizer], matrices: bool
) -> Callable[[], object]:
    params = [torch.nn.Parameter(t) for t in lux.tree.leaves(_tree(sizes, matrices))]
    for p, g in zip(params, lux.tree.leaves(_tree(sizes, matrices)), strict=True):
        p.grad = g
    return make(params).step


def _lux_namesake(sizes: tuple[int, ...], make: Make, matrices: bool) -> Callable[[], object]:
    opt = make()
    ps, grads = _tree(sizes, matrices), _tree(sizes, matrices)
    box = [ps, opt.init(ps)]

    def step() -> None:
        updates, box[1] = opt.update(grads, box[1], box[0])
        box[0] = lux.optim.apply_updates(box[0], updates)

    return step


def namesakes_table(rounds: int) -> None:
    """lux update + apply_updates vs torch.optim's step (foreach where torch has it), per
    namesake and model."""
    rows = []
    for label, sizes in MODELS.items():
        number = 100 if sizes[1] < 100 else 10
        for name, (make, cls, matrices) in NAMESAKES.items():
            t = interleaved(
                {
                    "torch": _torch_namesake(sizes, cls, matrices),
                    "lux": _lux_namesake(sizes, make, matrices),
                },
                rounds=rounds,
                number=number,
            )
            rows.append(ratio_row(f"{name}, {label}", t, "torch", "lux"))
    print_table(
        "torch.optim namesakes, one step, eager",
        rows,
        ["optimizer, model", "torch (µs)", "lux update+apply (µs)", "lux / torch"],
    )


def main() -> None:
    args = parse_args(__doc__, baseline=True)
    old = load_baseline(args.baseline) if args.baseline else None
    rows, before = [], []
    for name, (label, sizes) in itertools.product(OPTIMIZERS, MODELS.items()):
        number = 200 if sizes[1] < 100 else 20
        steps = {
            "default": _torch_step(sizes, name),
            "foreach": _torch_step(sizes, name, foreach=True),
            "fused": _torch_step(sizes, name, fused=True),
            **{mode: _lux_step(sizes, name, mode) for mode in LUX},
        }
        if old is not None:
            steps.update({f"old {mode}": _lux_step(sizes, name, mode, old) for mode in LUX})
        t = interleaved(steps, rounds=args.rounds, number=number)
        row = f"{name}, {label}"
        rows.append(
            (
                row,
                *(f"{t[k] * 1e6:.1f}" for k in ("default", "foreach", "fused")),
                *(f"{t[k] * 1e6:.1f} ({t[k] / t['default']:.2f}x)" for k in LUX),
            )
        )
        if old is not None:
            d = t["default"]
            before.append((row, *(f"{t[f'old {m}'] / d:.2f} -> {t[m] / d:.2f}" for m in LUX)))
    print_table(
        "Optimizer step alone, eager",
        rows,
        [
            "optimizer, model",
            "torch default (µs)",
            "torch foreach (µs)",
            "torch fused (µs)",
            "lux update+apply (µs, /default)",
            "lux optim.step (µs, /default)",
            "lux step donate (µs, /default)",
        ],
    )
    if old is not None:
        print_table(
            f"lux / torch default, lux_torch at {args.baseline} -> now (same run)",
            before,
            ["optimizer, model", *(f"lux {mode}" for mode in LUX)],
        )
    namesakes_table(args.rounds)


if __name__ == "__main__":
    main()
