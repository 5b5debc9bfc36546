"""Ready-made models built from lux_torch layers (pure layers: ``y, st = model(x, ps, st)``).

- :class:`TransformerLM`: a small Llama-style decoder-only language model (grouped-query
  attention with RoPE and a KV cache, SwiGLU, RMSNorm), and :func:`generate`.
"""

from __future__ import annotations

from .transformer_lm import Generation, TransformerLM, generate

__all__ = ["Generation", "TransformerLM", "generate"]
