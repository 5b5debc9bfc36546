"""ResNets (He et al. 2016) as pure lux layers, named and shaped as torchvision's.

- :class:`ResNet` with :class:`BasicBlock` or :class:`Bottleneck` blocks, and the
  constructors :func:`resnet18`, :func:`resnet34`, :func:`resnet50`, :func:`resnet101`,
  :func:`resnet152` (torchvision's architecture and arguments: ``num_classes``,
  ``zero_init_residual``, ``groups``, ``width_per_group``, ``replace_stride_with_dilation``;
  ResNet v1.5: the stride of a bottleneck is on its 3x3 convolution).
- :func:`resnet20`: the CIFAR-10 ResNet of He et al. 2016, section 4.2 (a 3x3 stem with 16
  channels, no max pooling, three stages of ``n = 3`` basic blocks with 16/32/64 channels).
  Its default shortcut is the paper's *option A* (:class:`PaddedShortcut`: parameter-free,
  subsample and zero-pad the channels; 269,722 parameters, the paper's 0.27M);
  ``shortcut="B"`` uses 1x1 projections as the ImageNet models do.

``lux.state_dict(ps, st)`` of an ImageNet ResNet has exactly the names and shapes of
torchvision's ``state_dict()`` (``conv1.weight``, ``bn1.running_mean``,
``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ``fc.bias``, ...), so
pretrained torchvision weights load directly::

    ps, st = lux.load_state_dict(models.resnet50(),
                                 torchvision.models.resnet50(weights="DEFAULT").state_dict())

Initialisation follows torchvision: convolutions ``kaiming_normal(mode="fan_out",
nonlinearity="relu")``, BatchNorm weights 1 and biases 0 (the last BatchNorm of each block
0 with ``zero_init_residual``), the classifier as ``torch.nn.Linear``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from .. import init
from ..core import Layer, Params, State
from ..layers._common import check_bool, check_int
from ..layers.basic import Linear
from ..layers.containers import Chain
from ..layers.conv import Conv2d
from ..layers.normalization import BatchNorm2d
from ..layers.pooling import AdaptiveAvgPool2d, MaxPool2d

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PaddedShortcut",
    "ResNet",
    "resnet18",
    "resnet20",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]


def kaiming_fan_out(
    key: torch.Tensor,
    *shape: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """torchvision's ResNet convolution initialiser: ``kaiming_normal(mode="fan_out",
    nonlinearity="relu")``, i.e. ``N(0, 2 / (out_channels * kernel size))``."""
    return init.kaiming_normal(
        key, *shape, mode="fan_out", nonlinearity="relu", dtype=dtype, device=device
    )


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> Conv2d:
    """A 3x3 convolution without bias, padded to keep the size (at stride 1)."""
    return Conv2d(
        in_planes,
        out_planes,
        3,
        stride,
        dilation,
        dilation=dilation,
        groups=groups,
        bias=False,
        weight_init=kaiming_fan_out,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> Conv2d:
    """A 1x1 convolution without bias."""
    return Conv2d(in_planes, out_planes, 1, stride, bias=False, weight_init=kaiming_fan_out)


def _relu_bn(features: int) -> BatchNorm2d:
    return BatchNorm2d(features, activation=torch.relu)


class PaddedShortcut(Layer):
    """The parameter-free shortcut of He et al. 2016 (option A): subsample, zero-pad channels.

    ``y = pad(x[:, :, ::stride, ::stride])`` with ``out_channels - in_channels`` zero
    channels appended after the input's.

    Arguments:
        in_channels: channels ``C_in`` of the input.
        out_channels: channels ``C_out >= C_in`` of the output.
        stride: the spatial subsampling factor.

    Input:
        ``(N, C_in, H, W)``.

    Returns:
        ``(N, C_out, ceil(H / stride), ceil(W / stride))`` and the unchanged state.

    **Parameters**
        None (``{}``).

    **States**
        None (``{}``).
    """

    in_channels: int
    out_channels: int
    stride: int = 1

    def __post_init__(self) -> None:
        check_int("PaddedShortcut", "in_channels", self.in_channels, minimum=1)
        check_int("PaddedShortcut", "out_channels", self.out_channels, minimum=self.in_channels)
        check_int("PaddedShortcut", "stride", self.stride, minimum=1)

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(self.describe_input_error(x))
        y = x[:, :, :: self.stride, :: self.stride]
        return F.pad(y, (0, 0, 0, 0, 0, self.out_channels - self.in_channels)), st

    def extra_repr(self) -> str:
        stride = f", stride={self.stride}" if self.stride != 1 else ""
        return f"{self.in_channels} => {self.out_channels}{stride}"

    def describe_input_error(self, x: Any) -> str | None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            return f"expected input of shape (N, C={self.in_channels}, H, W), got {got}"
        return None


class _Block(Layer):
    """What the two residual blocks share: torchvision's constructor arguments, the residual
    branch run in order, the shortcut, the final ReLU and zero-init of the last BatchNorm."""

    expansion: ClassVar[int]
    branch: ClassVar[tuple[str, ...]]  # the residual branch's layers, in call order

    if TYPE_CHECKING:  # fields of the subclasses, declared there after their layers (order)
        conv1: Conv2d
        downsample: Layer | None
        zero_init_residual: bool

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Layer | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        *,
        zero_init_residual: bool = False,
    ) -> None:
        check_bool(type(self).__name__, "zero_init_residual", zero_init_residual)
        self._set_fields(
            **self._branch_layers(inplanes, planes, stride, groups, base_width, dilation),
            downsample=downsample,
            zero_init_residual=zero_init_residual,
        )

    def _branch_layers(
        self, inplanes: int, planes: int, stride: int, groups: int, base_width: int, dilation: int
    ) -> dict[str, Layer]:
        raise NotImplementedError

    def init_params(self, key: torch.Tensor) -> Params:
        ps = super().init_params(key)
        if self.zero_init_residual:
            last = self.branch[-1]
            ps[last] = {**ps[last], "weight": torch.zeros_like(ps[last]["weight"])}
        return ps

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        new_st = dict(st)
        out = x
        for name in self.branch:
            out, new_st[name] = getattr(self, name)(out, ps[name], st[name])
        if self.downsample is None:
            identity = x
        else:
            identity, new_st["downsample"] = self.downsample(x, ps["downsample"], st["downsample"])
        return torch.relu(out + identity), new_st

    def extra_repr(self) -> str:
        last: BatchNorm2d = getattr(self, self.branch[-1])
        strided = [
            c for c in self.children().values() if isinstance(c, Conv2d) and c.stride != (1, 1)
        ]
        parts = [f"{self.conv1.in_channels} => {last.num_features}"]
        if strided and strided[0] is not getattr(self, "downsample", None):
            parts.append(f"stride={strided[0].stride[0]}")  # type: ignore[index]
        if self.zero_init_residual:
            parts.append("zero_init_residual=True")
        return ", ".join(parts)


class BasicBlock(_Block):
    """Two 3x3 convolutions with BatchNorm and a shortcut (torchvision's ``BasicBlock``).

    ``y = relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))``; ``downsample`` is the
    identity when ``None``.

    Arguments:
        inplanes: input channels.
        planes: output channels (``expansion = 1``).
        stride: the stride of ``conv1``.
        downsample: the shortcut layer (e.g. ``Chain({"0": conv1x1, "1": BatchNorm2d})`` or a
            :class:`PaddedShortcut`); ``None``: identity.
        groups, base_width: must be 1 and 64 (as torchvision).
        dilation: must be 1 (as torchvision).
        zero_init_residual: initialise ``bn2.weight`` to zeros (the block starts as the
            identity map; Goyal et al. 2017).

    Input:
        ``(N, inplanes, H, W)``.

    Returns:
        ``(N, planes, H', W')`` (``H' = ceil(H / stride)``) and the new state.

    **Parameters**
        - ``conv1.weight (planes, inplanes, 3, 3)``, ``conv2.weight (planes, planes, 3, 3)``
        - ``bn1``, ``bn2``: ``{"weight": (planes,), "bias": (planes,)}``
        - ``downsample``: the shortcut's parameters (absent without a shortcut layer)

    **States**
        - ``bn1``, ``bn2``: ``running_mean (planes,)``, ``running_var (planes,)``,
          ``num_batches_tracked ()`` (int64) and the ``training`` flag
        - ``downsample``: the shortcut's state
    """

    expansion = 1
    branch = ("conv1", "bn1", "conv2", "bn2")

    conv1: Conv2d
    bn1: BatchNorm2d
    conv2: Conv2d
    bn2: BatchNorm2d
    downsample: Layer | None
    zero_init_residual: bool

    __init__ = _Block.__init__  # torchvision's arguments (not the dataclass's fields)

    def _branch_layers(
        self, inplanes: int, planes: int, stride: int, groups: int, base_width: int, dilation: int
    ) -> dict[str, Layer]:
        if groups != 1 or base_width != 64:
            raise ValueError(
                f"BasicBlock: only groups=1 and base_width=64 are supported (as torchvision), "
                f"got groups={groups}, base_width={base_width}"
            )
        if dilation != 1:
            raise ValueError(
                f"BasicBlock: only dilation=1 is supported (as torchvision), got {dilation}"
            )
        return {
            "conv1": conv3x3(inplanes, planes, stride),
            "bn1": _relu_bn(planes),
            "conv2": conv3x3(planes, planes),
            "bn2": BatchNorm2d(planes),
        }


class Bottleneck(_Block):
    """1x1, 3x3 (strided, grouped) and 1x1 convolutions with a shortcut (torchvision's).

    ``y = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + downsample(x))`` with
    ``width = int(planes * base_width / 64) * groups`` channels inside and
    ``planes * 4`` out (ResNet v1.5: the stride is on ``conv2``).

    Arguments:
        inplanes: input channels.
        planes: ``planes * expansion`` (``expansion = 4``) output channels.
        stride: the stride of ``conv2``.
        downsample: the shortcut layer; ``None``: identity.
        groups: groups of ``conv2`` (ResNeXt's cardinality).
        base_width: width per group (64: plain ResNet).
        dilation: dilation (and padding) of ``conv2``.
        zero_init_residual: initialise ``bn3.weight`` to zeros.

    Input:
        ``(N, inplanes, H, W)``.

    Returns:
        ``(N, 4 * planes, H', W')`` and the new state.

    **Parameters**
        - ``conv1.weight (width, inplanes, 1, 1)``, ``conv2.weight (width, width // groups, 3, 3)``,
          ``conv3.weight (4 * planes, width, 1, 1)``
        - ``bn1``, ``bn2``: ``weight``, ``bias`` of shape ``(width,)``; ``bn3``: ``(4 * planes,)``
        - ``downsample``: the shortcut's parameters (absent without a shortcut layer)

    **States**
        - ``bn1``, ``bn2``, ``bn3``: ``running_mean``, ``running_var`` (their channels),
          ``num_batches_tracked ()`` and the ``training`` flag
        - ``downsample``: the shortcut's state
    """

    expansion = 4
    branch = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")

    conv1: Conv2d
    bn1: BatchNorm2d
    conv2: Conv2d
    bn2: BatchNorm2d
    conv3: Conv2d
    bn3: BatchNorm2d
    downsample: Layer | None
    zero_init_residual: bool

    __init__ = _Block.__init__  # torchvision's arguments (not the dataclass's fields)

    def _branch_layers(
        self, inplanes: int, planes: int, stride: int, groups: int, base_width: int, dilation: int
    ) -> dict[str, Layer]:
        check_int("Bottleneck", "base_width", base_width, minimum=1)
        check_int("Bottleneck", "groups", groups, minimum=1)
        width = int(planes * (base_width / 64.0)) * groups
        return {
            "conv1": conv1x1(inplanes, width),
            "bn1": _relu_bn(width),
            "conv2": conv3x3(width, width, stride, groups, dilation),
            "bn2": _relu_bn(width),
            "conv3": conv1x1(width, planes * self.expansion),
            "bn3": BatchNorm2d(planes * self.expansion),
        }


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(Layer):
    """A residual network: stem, stages of residual blocks, global average pool, linear head.

    ``ResNet(block, layers, ...)`` takes torchvision's arguments and builds torchvision's
    layout: ``conv1`` (7x7, stride 2, 64 channels), ``bn1`` (with ReLU), ``maxpool``
    (3x3, stride 2), stages ``layer1`` ... ``layer4`` of ``layers[i]`` blocks with
    64/128/256/512 ``planes`` (stride 2 from the second stage on), ``avgpool`` and ``fc``.
    ``stem="cifar"`` (with ``widths``) gives the CIFAR layout of He et al. 2016: a 3x3
    stride-1 ``conv1`` with ``widths[0]`` channels and no max pooling.

    Arguments:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: the number of blocks per stage (e.g. ``[2, 2, 2, 2]`` for ResNet-18).
        num_classes: outputs of ``fc``.
        zero_init_residual: zero-initialise the last BatchNorm weight of every block.
        groups, width_per_group: grouped bottlenecks (ResNeXt; torchvision's arguments).
        replace_stride_with_dilation: per stage after the first, replace the stride 2 by a
            dilation (torchvision's argument; bottleneck blocks only).
        widths: the ``planes`` of each stage (default ``(64, 128, 256, 512)``).
        in_channels: input channels (3).
        stem: ``"imagenet"`` or ``"cifar"`` (see above).
        shortcut: ``"B"``: 1x1 convolution + BatchNorm where the shape changes (torchvision);
            ``"A"``: :class:`PaddedShortcut` (parameter-free).

    Input:
        Images ``(N, in_channels, H, W)``.

    Returns:
        Logits ``(N, num_classes)`` and the new state.

    **Parameters**
        - ``conv1.weight (widths[0], in_channels, k, k)`` (``k = 7``, or 3 for the CIFAR stem)
        - ``bn1``: ``{"weight", "bias"}`` of shape ``(widths[0],)``
        - ``layer1`` ... ``layer{len(layers)}``: ``{"0": block params, "1": ...}`` (see
          :class:`BasicBlock`, :class:`Bottleneck`; a stage's first block may have
          ``downsample = {"0": {"weight"}, "1": {"weight", "bias"}}``)
        - ``fc``: ``{"weight": (num_classes, widths[-1] * expansion), "bias": (num_classes,)}``

    **States**
        Every BatchNorm's ``running_mean``, ``running_var``, ``num_batches_tracked`` and
        ``training`` flag, under the same names; ``{}`` for the other layers.

    Example:
        >>> model = resnet18(num_classes=10)  # doctest: +SKIP
        >>> ps, st = lux.setup(0, model)  # doctest: +SKIP
        >>> logits, st = model(torch.randn(2, 3, 64, 64), ps, st)  # doctest: +SKIP
    """

    block: Block
    layers: tuple[int, ...]
    num_classes: int
    stem: str
    shortcut: str
    conv1: Conv2d
    bn1: BatchNorm2d
    maxpool: MaxPool2d | None
    stages: dict[str, Chain]
    avgpool: AdaptiveAvgPool2d
    fc: Linear

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Sequence[bool] | None = None,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 3,
        stem: str = "imagenet",
        shortcut: str = "B",
    ) -> None:
        owner = "ResNet"
        if block not in (BasicBlock, Bottleneck):
            raise TypeError(f"{owner}: block must be BasicBlock or Bottleneck, got {block!r}")
        layers = tuple(layers)
        widths = tuple(widths)
        if not layers or len(layers) != len(widths):
            raise ValueError(
                f"{owner}: layers and widths need one entry per stage, got layers={layers} "
                f"and widths={widths}"
            )
        for n in (*layers, *widths):
            check_int(owner, "layers/widths entries", n, minimum=1)
        check_int(owner, "num_classes", num_classes, minimum=1)
        check_int(owner, "in_channels", in_channels, minimum=1)
        check_bool(owner, "zero_init_residual", zero_init_residual)
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"{owner}: stem must be 'imagenet' or 'cifar', got {stem!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"{owner}: shortcut must be 'A' or 'B', got {shortcut!r}")
        dilate = (
            (False,) * (len(layers) - 1)
            if replace_stride_with_dilation is None
            else tuple(replace_stride_with_dilation)
        )
        if len(dilate) != len(layers) - 1:
            raise ValueError(
                f"{owner}: replace_stride_with_dilation needs {len(layers) - 1} entries (one per "
                f"stage after the first), got {dilate}"
            )
        builder = _StageBuilder(
            block, widths[0], groups, width_per_group, zero_init_residual, shortcut
        )
        stages = {
            f"layer{i}": builder.stage(width, n, 1 if i == 1 else 2, i > 1 and dilate[i - 2])
            for i, (width, n) in enumerate(zip(widths, layers, strict=True), 1)
        }
        imagenet = stem == "imagenet"
        self._set_fields(
            block=block,
            layers=layers,
            num_classes=num_classes,
            stem=stem,
            shortcut=shortcut,
            conv1=Conv2d(
                in_channels,
                widths[0],
                7 if imagenet else 3,
                2 if imagenet else 1,
                3 if imagenet else 1,
                bias=False,
                weight_init=kaiming_fan_out,
            ),
            bn1=_relu_bn(widths[0]),
            maxpool=MaxPool2d(3, 2, 1) if imagenet else None,
            stages=stages,
            avgpool=AdaptiveAvgPool2d((1, 1)),
            fc=Linear(widths[-1] * block.expansion, num_classes),
        )

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        new_st = dict(st)
        x, new_st["conv1"] = self.conv1(x, ps["conv1"], st["conv1"])
        x, new_st["bn1"] = self.bn1(x, ps["bn1"], st["bn1"])
        if self.maxpool is not None:
            x, new_st["maxpool"] = self.maxpool(x, ps["maxpool"], st["maxpool"])
        for name, stage in self.stages.items():
            x, new_st[name] = stage(x, ps[name], st[name])
        x, new_st["avgpool"] = self.avgpool(x, ps["avgpool"], st["avgpool"])
        x, new_st["fc"] = self.fc(torch.flatten(x, 1), ps["fc"], st["fc"])
        return x, new_st

    def extra_repr(self) -> str:
        parts = [self.block.__name__, str(list(self.layers)), f"num_classes={self.num_classes}"]
        if self.stem != "imagenet":
            parts.append(f"stem={self.stem!r}")
        if self.shortcut != "B":
            parts.append(f"shortcut={self.shortcut!r}")
        return ", ".join(parts)


class _StageBuilder:
    """torchvision's ``_make_layer``: tracks the channels and dilation between stages."""

    def __init__(
        self,
        block: Block,
        inplanes: int,
        groups: int,
        base_width: int,
        zero_init: bool,
        shortcut: str,
    ) -> None:
        self.block, self.inplanes, self.dilation = block, inplanes, 1
        self.groups, self.base_width, self.zero_init = groups, base_width, zero_init
        self.shortcut = shortcut

    def stage(self, planes: int, blocks: int, stride: int, dilate: bool) -> Chain:
        block, out = self.block, planes * self.block.expansion
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample: Layer | None = None
        if stride != 1 or self.inplanes != out:
            if self.shortcut == "A":
                downsample = PaddedShortcut(self.inplanes, out, stride)
            else:
                downsample = Chain(
                    {"0": conv1x1(self.inplanes, out, stride), "1": BatchNorm2d(out)}
                )
        options: dict[str, Any] = {
            "groups": self.groups,
            "base_width": self.base_width,
            "zero_init_residual": self.zero_init,
        }
        first = block(
            self.inplanes, planes, stride, downsample, dilation=previous_dilation, **options
        )
        self.inplanes = out
        rest = block(out, planes, dilation=self.dilation, **options)
        return Chain({"0": first, **{str(i): rest for i in range(1, blocks)}})


def _imagenet(block: Block, layers: list[int], kwargs: dict[str, Any]) -> ResNet:
    return ResNet(block, layers, **kwargs)


def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (:class:`BasicBlock`, ``[2, 2, 2, 2]``; 11.7M parameters at 1000 classes).

    Keyword arguments go to :class:`ResNet` (``num_classes``, ``zero_init_residual``, ...).
    Pretrained torchvision weights:
    ``lux.load_state_dict(resnet18(),
    torchvision.models.resnet18(weights="DEFAULT").state_dict())``.
    """
    return _imagenet(BasicBlock, [2, 2, 2, 2], kwargs)


def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (:class:`BasicBlock`, ``[3, 4, 6, 3]``; 21.8M parameters); as :func:`resnet18`."""
    return _imagenet(BasicBlock, [3, 4, 6, 3], kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (:class:`Bottleneck`, ``[3, 4, 6, 3]``; 25.6M parameters); as :func:`resnet18`."""
    return _imagenet(Bottleneck, [3, 4, 6, 3], kwargs)


def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101 (:class:`Bottleneck`, ``[3, 4, 23, 3]``; 44.5M parameters).

    As :func:`resnet18`.
    """
    return _imagenet(Bottleneck, [3, 4, 23, 3], kwargs)


def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152 (:class:`Bottleneck`, ``[3, 8, 36, 3]``; 60.2M parameters).

    As :func:`resnet18`.
    """
    return _imagenet(Bottleneck, [3, 8, 36, 3], kwargs)


def resnet20(num_classes: int = 10, *, shortcut: str = "A", **kwargs: Any) -> ResNet:
    """The CIFAR-10 ResNet-20 of He et al. 2016, section 4.2 (no torchvision counterpart).

    A 3x3 ``conv1`` with 16 channels (stride 1, no max pooling), three stages ``layer1`` ..
    ``layer3`` of three :class:`BasicBlock` s with 16/32/64 channels (stride 2 at the
    start of the second and third), global average pooling and ``fc``. Shortcuts are the
    paper's option A by default (:class:`PaddedShortcut`, no parameters: 269,722 parameters
    for 10 classes, the paper's 0.27M); ``shortcut="B"`` uses 1x1 convolution +
    BatchNorm projections instead (272,474).

    Arguments:
        num_classes: outputs of ``fc`` (10).
        shortcut: ``"A"`` or ``"B"``.
        **kwargs: further :class:`ResNet` arguments (``zero_init_residual``, ``in_channels``).
    """
    return ResNet(
        BasicBlock,
        [3, 3, 3],
        num_classes,
        widths=(16, 32, 64),
        stem="cifar",
        shortcut=shortcut,
        **kwargs,
    )
