"""Initializers: ``f(key, *shape, dtype=None, device=None, **kw) -> Tensor``.

Every initializer draws its randomness from an explicit ``key`` (see :mod:`lux_torch.random`)
and never touches torch's global RNG. Configure one with :func:`functools.partial`::

    w_init = functools.partial(lux.init.kaiming_normal, nonlinearity="relu")
    lux.Linear(4, 8, weight_init=w_init)

``dtype=None`` means the dtype requested by :func:`lux_torch.setup` (see
:func:`default_dtype`), else torch's default dtype. ``device=None`` means the key's device
(``setup`` moves the key to its ``device``). Fans follow ``torch.nn.init``: for a weight of
shape ``(out, in, *kernel)``, ``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import Literal

import torch

from . import random as lrandom

__all__ = [
    "calculate_gain",
    "default_dtype",
    "glorot_normal",
    "glorot_uniform",
    "identity",
    "kaiming_normal",
    "kaiming_uniform",
    "normal",
    "ones",
    "orthogonal",
    "sparse",
    "truncated_normal",
    "uniform",
    "zeros",
]

_DTYPE: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar(
    "lux_torch_init_dtype", default=None
)

calculate_gain = torch.nn.init.calculate_gain


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype | None) -> Iterator[None]:
    """Context in which initializers called with ``dtype=None`` create ``dtype`` tensors.

    Context-local (a :class:`contextvars.ContextVar`), never global: used by
    :func:`lux_torch.setup` so that tensors are created directly in the requested dtype.
    """
    token = _DTYPE.set(dtype)
    try:
        yield
    finally:
        _DTYPE.reset(token)


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    ctx = _DTYPE.get()
    return ctx if ctx is not None else torch.get_default_dtype()


def _device(key: torch.Tensor, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else key.device


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(
            f"fan_in/fan_out need a weight with at least 2 dimensions, got shape {shape}"
        )
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def zeros(
    key: torch.Tensor,
    *shape: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """All zeros (``key`` is accepted for a uniform signature and unused)."""
    return torch.zeros(shape, dtype=_dtype(dtype), device=_device(key, device))


def ones(
    key: torch.Tensor,
    *shape: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """All ones (``key`` is accepted for a uniform signature and unused)."""
    return torch.ones(shape, dtype=_dtype(dtype), device=_device(key, device))


def uniform(
    key: torch.Tensor,
    *shape: int,
    low: float = 0.0,
    high: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform on ``[low, high)`` (``torch.nn.init.uniform_``)."""
    return lrandom.uniform(
        key, shape, dtype=_dtype(dtype), low=low, high=high, device=_device(key, device)
    )


