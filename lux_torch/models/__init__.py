"""Ready-made models built from lux_torch layers (pure layers: ``y, st = model(x, ps, st)``).

- :class:`TransformerLM`: a small Llama-style decoder-only language model (grouped-query
  attention with RoPE and a KV cache, SwiGLU, RMSNorm), and :func:`generate`.
- :class:`VGG` and ``vgg11``/``vgg13``/``vgg16``/``vgg19`` (and ``_bn``): torchvision's
  layout, so ``lux.load_state_dict(vgg16(), torchvision_vgg16.state_dict())`` loads.
- :class:`VisionTransformer` (alias ``ViT``), ``vit_b_16``/``vit_b_32``/``vit_l_16``/
  ``vit_l_32``/``vit_h_14`` (torchvision's layout) and the DeiT-sized ``vit_tiny``/``vit_small``;
  ``interpolate_embeddings`` resizes a ViT state dict's position embedding for another image
  size.
- :class:`ConvMixer` (the paper's ``nn.Sequential`` layout) and ``convmixer_cifar10``/
  ``convmixer_1536_20``/``convmixer_768_32``.
- :class:`UNet`: a diffusion UNet in diffusers' ``UNet2DModel`` layout; ``unet_ddpm_cifar10``.
- :class:`ResNet` (:func:`resnet18` ... :func:`resnet152`, torchvision's names and shapes,
  so torchvision's weights load with ``lux.load_state_dict``) and the CIFAR
  :func:`resnet20`.
- :class:`MLP`: a multi-layer perceptron in torchvision's ``ops.MLP`` layout.
"""

from __future__ import annotations

from .convmixer import ConvMixer, convmixer_768_32, convmixer_1536_20, convmixer_cifar10
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
from .unet import UNet, unet_ddpm_cifar10
from .vgg import (
    VGG,
    VGG_CONFIGS,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
)
from .vit import (
    VisionTransformer,
    ViT,
    ViTEncoder,
    ViTEncoderBlock,
    ViTOptions,
    interpolate_embeddings,
    vit_b_16,
    vit_b_32,
    vit_h_14,
    vit_l_16,
    vit_l_32,
    vit_small,
    vit_tiny,
)

__all__ = [
    "MLP",
    "VGG",
    "VGG_CONFIGS",
    "BasicBlock",
    "Bottleneck",
    "ConvMixer",
    "Generation",
    "PaddedShortcut",
    "ResNet",
    "TransformerLM",
    "UNet",
    "ViT",
    "ViTEncoder",
    "ViTEncoderBlock",
    "ViTOptions",
    "VisionTransformer",
    "convmixer_768_32",
    "convmixer_1536_20",
    "convmixer_cifar10",
    "generate",
    "interpolate_embeddings",
    "resnet18",
    "resnet20",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "unet_ddpm_cifar10",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "vit_b_16",
    "vit_b_32",
    "vit_h_14",
    "vit_l_16",
    "vit_l_32",
    "vit_small",
    "vit_tiny",
]
