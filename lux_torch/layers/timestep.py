"""``SinusoidalTimeEmbedding``: the sinusoidal features of a diffusion time step.

DDPM (Ho et al. 2020) conditions its UNet on the time step ``t`` through the transformer's
sinusoidal position features, computed for one scalar per sample. The options are those of
diffusers' ``get_timestep_embedding`` (its ``Timesteps`` module), so that a model built in
that layout computes the same features.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..core import Layer, Params, State, describe_value
from ._common import check_bool, check_int

__all__ = ["SinusoidalTimeEmbedding"]


def _positive(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{owner}: {name} must be a positive number, got {value!r}")
    return float(value)


class SinusoidalTimeEmbedding(Layer):
    """Sinusoidal features of time steps: ``(N,) -> (N, dim)`` (diffusers' ``Timesteps``).

    With ``half = dim // 2`` and frequencies
    ``f_i = exp(-log(max_period) * i / (half - downscale_freq_shift))``, ``i < half``:
    ``y[n] = [sin(scale * t[n] * f), cos(scale * t[n] * f)]`` (cosines first when
    ``flip_sin_to_cos``), plus a zero column when ``dim`` is odd.

    Arguments:
        dim: the number of features (>= 2).
        max_period: the longest wavelength's scale (10000, as the transformer).
        flip_sin_to_cos: put the cosines first (diffusers' ``UNet2DModel`` default).
        downscale_freq_shift: the ``shift`` in the exponent's denominator (0 in
            ``UNet2DModel``, 1 in the original DDPM code and diffusers' default).
        scale: multiplies the angles.

    Input:
        ``t`` of shape ``(N,)``: time steps, integer or floating (not necessarily integral).

    Returns:
        ``(N, dim)`` features in ``t``'s dtype when floating, else in the default dtype;
        and the unchanged (empty) state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).

    Example:
        >>> emb = SinusoidalTimeEmbedding(8)
        >>> emb(torch.tensor([0, 10, 999]), {}, {})[0].shape
        torch.Size([3, 8])
    """

    dim: int
    max_period: float = 10000.0
    flip_sin_to_cos: bool = True
    downscale_freq_shift: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        owner = "SinusoidalTimeEmbedding"
        check_int(owner, "dim", self.dim, 2)
        check_bool(owner, "flip_sin_to_cos", self.flip_sin_to_cos)
        shift = self.downscale_freq_shift
        if isinstance(shift, bool) or not isinstance(shift, (int, float)):
            raise TypeError(f"{owner}: downscale_freq_shift must be a number, got {shift!r}")
        if not shift < self.dim // 2:  # the denominator half - shift must stay positive
            raise ValueError(
                f"{owner}: downscale_freq_shift must be < dim // 2 = {self.dim // 2}, got {shift}"
            )
        self._set_fields(
            max_period=_positive(owner, "max_period", self.max_period),
            downscale_freq_shift=float(shift),
            scale=_positive(owner, "scale", self.scale),
        )

    def __call__(self, t: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = self.describe_input_error(t)
        if problem is not None:
            raise ValueError(f"SinusoidalTimeEmbedding: {problem}")
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
        half = self.dim // 2
        exponent = -math.log(self.max_period) * torch.arange(half, dtype=dtype, device=t.device)
        exponent = exponent / (half - self.downscale_freq_shift)
        angles = self.scale * (t.to(dtype)[:, None] * torch.exp(exponent)[None, :])
        first, second = torch.sin(angles), torch.cos(angles)
        if self.flip_sin_to_cos:
            first, second = second, first
        y = torch.cat([first, second], dim=-1)
        return (F.pad(y, (0, 1)) if self.dim % 2 else y), st

    def describe_input_error(self, x: Any) -> str | None:
        if not isinstance(x, torch.Tensor) or x.dim() != 1 or x.dtype == torch.bool:
            return f"expected time steps of shape (N,), got {describe_value(x)}"
        return None

    def extra_repr(self) -> str:
        parts = [str(self.dim)]
        for name, default in (
            ("max_period", 10000.0),
            ("flip_sin_to_cos", True),
            ("downscale_freq_shift", 0.0),
            ("scale", 1.0),
        ):
            if getattr(self, name) != default:
                parts.append(f"{name}={getattr(self, name)!r}")
        return ", ".join(parts)
