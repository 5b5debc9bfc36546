"""Model-zoo training steps: lux vs torch.nn with identical weights, eager and compiled.

Run:  python benchmarks/models.py [--threads 2] [--rounds 5] [--compiled 1] [--lm 1]

Rows (medians of interleaved rounds after a warm-up, all in one run):

* ResNet-18 (``lux_torch.models.resnet18(num_classes=10)`` vs torchvision's ResNet-18 as
  torch.nn, ``tests/torchvision_ref/resnet.py``, loaded with the same weights), 32x32
  inputs, batch 64, train mode:

  - forward+backward: cross-entropy and ``torch.autograd.grad`` to every parameter, no
    update (the layers alone); compiled: ``torch.compile`` of the lux loss function
    (``fullgraph=True``) vs of the module;
  - SGD training step: forward, cross-entropy, backward and an SGD update (lr 0.1,
    momentum 0.9, weight decay 5e-4):

    eager: ``lux.train_step`` (``check_finite=True``, the default), pure and with
    ``donate=True`` (torch's fused SGD kernel in place on the train state's buffers), vs
    ``zero_grad(); loss.backward(); torch.optim.SGD.step()`` (foreach);
    Adam step: the same with ``lux.optim.adam(1e-3)`` and ``donate=True`` (torch's fused
    Adam kernel in place on the train state's buffers) vs ``torch.optim.Adam`` (foreach);
    compiled: ``lux.train_step(..., compile=True)`` (forward, backward and the update as one
    Inductor graph) vs ``torch.compile(module)`` and ``torch.compile(optimizer.step)``
    (PyTorch's recipe; ``backward`` between them);
    the SGD steps again with lux's convolution weights stored channels-last (what the
    performance guide suggests for compiled convolutional steps; torch's module as before).

* The small TransformerLM training step (forward + backward) of ``benchmarks/lm.py``,
  reused from there (``--lm 0`` leaves it out).

Issue 21's targets: eager <= 1.05, compiled <= torch.compile's time.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _harness import interleaved, parse_args, print_table, ratio_row

import lux_torch as lux
from lux_torch import models

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from torchvision_ref import resnet as tv

BATCH, SIZE, CLASSES = 64, 32, 10
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    key_x, key_y = lux.random.split(lux.random.key(0))
    x = lux.random.normal(key_x, (BATCH, 3, SIZE, SIZE))
    return x, lux.random.randint(key_y, (BATCH,), 0, CLASSES)


def _torch_step(module: torch.nn.Module, compiled: bool, adam: bool) -> Callable[[], Any]:
    x, y = _data()
    params = module.parameters()
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=1e-3)
        if adam
        else torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    )
    forward: Callable[..., Any] = torch.compile(module) if compiled else module
    opt_step: Callable[[], Any] = torch.compile(opt.step) if compiled else opt.step

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        opt_step()

    return step


def _lux_step(
    model: lux.Layer, ps: Any, st: Any, compiled: bool, adam: bool, donate: bool
) -> Callable[[], Any]:
    data = _data()
    optimizer = (
        lux.optim.adam(1e-3)
        if adam
        else lux.optim.sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    )
    holder = [lux.TrainState(model, ps, st, optimizer)]
    loss_fn = lux.losses.CrossEntropyLoss()

    def step() -> None:
        holder[0], _, _ = lux.train_step(loss_fn, data, holder[0], compile=compiled, donate=donate)

    return step


def _grad_cases(
    model: lux.Layer, ps: Any, st: Any, module: torch.nn.Module, compiled: bool
) -> dict[str, Callable[[], Any]]:
    """Forward, cross-entropy and backward to every parameter, no update: the layers alone."""
    x, y = _data()
    ps = lux.tree.map(lambda p: p.detach().requires_grad_(True), ps)
    params = list(module.parameters())

    def lux_loss(ps: Any) -> torch.Tensor:
        return F.cross_entropy(model(x, ps, st)[0], y)

    def torch_loss(forward: Callable[..., Any]) -> torch.Tensor:
        return F.cross_entropy(forward(x), y)

    lux_fn = torch.compile(lux_loss, fullgraph=True) if compiled else lux_loss
    forward = torch.compile(module) if compiled else module
    grad_leaves = lux.tree.leaves(ps)
    return {
        "torch": lambda: torch.autograd.grad(torch_loss(forward), params),
        "lux": lambda: torch.autograd.grad(lux_fn(ps), grad_leaves),
    }


def _channels_last(p: torch.Tensor) -> torch.Tensor:
    return p.contiguous(memory_format=torch.channels_last) if p.ndim == 4 else p


def resnet_cases(compiled: bool, what: str) -> dict[str, Callable[[], Any]]:
    """ResNet-18 cases (``what``: ``"grad"``, ``"sgd"``, ``"sgd donate"`` or ``"adam"``
    (donated); a trailing ``" cl"`` stores lux's convolution weights channels-last), eager
    (and compiled), each on its own copy of the same initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = tv.resnet18(num_classes=CLASSES)
    model = models.resnet18(num_classes=CLASSES)

    def lux_weights() -> tuple[Any, Any]:
        sd = {k: v.detach().clone() for k, v in reference.state_dict().items()}
        ps, st = lux.load_state_dict(model, sd)
        if what.endswith(" cl"):  # the convolution weights stored channels-last
            ps = lux.tree.map(_channels_last, ps)
        return ps, st

    def torch_module() -> torch.nn.Module:
        module = tv.resnet18(num_classes=CLASSES)
        module.load_state_dict(reference.state_dict())
        return module.train()

    cases: dict[str, Callable[[], Any]] = {}
    for mode in (False, True) if compiled else (False,):
        suffix = " compiled" if mode else ""
        if what == "grad":
            pair = _grad_cases(model, *lux_weights(), torch_module(), mode)
        else:
            adam = what == "adam"
            pair = {
                "torch": _torch_step(torch_module(), mode, adam),
                "lux": _lux_step(model, *lux_weights(), mode, adam, adam or "donate" in what),
            }
        cases.update({name + suffix: fn for name, fn in pair.items()})
    return cases


def lm_cases(compiled: bool) -> dict[str, Callable[[], Any]]:
    """benchmarks/lm.py's TransformerLM training steps (forward + backward)."""
    import lm

    return lm.training_cases(*lm.setup_models(), compiled)


def main() -> None:
    args = parse_args(__doc__, rounds=5, compiled=1, lm=1)
    compiled = bool(args.compiled)
    rows = []
    steps = (
        ("grad", "forward+backward"),
        ("sgd", "SGD step"),
        ("sgd donate", "SGD step (lux donate=True)"),
        ("adam", "Adam step (lux donate=True)"),
        ("sgd cl", "SGD step (lux channels-last weights)"),
        ("sgd donate cl", "SGD step (lux donate=True, channels-last weights)"),
    )
    for what, label in steps:
        t = interleaved(resnet_cases(compiled, what), rounds=args.rounds, number=1, warmup=2)
        rows.append(ratio_row(f"ResNet-18 {label}, eager", t, "torch", "lux"))
        if compiled:
            rows.append(
                ratio_row(f"ResNet-18 {label}, compiled", t, "torch compiled", "lux compiled")
            )
    if args.lm:
        t = interleaved(lm_cases(compiled), rounds=args.rounds, number=3, warmup=3)
        rows.append(ratio_row("TransformerLM forward+backward, eager", t, "torch", "lux"))
        if compiled:
            rows.append(
                ratio_row(
                    "TransformerLM forward+backward, compiled", t, "torch compiled", "lux compiled"
                )
            )
    print_table(
        f"Training, lux vs torch.nn with identical weights (ResNet-18: {SIZE}x{SIZE}, batch "
        f"{BATCH}; targets: eager <= 1.05, compiled <= 1.0)",
        rows,
        ["case", "torch.nn (µs)", "lux (µs)", "ratio lux/torch"],
    )


if __name__ == "__main__":
    main()
