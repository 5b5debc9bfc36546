"""torch.nn references with torchvision's model layouts, for the model zoo's parity tests.

torchvision cannot be imported on the test machines (only a CUDA build exists there), so the
parity tests compare ``lux_torch.models`` against these modules: plain ``torch.nn`` code
written for the tests after torchvision's model definitions, with the same module names
(hence the same ``state_dict`` keys and shapes), the same initialisation and the same
forward pass. Each module says which torchvision file it follows and what it generalises.
``tests/check_torchvision.py`` makes the same comparisons against torchvision itself,
where it can be imported.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["randomize", "without_random_keys"]


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Overwrite ``module``'s parameters and buffers in place with values drawn from a
    seeded ``torch.Generator`` (never torch's global RNG), so that a parity test sees
    non-trivial tensors (torchvision initialises some of them to zeros: ViT's head and
    class token, every bias) that make any mix-up of names show. Weights of two or more
    dimensions get ``N(0, 1 / fan_in)``, 1-d weights (norm scales) ``1 + N(0, 0.2^2)``, other
    parameters ``N(0, 0.2^2)``; running means ``N(0, 0.2^2)``, running variances
    ``U(0.5, 1.5)``, ``num_batches_tracked`` 3. Returns ``module``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
            leaf = name.rsplit(".", 1)[-1]
            if p.dim() >= 2 and "weight" in leaf:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif leaf == "weight":
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen, dtype=torch.float64))
            elif name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=gen, dtype=torch.float64))
            elif name.endswith("num_batches_tracked"):
                b.fill_(3)
    return module


def without_random_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``lux.state_dict(ps, st)`` without the dropout layers' random keys (``...key``), which
    torch modules do not have: what ``module.load_state_dict(strict=True)`` accepts."""
    return {k: v for k, v in sd.items() if k.rsplit(".", 1)[-1] != "key"}
