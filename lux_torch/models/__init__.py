"""Ready-made models built from lux_torch layers (pure layers: ``y, st = model(x, ps, st)``).

- :class:`TransformerLM`: a small Llama-style decoder-only language model (grouped-query
  attention with RoPE and a KV cache, SwiGLU, RMSNorm), and :func:`generate`.
- :class:`ResNet` (:func:`resnet18` ... :func:`resnet152`, torchvision's names and shapes,
  so torchvision's weights load with ``lux.load_state_dict``) and the CIFAR
  :func:`resnet20`.
- :class:`MLP`: a multi-layer perceptron in torchvision's ``ops.MLP`` layout.
"""

from __future__ import annotations

from .mlp import MLP
from .resnet import (
    BasicBlock,
    Bottleneck,
    PaddedShortcut,
    ResNet,
    resnet18,
    resnet20,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from .transformer_lm import Generation, TransformerLM, generate

__all__ = [
    "MLP",
    "BasicBlock",
    "Bottleneck",
    "Generation",
    "PaddedShortcut",
    "ResNet",
    "TransformerLM",
    "generate",
    "resnet18",
    "resnet20",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]
