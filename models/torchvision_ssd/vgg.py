"""SSD300's VGG16 feature extractor in torchvision's layout (``SSDFeatureExtractorVGG``, ``highres=False``).

Keys: ``features.{0..21}`` (VGG16 ``features[:23]``, conv1_1 .. conv4_3 with ReLUs and 3 max pools, the
third with ``ceil_mode=True``), ``scale_weight`` [512] (L2Norm, initialised to 20), ``extra.0`` (pool4,
conv5_1..5_3, then ``extra.0.7``: maxpool 3/1/1, FC6 atrous 3x3 dilation 6, FC7 1x1) and ``extra.1..4``
(conv8_2 .. conv11_2). Output: 6 maps with 512, 1024, 512, 256, 256, 256 channels; 38, 19, 10, 5, 3, 1
pixels square at 300 x 300.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: VGG16 configuration "D": channels of each 3x3 conv, "M" for a 2x2 max pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
OUT_CHANNELS = (512, 1024, 512, 256, 256, 256)


def _vgg16_features() -> list[nn.Module]:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(item)
    return layers


def _extra(in_channels: int, mid: int, out: int, *, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, out, kernel_size=3, padding=padding, stride=stride),
        nn.ReLU(inplace=True),
    )


class SSDFeatureExtractorVGG(nn.Module):
    """``x [N, 3, H, W]`` → 6 feature maps (conv4_3 L2-normalised and scaled, FC7, conv8_2 .. conv11_2)."""

    def __init__(self) -> None:
        super().__init__()
        backbone = _vgg16_features()
        pools = [i for i, layer in enumerate(backbone) if isinstance(layer, nn.MaxPool2d)]
        backbone[pools[2]].ceil_mode = True  # torchvision patches maxpool3 to match the paper's sizes
        self.scale_weight = nn.Parameter(torch.ones(512) * 20)
        self.features = nn.Sequential(*backbone[: pools[3]])
        fc = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=False),
            nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),
            nn.ReLU(inplace=True),
            nn.Conv2d(1024, 1024, kernel_size=1),
            nn.ReLU(inplace=True),
        )
        self.extra = nn.ModuleList(
            [
                nn.Sequential(*backbone[pools[3] : -1], fc),
                _extra(1024, 256, 512, stride=2, padding=1),
                _extra(512, 128, 256, stride=2, padding=1),
                _extra(256, 128, 256, stride=1, padding=0),
                _extra(256, 128, 256, stride=1, padding=0),
            ]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.features(x)
        outputs = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)]
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return outputs
