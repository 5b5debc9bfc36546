"""ConvMixer (Trockman & Kolter, "Patches Are All You Need?", TMLR 2023, arXiv:2201.09792).

A patch embedding (a convolution with ``kernel_size = stride = patch_size``), then ``depth``
blocks that mix space (a depthwise ``kernel_size`` convolution, in a residual) and channels
(a pointwise convolution), each followed by the activation and a BatchNorm; then global
average pooling and a linear classifier. The layout is the paper's ``nn.Sequential`` (its
appendix code), so flattened ``ps``/``st`` names are that module's ``state_dict`` names
(``0.weight``, ``2.running_mean``, ``3.0.fn.0.weight``, ``3.1.weight``, ...,
``{depth + 5}.bias``) and its weights load with :func:`lux_torch.load_state_dict`.
"""

from __future__ import annotations

from ..core import Layer
from ..layers._common import check_int
from ..layers.activation import GELU, ReLU
from ..layers.basic import Flatten, Linear
from ..layers.containers import Chain, LayerLike, as_layer
from ..layers.conv import Conv2d
from ..layers.normalization import BatchNorm2d
from ..layers.pooling import AdaptiveAvgPool2d
from ..layers.residual import Residual

__all__ = ["ConvMixer", "convmixer_768_32", "convmixer_1536_20", "convmixer_cifar10"]


def _numbered(*layers: Layer) -> dict[str, Layer]:
    """``{"0": layers[0], "1": layers[1], ...}``: ``nn.Sequential``'s child names."""
    return {str(i): layer for i, layer in enumerate(layers)}


