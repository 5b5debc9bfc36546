"""Shared test helpers (importable from test modules: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from typing import Any

import torch

from lux_torch import random as lrandom
from lux_torch.core import Layer, setup
from lux_torch.testing import check_layer

DTYPES = [torch.float32, torch.float64]


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    """Standard normal input drawn from an explicit key (never torch's global RNG)."""
    return lrandom.normal(lrandom.key(seed), shape, dtype=dtype)


def check(layer: Layer, x: Any, dtype: torch.dtype, **kw: Any) -> dict[str, str]:
    """check_layer with ps/st created in ``dtype``.

    Compilation is checked in float32 only: graph capture does not depend on the dtype, and
    inductor compiles C++ per graph (seconds each on CI's 2 cores), so float64 runs cover
    parity, gradcheck, purity, determinism and vmap while float32 runs add compile.
    """
    ps, st = setup(0, layer, dtype=dtype)
    kw.setdefault("compile", dtype == torch.float32)
    return check_layer(layer, x, ps=ps, st=st, **kw)
