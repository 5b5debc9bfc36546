"""Checks shared by the model zoo's parity tests (a lux model against a torch.nn reference
with torchvision's layout, tests/torchvision_ref)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torchvision_ref import without_random_keys

import lux_torch as lux
from lux_torch.core import Layer
from lux_torch.testing import check_layer

__all__ = [
    "assert_compiles",
    "assert_conforms",
    "assert_grads_match",
    "assert_same_layout",
    "images",
]


def images(n: int, size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(n, 3, size, size)`` standard normal images from an explicit key."""
    return lux.random.normal(lux.random.key(1), (n, 3, size, size), dtype=dtype)


def assert_conforms(model: Layer, x: torch.Tensor, reference: nn.Module) -> None:
    """The harness (without compile: a slow test of its own) passes in both modes, with
    ``ps``/``st`` loaded from the reference's ``state_dict``. The model's dropout must be 0:
    then nothing is drawn, and parity is checked in training mode too (``stochastic=False``)."""
    ps, st = lux.load_state_dict(model, reference.state_dict())
    report = check_layer(
        model, x, ps=ps, st=st, reference=reference, compile=False, stochastic=False
    )
    for name in ("parity", "gradcheck", "jvp", "vmap", "vmap_inputs", "purity", "determinism"):
        for mode in ("[train]", "[test]"):
            assert report[name + mode] == "passed", (name + mode, report)
    assert report["counts"] == report["shapes"] == report["structure"] == "passed"


def assert_compiles(model: Layer, x: torch.Tensor, reference: nn.Module) -> None:
    """``torch.compile(fullgraph=True)`` (inductor) captures the model in one graph and matches
    eager in both modes (dropout 0, as :func:`assert_conforms`)."""
    ps, st = lux.load_state_dict(model, reference.state_dict())
    report = check_layer(
        model, x, ps=ps, st=st, reference=reference, gradcheck=False, jvp=False, vmap=False,
        stochastic=False,
    )  # fmt: skip
    assert report["compile[train]"] == report["compile[test]"] == "passed"


def assert_grads_match(
    model: Layer, reference: nn.Module, x: torch.Tensor, labels: torch.Tensor
) -> None:
    """In test mode: ``torch.func.grad`` of the cross-entropy w.r.t. ``ps`` equals the
    reference's autograd gradients (float64, rtol 1e-10), and ``vmap(grad)`` over the batch
    (per-sample gradients) equals a loop of ``grad``."""
    ps, st = lux.load_state_dict(model, reference.state_dict())
    st = lux.test_mode(st)

    def loss(p: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(xb, p, st)[0], yb)

    grads = torch.func.grad(loss)(ps, x, labels)
    reference.eval()
    reference.zero_grad()
    F.cross_entropy(reference(x), labels).backward()
    theirs = {n: p.grad for n, p in reference.named_parameters()}
    for name, g in lux.state_dict(grads, {}).items():
        torch.testing.assert_close(g, theirs[name], rtol=1e-10, atol=1e-12, msg=name)
    # (torch has no batching rule for CPU flash attention: a warning, the fallback is exact)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop")
        per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(
            ps, x[:, None], labels[:, None]
        )
    for i in range(x.shape[0]):
        one = torch.func.grad(loss)(ps, x[i : i + 1], labels[i : i + 1])
        assert lux.tree.allclose(lux.tree.map(lambda t, i=i: t[i], per_sample), one)


def assert_same_layout(model: Layer, reference: nn.Module, random_keys: int) -> None:
    """On the meta device: the same ``state_dict`` names and shapes as the reference (less
    lux's ``random_keys`` dropout keys), parameters in torch's order (so ``lux.tree.ravel``
    lines up with ``parameters_to_vector``), the same counts, and the printout's total."""
    ps, st = lux.setup(0, model, device="meta")
    ours = without_random_keys(lux.state_dict(ps, st))
    theirs = reference.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert lux.tree.paths(ps) == [n for n, _ in reference.named_parameters()]
    n = sum(p.numel() for p in reference.parameters())
    assert lux.param_count(model) == n
    buffers = sum(b.numel() for b in reference.buffers())
    assert lux.state_count(model) == buffers + 2 * random_keys
    assert f"Total: {n:,} parameters" in repr(model)