class ConvMixer(Chain):
    """ConvMixer-``dim``/``depth`` (Trockman & Kolter 2022), the paper's ``nn.Sequential``.

    ::

        0 Conv2d(in_channels => dim, patch_size, stride=patch_size), 1 activation, 2 BatchNorm2d
        3 .. depth+2: Chain(0 Residual(fn = Chain(0 Conv2d(dim => dim, kernel_size,
                                                       groups=dim, padding="same"),
                                                  1 activation, 2 BatchNorm2d)),
                            1 Conv2d(dim => dim, 1), 2 activation, 3 BatchNorm2d)
        depth+3 AdaptiveAvgPool2d(1), depth+4 Flatten(), depth+5 Linear(dim => num_classes)

    Arguments:
        dim: the channels ``C`` of every block (the "hidden dimension").
        depth: the number of ConvMixer blocks (>= 1).
        kernel_size: the depthwise convolutions' kernel size (odd or even: ``"same"``
            padding puts the extra row/column after, as torch).
        patch_size: the patch embedding's kernel size and stride.
        num_classes: the classifier's outputs ``K``.
        activation: a layer or plain function applied after every convolution (default
            :class:`~lux_torch.layers.activation.GELU`, the exact erf form, as the paper's
            ``nn.GELU()``; the paper's ConvMixer-768/32 uses ``ReLU()``).
        in_channels: the input's channels (3 in the paper).

    Input:
        ``x`` of shape ``(N, in_channels, H, W)`` with ``H, W >= patch_size``; the patch
        embedding drops the last ``H % patch_size`` rows (and columns), as the paper's code.

    Returns:
        Logits ``(N, num_classes)`` and the new state (updated BatchNorm statistics in
        training mode).

    **Parameters** (``P = patch_size``, ``k = kernel_size``, ``i = 3 .. depth + 2``)
        - ``0``: ``{"weight": (C, in_channels, P, P), "bias": (C,)}``
        - ``2``: ``{"weight": (C,), "bias": (C,)}`` (BatchNorm)
        - ``i.0.fn.0``: ``{"weight": (C, 1, k, k), "bias": (C,)}`` (depthwise)
        - ``i.0.fn.2``, ``i.3``: BatchNorm ``{"weight": (C,), "bias": (C,)}``
        - ``i.1``: ``{"weight": (C, C, 1, 1), "bias": (C,)}`` (pointwise)
        - ``{depth + 5}``: ``{"weight": (K, C), "bias": (K,)}``
        - the activations, pooling and flatten: ``{}``

    **States**
        Every BatchNorm (``2``, ``i.0.fn.2``, ``i.3``): ``running_mean (C,)``,
        ``running_var (C,)``, ``num_batches_tracked ()`` (int64) and the ``training`` flag;
        ``{}`` for the other children.

    Pretrained weights of the paper's torch module (``model.state_dict()``, or a checkpoint
    saved from it) load by name::

        ps, st = lux.load_state_dict(ConvMixer(1536, 20), torch_convmixer.state_dict())

    Example:
        >>> model = ConvMixer(32, 2, kernel_size=3, patch_size=2, num_classes=10)
        >>> ps, st = lux_torch.setup(0, model)  # doctest: +SKIP
        >>> logits, st = model(torch.randn(4, 3, 16, 16), ps, st)  # doctest: +SKIP
    """

    dim: int
    depth: int
    kernel_size: int
    patch_size: int
    num_classes: int
    in_channels: int

    def __init__(
        self,
        dim: int,
        depth: int,
        kernel_size: int = 9,
        patch_size: int = 7,
        num_classes: int = 1000,
        activation: LayerLike | None = None,
        in_channels: int = 3,
    ) -> None:
        owner = "ConvMixer"
        sizes = {"dim": dim, "depth": depth, "kernel_size": kernel_size}
        sizes |= {"patch_size": patch_size, "num_classes": num_classes, "in_channels": in_channels}
        for name, value in sizes.items():
            check_int(owner, name, value, 1)
        act = GELU() if activation is None else as_layer(owner, "activation", activation)

        def block() -> Chain:
            depthwise = Conv2d(dim, dim, kernel_size, groups=dim, padding="same")
            mix_space = Residual(Chain(_numbered(depthwise, act, BatchNorm2d(dim))))
            return Chain(_numbered(mix_space, Conv2d(dim, dim, 1), act, BatchNorm2d(dim)))

        layers = _numbered(
            Conv2d(in_channels, dim, patch_size, stride=patch_size),
            act,
            BatchNorm2d(dim),
            *(block() for _ in range(depth)),
            AdaptiveAvgPool2d((1, 1)),
            Flatten(),
            Linear(dim, num_classes),
        )
        self._set_fields(
            layers=layers,
            dim=dim,
            depth=depth,
            kernel_size=kernel_size,
            patch_size=patch_size,
            num_classes=num_classes,
            in_channels=in_channels,
        )

    def extra_repr(self) -> str:
        parts = [f"dim={self.dim}", f"depth={self.depth}", f"kernel_size={self.kernel_size}"]
        parts += [f"patch_size={self.patch_size}", f"num_classes={self.num_classes}"]
        if self.in_channels != 3:
            parts.append(f"in_channels={self.in_channels}")
        return ", ".join(parts)


def convmixer_cifar10(num_classes: int = 10) -> ConvMixer:
    """ConvMixer-256/8 with kernel 5 and patch 2: the CIFAR-10 model of Lux.jl's ConvMixer
    tutorial (``ConvMixer(256, 8, kernel_size=5, patch_size=2, num_classes=10)``, GELU).

    Arguments:
        num_classes: the classifier's outputs.

    Returns:
        The :class:`ConvMixer` (0.59 M parameters with 10 classes).
    """
    return ConvMixer(256, 8, kernel_size=5, patch_size=2, num_classes=num_classes)


def convmixer_1536_20(num_classes: int = 1000) -> ConvMixer:
    """ConvMixer-1536/20 of the paper (kernel 9, patch 7, GELU; 51.6 M parameters).

    Arguments:
        num_classes: the classifier's outputs.

    Returns:
        The :class:`ConvMixer`.
    """
    return ConvMixer(1536, 20, kernel_size=9, patch_size=7, num_classes=num_classes)


def convmixer_768_32(num_classes: int = 1000) -> ConvMixer:
    """ConvMixer-768/32 of the paper (kernel 7, patch 7, ReLU; 21.1 M parameters).

    Arguments:
        num_classes: the classifier's outputs.

    Returns:
        The :class:`ConvMixer`.
    """
    return ConvMixer(
        768, 32, kernel_size=7, patch_size=7, num_classes=num_classes, activation=ReLU()
    )
