"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition") with torchvision's layout: ``lux.state_dict(ps, st)`` has the keys and shapes
of ``torchvision.models.vgg*().state_dict()``, so torchvision's weights load directly::

    tv = torchvision.models.vgg16(weights="DEFAULT")
    ps, st = lux.load_state_dict(models.vgg16(), tv.state_dict())

``VGG`` builds any configuration; ``vgg11``/``vgg13``/``vgg16``/``vgg19`` and their ``_bn``
variants are torchvision's configurations "A", "B", "D" and "E".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import init
from ..core import Layer, Params, State
from ..layers._common import check_bool, check_int, describe_value
from ..layers.activation import ReLU
from ..layers.basic import Linear
from ..layers.containers import Chain
from ..layers.conv import Conv2d
from ..layers.dropout import Dropout
from ..layers.normalization import BatchNorm2d
from ..layers.pooling import AdaptiveAvgPool2d, MaxPool2d

__all__ = [
    "VGG",
    "VGG_CONFIGS",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

#: torchvision's ``cfgs``: output channels of each 3x3 convolution, ``"M"`` for a 2x2 max pool.
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}


# torchvision's initialisation (VGG(init_weights=True)), named for the printout


def vgg_conv_init(
    key: torch.Tensor,
    *shape: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Kaiming normal with ``mode="fan_out"`` and the ReLU gain (VGG's convolutions)."""
    return init.kaiming_normal(
        key, *shape, mode="fan_out", nonlinearity="relu", dtype=dtype, device=device
    )


def vgg_linear_init(
    key: torch.Tensor,
    *shape: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``N(0, 0.01)`` (VGG's linear layers)."""
    return init.normal(key, *shape, std=0.01, dtype=dtype, device=device)


def _config(cfg: Any) -> tuple[int | str, ...]:
    """The configuration as a tuple, checked: a name of :data:`VGG_CONFIGS` or a sequence
    of channel counts (ints >= 1) and ``"M"``, with at least one convolution."""
    if isinstance(cfg, str):
        if cfg not in VGG_CONFIGS:
            raise ValueError(
                f"VGG: cfg must be one of {sorted(VGG_CONFIGS)} or a sequence of channel "
                f"counts and 'M', got {cfg!r}"
            )
        return VGG_CONFIGS[cfg]
    if not isinstance(cfg, Sequence):
        raise TypeError(f"VGG: cfg must be a configuration name or a sequence, got {cfg!r}")
    for v in cfg:
        if v != "M" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"VGG: cfg entries must be ints >= 1 or 'M', got {v!r} in {cfg!r}")
    if not any(v != "M" for v in cfg):
        raise ValueError(f"VGG: cfg needs at least one convolution, got {cfg!r}")
    return tuple(cfg)


def _features(cfg: tuple[int | str, ...], batch_norm: bool, in_channels: int) -> Chain:
    """torchvision's ``make_layers``: children named ``"0"``, ``"1"``, ... as in its
    ``nn.Sequential``."""
    layers: list[Layer] = []
    channels = in_channels
    for v in cfg:
        if v == "M":
            layers.append(MaxPool2d(2, stride=2))
            continue
        assert isinstance(v, int)
        layers.append(
            Conv2d(channels, v, 3, padding=1, weight_init=vgg_conv_init, bias_init=init.zeros)
        )
        if batch_norm:
            layers.append(BatchNorm2d(v))
        layers.append(ReLU())
        channels = v
    return Chain({str(i): layer for i, layer in enumerate(layers)})


def _classifier(in_features: int, hidden: int, num_classes: int, dropout: float) -> Chain:
    """``Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear`` named ``"0"`` ... ``"6"``."""

    def linear(i: int, o: int) -> Linear:
        return Linear(i, o, weight_init=vgg_linear_init, bias_init=init.zeros)

    layers = (
        linear(in_features, hidden),
        ReLU(),
        Dropout(dropout),
        linear(hidden, hidden),
        ReLU(),
        Dropout(dropout),
        linear(hidden, num_classes),
    )
    return Chain({str(i): layer for i, layer in enumerate(layers)})


class VGG(Layer):
    """VGG: ``classifier(flatten(avgpool(features(x))))`` with torchvision's names.

    Arguments:
        cfg: the convolutional part: a name of :data:`VGG_CONFIGS` (``"A"``, ``"B"``,
            ``"D"``, ``"E"``) or a sequence of output channel counts (a 3x3 convolution with
            padding 1, then the ReLU) and ``"M"`` (a 2x2 max pool with stride 2).
        batch_norm: a ``BatchNorm2d`` between each convolution and its ReLU (the ``_bn``
            models).
        num_classes: outputs of the last linear layer.
        dropout: drop probability of the classifier's two ``Dropout`` layers (training mode;
            the masks come from their keys in ``st``).
        in_channels: input channels (3 in torchvision).
        hidden_features: width of the classifier's two hidden layers (4096 in torchvision).
        pool_size: output size of the adaptive average pool (7 in torchvision); the
            classifier's input has ``last channels * pool_size**2`` features.

    The initialisation is torchvision's: convolutions Kaiming-normal (``fan_out``, ReLU
    gain) with zero bias, BatchNorm weight 1 and bias 0, linear layers ``N(0, 0.01)`` with
    zero bias.

    Input:
        ``x`` of shape ``(N, in_channels, H, W)``; any ``H, W`` the max pools can halve
        (e.g. 32x32 and up for the 5-pool configurations).

    Returns:
        Logits ``(N, num_classes)`` and the new state.

    **Parameters**
        - ``features``: ``{"<i>": {"weight": (C_out, C_in, 3, 3), "bias": (C_out,)}}`` for the
          convolution at index ``i`` of ``features``; with ``batch_norm`` also
          ``{"<i+1>": {"weight": (C_out,), "bias": (C_out,)}}`` for its BatchNorm;
          ``{}`` for the ReLUs and max pools.
        - ``avgpool``: ``{}``.
        - ``classifier``: ``"0"``: ``{"weight": (hidden, C_last * pool_size**2),
          "bias": (hidden,)}``, ``"3"``: ``{"weight": (hidden, hidden), "bias": (hidden,)}``,
          ``"6"``: ``{"weight": (num_classes, hidden), "bias": (num_classes,)}``; ``{}`` for
          the ReLUs and dropouts (``"1"``, ``"2"``, ``"4"``, ``"5"``).

    **States**
        - ``features``: with ``batch_norm``, ``{"<i+1>": {"running_mean": (C_out,),
          "running_var": (C_out,), "num_batches_tracked": () int64, "training": Static}}``
          per BatchNorm; ``{}`` otherwise.
        - ``avgpool``: ``{}``.
        - ``classifier``: ``"2"`` and ``"5"``: ``{"key": (2,) int64, "training": Static}``
          (the dropout keys; :func:`lux_torch.load_state_dict` fills them from
          :func:`lux_torch.setup` when loading torchvision's ``state_dict``).

    Example:
        >>> model = VGG((8, "M", 16, "M"), batch_norm=True, num_classes=10, hidden_features=32)
        >>> ps, st = lux_torch.setup(0, model)  # doctest: +SKIP
        >>> logits, st = model(torch.randn(2, 3, 16, 16), ps, st)  # doctest: +SKIP
    """

    cfg: tuple[int | str, ...]
    batch_norm: bool
    num_classes: int
    dropout: float
    in_channels: int
    hidden_features: int
    pool_size: int
    features: Chain
    avgpool: AdaptiveAvgPool2d
    classifier: Chain

    def __init__(
        self,
        cfg: str | Sequence[int | str],
        *,
        batch_norm: bool = False,
        num_classes: int = 1000,
        dropout: float = 0.5,
        in_channels: int = 3,
        hidden_features: int = 4096,
        pool_size: int = 7,
    ) -> None:
        owner = "VGG"
        config = _config(cfg)
        check_bool(owner, "batch_norm", batch_norm)
        check_int(owner, "num_classes", num_classes, 1)
        check_int(owner, "in_channels", in_channels, 1)
        check_int(owner, "hidden_features", hidden_features, 1)
        check_int(owner, "pool_size", pool_size, 1)
        last = [v for v in config if isinstance(v, int)][-1]
        classifier = _classifier(last * pool_size**2, hidden_features, num_classes, dropout)
        self._set_fields(
            cfg=config,
            batch_norm=batch_norm,
            num_classes=num_classes,
            dropout=float(dropout),
            in_channels=in_channels,
            hidden_features=hidden_features,
            pool_size=pool_size,
            features=_features(config, batch_norm, in_channels),
            avgpool=AdaptiveAvgPool2d((pool_size, pool_size)),
            classifier=classifier,
        )

    def __call__(self, x: torch.Tensor, ps: Params, st: State) -> tuple[torch.Tensor, State]:
        problem = self.describe_input_error(x)
        if problem is not None:
            raise ValueError(f"VGG: {problem}")
        new_st = dict(st)
        h, new_st["features"] = self.features(x, ps["features"], st["features"])
        h, new_st["avgpool"] = self.avgpool(h, ps["avgpool"], st["avgpool"])
        y, new_st["classifier"] = self.classifier(
            torch.flatten(h, 1), ps["classifier"], st["classifier"]
        )
        return y, new_st

    def describe_input_error(self, x: Any) -> str | None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            return (
                f"expected images of shape (N, {self.in_channels}, H, W), got {describe_value(x)}"
            )
        return None

    def extra_repr(self) -> str:
        name = next((k for k, v in VGG_CONFIGS.items() if v == self.cfg), None)
        parts = [repr(name) if name else f"cfg={list(self.cfg)}"]
        if self.batch_norm:
            parts.append("batch_norm=True")
        parts.append(f"num_classes={self.num_classes}")
        for field, default in (
            ("dropout", 0.5),
            ("in_channels", 3),
            ("hidden_features", 4096),
            ("pool_size", 7),
        ):
            if getattr(self, field) != default:
                parts.append(f"{field}={getattr(self, field)}")
        return ", ".join(parts)


def _vgg(cfg: str, batch_norm: bool, num_classes: int, dropout: float) -> VGG:
    return VGG(cfg, batch_norm=batch_norm, num_classes=num_classes, dropout=dropout)


def vgg11(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration "A"), torchvision's ``vgg11``: 132,863,336 parameters for 1000
    classes. See :class:`VGG` for the arguments, input and trees."""
    return _vgg("A", False, num_classes, dropout)


def vgg11_bn(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-11 with BatchNorm, torchvision's ``vgg11_bn``. See :class:`VGG`."""
    return _vgg("A", True, num_classes, dropout)


def vgg13(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration "B"), torchvision's ``vgg13``. See :class:`VGG`."""
    return _vgg("B", False, num_classes, dropout)


def vgg13_bn(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-13 with BatchNorm, torchvision's ``vgg13_bn``. See :class:`VGG`."""
    return _vgg("B", True, num_classes, dropout)


def vgg16(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration "D"), torchvision's ``vgg16``: 138,357,544 parameters for 1000
    classes. See :class:`VGG`."""
    return _vgg("D", False, num_classes, dropout)


def vgg16_bn(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-16 with BatchNorm, torchvision's ``vgg16_bn``. See :class:`VGG`."""
    return _vgg("D", True, num_classes, dropout)


def vgg19(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration "E"), torchvision's ``vgg19``: 143,667,240 parameters for 1000
    classes. See :class:`VGG`."""
    return _vgg("E", False, num_classes, dropout)


def vgg19_bn(*, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-19 with BatchNorm, torchvision's ``vgg19_bn``. See :class:`VGG`."""
    return _vgg("E", True, num_classes, dropout)
