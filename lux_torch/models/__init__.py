"""Ready-made models built from lux_torch layers (pure layers: ``y, st = model(x, ps, st)``).

- :class:`TransformerLM`: a small Llama-style decoder-only language model (grouped-query
  attention with RoPE and a KV cache, SwiGLU, RMSNorm), and :func:`generate`.
"""

from __future__ import annotations

from .convmixer import ConvMixer, convmixer_768_32, convmixer_1536_20, convmixer_cifar10
from .transformer_lm import Generation, TransformerLM, generate
from .unet import UNet, unet_ddpm_cifar10

__all__ = [
    "ConvMixer",
    "Generation",
    "TransformerLM",
    "UNet",
    "convmixer_768_32",
    "convmixer_1536_20",
    "convmixer_cifar10",
    "generate",
    "unet_ddpm_cifar10",
]