def normal(
    key: torch.Tensor,
    *shape: int,
    mean: float = 0.0,
    std: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normal with the given mean and standard deviation (``torch.nn.init.normal_``)."""
    return lrandom.normal(
        key, shape, dtype=_dtype(dtype), mean=mean, std=std, device=_device(key, device)
    )


def glorot_uniform(
    key: torch.Tensor,
    *shape: int,
    gain: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Glorot/Xavier uniform: ``U(-a, a)``, ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(key, *shape, low=-bound, high=bound, dtype=dtype, device=device)


def glorot_normal(
    key: torch.Tensor,
    *shape: int,
    gain: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Glorot/Xavier normal: ``N(0, std^2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return normal(key, *shape, std=std, dtype=dtype, device=device)


def _kaiming_std(
    shape: tuple[int, ...], a: float, mode: Literal["fan_in", "fan_out"], nonlinearity: str
) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)  # type: ignore[arg-type]  # a str; torch checks it


def kaiming_uniform(
    key: torch.Tensor,
    *shape: int,
    a: float = 0.0,
    mode: Literal["fan_in", "fan_out"] = "fan_in",
    nonlinearity: str = "leaky_relu",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """He/Kaiming uniform, as ``torch.nn.init.kaiming_uniform_`` (same defaults).

    ``kaiming_uniform(key, out, in, a=math.sqrt(5))`` is torch.nn.Linear's weight default:
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
    """
    bound = math.sqrt(3.0) * _kaiming_std(shape, a, mode, nonlinearity)
    return uniform(key, *shape, low=-bound, high=bound, dtype=dtype, device=device)


def kaiming_normal(
    key: torch.Tensor,
    *shape: int,
    a: float = 0.0,
    mode: Literal["fan_in", "fan_out"] = "fan_in",
    nonlinearity: str = "leaky_relu",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """He/Kaiming normal, as ``torch.nn.init.kaiming_normal_`` (same defaults)."""
    std = _kaiming_std(shape, a, mode, nonlinearity)
    return normal(key, *shape, std=std, dtype=dtype, device=device)


def truncated_normal(
    key: torch.Tensor,
    *shape: int,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normal truncated to ``[a, b]`` (absolute bounds, as ``torch.nn.init.trunc_normal_``).

    Inverse-CDF sampling: a uniform draw between ``Phi((a-mean)/std)`` and
    ``Phi((b-mean)/std)`` mapped through ``erfinv``; exact, no rejection loop.
    """
    if not a < b:
        raise ValueError(f"truncated_normal: need a < b, got a={a}, b={b}")
    lo = 0.5 * (1.0 + math.erf((a - mean) / std / math.sqrt(2.0)))
    hi = 0.5 * (1.0 + math.erf((b - mean) / std / math.sqrt(2.0)))
    work = torch.float64 if _dtype(dtype) == torch.float64 else torch.float32
    u = uniform(key, *shape, low=2 * lo - 1, high=2 * hi - 1, dtype=work, device=device)
    x = torch.erfinv(u) * (std * math.sqrt(2.0)) + mean
    return x.clamp(a, b).to(_dtype(dtype))


def orthogonal(
    key: torch.Tensor,
    *shape: int,
    gain: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(Semi-)orthogonal matrix from the QR decomposition of a normal draw.

    As ``torch.nn.init.orthogonal_``: trailing dimensions are flattened, ``Q`` is
    sign-corrected by ``diag(R)`` so the result is Haar-distributed, then scaled by ``gain``.
    """
    if len(shape) < 2:
        raise ValueError(f"orthogonal init needs at least 2 dimensions, got shape {shape}")
    rows, cols = shape[0], math.prod(shape[1:])
    work = torch.float64 if _dtype(dtype) == torch.float64 else torch.float32
    flat = normal(key, rows, cols, dtype=work, device=device)
    if rows < cols:
        flat = flat.t()
    q: torch.Tensor  # torch types the result of linalg.qr as Any
    q, r = torch.linalg.qr(flat)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if rows < cols:
        q = q.t()
    return (gain * q).reshape(shape).to(_dtype(dtype))


def sparse(
    key: torch.Tensor,
    *shape: int,
    sparsity: float,
    std: float = 0.01,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """2-D matrix from ``N(0, std^2)`` with ``ceil(sparsity * rows)`` zeros in each column.

    As ``torch.nn.init.sparse_`` (Martens, 2010).
    """
    if len(shape) != 2:
        raise ValueError(f"sparse init needs a 2-D shape, got {shape}")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparse init: sparsity must be in [0, 1], got {sparsity}")
    rows, cols = shape
    k_values, k_zeros = lrandom.split(key)
    values = normal(k_values, rows, cols, std=std, dtype=dtype, device=device)
    num_zeros = math.ceil(sparsity * rows)
    order = torch.argsort(lrandom.bits(k_zeros, (rows, cols)).to(_device(key, device)), dim=0)
    zero_mask = order < num_zeros  # a uniformly random set of num_zeros rows per column
    return values.masked_fill(zero_mask, 0.0)


def identity(
    key: torch.Tensor,
    *shape: int,
    gain: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Identity: ``gain * eye`` for 2-D shapes; a Dirac kernel for convolution weights.

    For ``(out, in, *kernel)`` shapes the centre tap of channel ``i -> i`` is ``gain``
    (``torch.nn.init.dirac_``), so a same-padded convolution is the identity.
    """
    dev = _device(key, device)
    if len(shape) == 2:
        return gain * torch.eye(*shape, dtype=_dtype(dtype), device=dev)
    if len(shape) < 2:
        raise ValueError(f"identity init needs at least 2 dimensions, got shape {shape}")
    out = torch.zeros(shape, dtype=_dtype(dtype), device=dev)
    n = min(shape[0], shape[1])
    idx = torch.arange(n, device=dev)
    index: tuple[torch.Tensor | int, ...] = (idx, idx, *(k // 2 for k in shape[2:]))
    out[index] = gain
    return out
