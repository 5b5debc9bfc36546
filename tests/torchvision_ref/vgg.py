"""VGG with torchvision's layout (``torchvision/models/vgg.py``, torchvision >= 0.13).

Written for the tests (torch only), following torchvision's ``VGG``, ``make_layers`` and
``cfgs``: ``features`` is an ``nn.Sequential`` of ``Conv2d(3x3, padding=1)`` [+
``BatchNorm2d``] + ``ReLU`` per number in the configuration and ``MaxPool2d(2, 2)`` per
``"M"``; ``avgpool`` is ``AdaptiveAvgPool2d((7, 7))``; ``classifier`` is
``Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear``; the initialisation is
torchvision's ``init_weights=True`` one.

Generalised for small tests (torchvision's values are the defaults): ``in_channels`` of
the first convolution (3), the adaptive pool's size ``pool_size`` (7) and the classifier's
hidden width ``hidden_features`` (4096); the classifier's input is
``channels of the last convolution * pool_size**2`` (torchvision writes ``512 * 7 * 7``,
the same for its configurations).
"""

from __future__ import annotations

import torch
from torch import nn

CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ],
}


def make_layers(
    cfg: list[int | str], batch_norm: bool = False, in_channels: int = 3
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(v, int)
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(
        self,
        features: nn.Sequential,
        num_classes: int = 1000,
        init_weights: bool = True,
        dropout: float = 0.5,
        *,
        pool_size: int = 7,
        hidden_features: int = 4096,
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        channels = [m.out_channels for m in features if isinstance(m, nn.Conv2d)][-1]
        self.classifier = nn.Sequential(
            nn.Linear(channels * pool_size * pool_size, hidden_features),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_features, hidden_features),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_features, num_classes),
        )
        if init_weights:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)  # type: ignore[no-any-return]


def vgg(cfg: str, batch_norm: bool = False, **kwargs: object) -> VGG:
    """torchvision's ``vgg11`` (``"A"``), ``vgg13`` (``"B"``), ``vgg16`` (``"D"``), ``vgg19``
    (``"E"``), with ``batch_norm`` the ``_bn`` variants."""
    return VGG(make_layers(CFGS[cfg], batch_norm), **kwargs)  # type: ignore[arg-type]
