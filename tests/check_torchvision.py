"""lux_torch.models against torchvision itself, where torchvision can be imported.

Run:  python tests/check_torchvision.py [--only resnet18,vgg11_bn] [--float32]

The test suite's parity tests take torch.nn references with torchvision's module trees,
written in ``tests/torchvision_ref``: torchvision is not installed by the ``dev`` extra,
because the only torchvision wheels on PyPI link CUDA libraries, while CI installs the CPU
build of torch (a CPU torchvision comes from download.pytorch.org, which CI cannot reach).
This script checks the same things against ``torchvision.models``' own constructors, for
every zoo model that torchvision has (the ResNets, the VGGs with and without BatchNorm,
the ViTs, ``torchvision.ops.MLP``):

* ``lux.load_state_dict(model, torchvision_model.state_dict())`` loads (every name and
  shape, nothing missing or unexpected), and the state after a training step loads back
  into torchvision with ``strict=True``;
* outputs in training and evaluation mode, the gradient of every parameter, and the
  BatchNorm running statistics after the training step equal torchvision's.

Weights: torchvision's own initialisation (seeded), the running statistics randomised
away from 0 and 1. Inputs are small (32x32 images; the ViTs at image size 32, 2x2 patches
of 16 or 32 -- ViT-H/14 at 28, and in float32: 632M parameters). The table gives, per
model and dtype, the largest deviation relative to the largest value of each compared
quantity ("-": none to compare), and the tolerance (``torch.testing.assert_close``) that
every tensor passed; the script exits with status 1 where one failed.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

import torch
from tabulate import tabulate
from torch import nn
from torchvision_ref import randomize, without_random_keys

import lux_torch as lux
from lux_torch import models
from lux_torch.core import Layer

F32, F64 = torch.float32, torch.float64
# the tolerances of the suite's parity tests (tests/test_models_resnet.py, test_vgg.py,
# test_vit.py): float64 torch.testing's defaults, float32 the same convolutions summed in
# another order through up to 150 layers
TOL = {F64: {"rtol": 1e-7, "atol": 1e-7}, F32: {"rtol": 1e-4, "atol": 1e-4}}

Case = tuple[Callable[[], Layer], Callable[[], nn.Module], tuple[int, ...]]


def _cases() -> dict[str, Case]:
    import torchvision.models as tvm
    from torchvision.ops import MLP as TorchvisionMLP

    image = (2, 3, 32, 32)
    cases: dict[str, Case] = {}
    for depth in (18, 34, 50, 101, 152):
        name = f"resnet{depth}"
        cases[name] = (
            functools.partial(getattr(models, name), num_classes=10),
            functools.partial(getattr(tvm, name), num_classes=10),
            image,
        )
    for name in ("vgg11", "vgg13", "vgg16", "vgg19"):
        for bn in ("", "_bn"):
            cases[name + bn] = (
                functools.partial(getattr(models, name + bn), num_classes=10, dropout=0.0),
                functools.partial(getattr(tvm, name + bn), num_classes=10, dropout=0.0),
                image,
            )
    for name, size in (("b_16", 32), ("b_32", 32), ("l_16", 32), ("l_32", 32), ("h_14", 28)):
        cases[f"vit_{name}"] = (
            functools.partial(getattr(models, f"vit_{name}"), image_size=size, num_classes=10),
            functools.partial(getattr(tvm, f"vit_{name}"), image_size=size, num_classes=10),
            (2, 3, size, size),
        )
    cases["mlp"] = (
        functools.partial(models.MLP, 12, [32, 32], 5, norm=lux.BatchNorm1d),
        functools.partial(TorchvisionMLP, 12, [32, 32, 5], norm_layer=nn.BatchNorm1d),
        (8, 12),
    )
    return cases


def _reference(build: Callable[[], nn.Module], dtype: torch.dtype) -> nn.Module:
    """torchvision's model in ``dtype``, every parameter and buffer random (seeded; see
    ``randomize``: torchvision initialises biases, ViT's head and class token to zeros,
    which would hide a mix-up of names)."""
    with torch.device("meta"):
        module = build()
    return randomize(module.to_empty(device="cpu").to(dtype), seed=0)


def _compare(model: Layer, ref: nn.Module, x: torch.Tensor, tol: dict[str, float]) -> Any:
    """``(deviations, failures)``: per compared quantity the largest |lux - torchvision|
    relative to the largest |torchvision|, and what failed ``assert_close`` with ``tol``
    (or the names, or the strict round trip)."""
    failures: list[str] = []
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    ps, st = lux.load_state_dict(model, sd)
    if set(without_random_keys(lux.state_dict(ps, st))) != set(sd):
        failures.append("state_dict names")
    ref.train()
    ref.zero_grad()
    y_ref = ref(x)
    y_ref.square().sum().backward()

    def loss(p: Any) -> tuple[torch.Tensor, Any]:
        y, new_st = model(x, p, st)
        return y.square().sum(), (y, new_st)

    grads, (y, new_st) = torch.func.grad(loss, has_aux=True)(ps)
    ours = dict(lux.tree.flatten_with_paths(grads))
    state = without_random_keys(lux.state_dict(ps, new_st))
    ref.eval()
    with torch.no_grad():
        y_eval_ref = ref(x)
    y_eval, _ = model(x, ps, lux.test_mode(new_st))
    compared = {
        "output (train)": [("output", y.detach(), y_ref.detach())],
        "gradients": [(n, ours[n], p.grad) for n, p in ref.named_parameters()],
        "running statistics": [
            (n, state[n], b) for n, b in ref.named_buffers() if b.is_floating_point()
        ],
        "output (eval)": [("output", y_eval, y_eval_ref)],
    }
    deviations: dict[str, float | None] = {}
    for what, pairs in compared.items():
        worst = None if not pairs else 0.0  # None: nothing to compare (no BatchNorm)
        for name, a, b in pairs:
            dev = (a - b).abs().max().item() / (b.abs().max().item() or 1.0)
            worst = max(worst or 0.0, dev)
            try:
                torch.testing.assert_close(a, b, rtol=tol["rtol"], atol=tol["atol"])
            except AssertionError:
                failures.append(f"{what}: {name}")
        deviations[what] = worst
    try:  # the new state loads back into torchvision, strict
        ref.load_state_dict(state, strict=True)
    except RuntimeError:
        failures.append("strict load of the new state")
    return deviations, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--float32", action="store_true", help="float32 instead of float64")
    args = parser.parse_args()
    try:
        import torchvision
    except Exception as error:  # any import failure (a CUDA-only build): say why, exit 2
        print(f"torchvision cannot be imported here ({type(error).__name__}: {error})")
        return 2
    dtype = F32 if args.float32 else F64
    cases = _cases()
    names = args.only.split(",") if args.only else list(cases)
    rows, failed = [], []
    for name in names:
        make_model, build, shape = cases[name]
        # ViT-H/14 (632M parameters) in float64 needs more memory than the others together
        case_dtype = F32 if name == "vit_h_14" else dtype
        ref = _reference(build, case_dtype)
        x = torch.randn(shape, dtype=case_dtype, generator=torch.Generator().manual_seed(1))
        model = make_model()
        count = sum(p.numel() for p in ref.parameters())
        deviations, failures = _compare(model, ref, x, TOL[case_dtype])
        verdict = "ok" if not failures else "FAILED: " + "; ".join(failures[:3])
        if failures:
            failed.append(name)
        shown = ["-" if v is None else f"{v:.1e}" for v in deviations.values()]
        dtype_name = str(case_dtype).removeprefix("torch.")
        tol = f"{TOL[case_dtype]['rtol']:.0e}"
        rows.append((name, f"{count:,}", dtype_name, *shown, tol, verdict))
        print(f"{name}: {verdict}", file=sys.stderr, flush=True)
    print(f"lux_torch.models vs torchvision {torchvision.__version__}, torch {torch.__version__}")
    headers = ["model", "parameters", "dtype", "output (train)", "gradients"]
    headers += ["running statistics", "output (eval)", "tolerance", "result"]
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
