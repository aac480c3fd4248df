"""SSDLite320's MobileNetV3-Large feature extractor in torchvision's layout (``SSDLiteFeatureExtractorMobileNet``).

torchvision builds ``mobilenet_v3_large(norm_layer=BatchNorm2d(eps=0.001, momentum=0.03), reduced_tail=...)``
(``reduced_tail=True`` when built without ImageNet weights: the last stage has half the channels) and
splits its ``features`` at the C4 block's expansion conv:

- ``features.0``: ``features[0..12]`` plus C4's 1x1 expansion (``features.0.13``), output stride 16;
- ``features.1``: the rest of C4 (keys ``features.1.0.{1,2,3}``: depthwise, SE, projection), the last
  two bottlenecks and the final 1x1 conv (``features.1.3``), output stride 32;
- ``extra.0..3``: 1x1 (ReLU6) → depthwise 3x3/2 (ReLU6) → 1x1 (ReLU6) blocks to 512, 256, 256, 128 channels.

Output: 6 maps (672, 480 or 960, 512, 256, 256, 128 channels; 20, 10, 5, 3, 2, 1 pixels at 320 x 320).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..torchvision_common import conv_norm_act

Norm = Callable[[int], nn.Module]


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, never below 90 % of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def large_settings(reduced_tail: bool) -> list[tuple[int, int, int, int, bool, bool, int]]:
    """MobileNetV3-Large bottlenecks: (in, kernel, expanded, out, SE, hardswish, stride)."""
    d = 2 if reduced_tail else 1
    return [
        (16, 3, 16, 16, False, False, 1),
        (16, 3, 64, 24, False, False, 2),
        (24, 3, 72, 24, False, False, 1),
        (24, 5, 72, 40, True, False, 2),
        (40, 5, 120, 40, True, False, 1),
        (40, 5, 120, 40, True, False, 1),
        (40, 3, 240, 80, False, True, 2),
        (80, 3, 200, 80, False, True, 1),
        (80, 3, 184, 80, False, True, 1),
        (80, 3, 184, 80, False, True, 1),
        (80, 3, 480, 112, True, True, 1),
        (112, 3, 672, 112, True, True, 1),
        (112, 5, 672, 160 // d, True, True, 2),
        (160 // d, 5, 960 // d, 160 // d, True, True, 1),
        (160 // d, 5, 960 // d, 160 // d, True, True, 1),
    ]


class SqueezeExcitation(nn.Module):
    """torchvision's SE block as MobileNetV3 uses it: avgpool → fc1 → ReLU → fc2 → Hardsigmoid → scale."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidual(nn.Module):
    """MobileNetV3 bottleneck (``block``: optional 1x1 expansion, depthwise, optional SE, 1x1 projection)."""

    def __init__(
        self, cin: int, kernel: int, expanded: int, cout: int, se: bool, hardswish: bool, stride: int, norm: Norm
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        act = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(conv_norm_act(cin, expanded, 1, norm=norm, activation=act))
        layers.append(
            conv_norm_act(expanded, expanded, kernel, stride=stride, groups=expanded, norm=norm, activation=act)
        )
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4)))
        layers.append(conv_norm_act(expanded, cout, 1, norm=norm, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.use_res_connect else y


def _extra_block(cin: int, cout: int, norm: Norm) -> nn.Sequential:
    mid = cout // 2
    return nn.Sequential(
        conv_norm_act(cin, mid, 1, norm=norm, activation=nn.ReLU6),
        conv_norm_act(mid, mid, 3, stride=2, groups=mid, norm=norm, activation=nn.ReLU6),
        conv_norm_act(mid, cout, 1, norm=norm, activation=nn.ReLU6),
    )


class SSDLiteFeatureExtractorMobileNet(nn.Module):
    """``x [N, 3, H, W]`` → 6 feature maps (C4 expansion, C5, 4 extra blocks); see the module docstring."""

    def __init__(self, norm: Norm, *, reduced_tail: bool) -> None:
        super().__init__()
        settings = large_settings(reduced_tail)
        layers: list[nn.Module] = [conv_norm_act(3, 16, 3, stride=2, norm=norm, activation=nn.Hardswish)]
        layers += [InvertedResidual(*s, norm=norm) for s in settings]
        last = settings[-1][3]
        layers.append(conv_norm_act(last, 6 * last, 1, norm=norm, activation=nn.Hardswish))
        c4 = 13  # the last strided bottleneck (C4), as torchvision's _mobilenet_extractor finds it
        c4_block = layers[c4].block
        self.features = nn.Sequential(
            nn.Sequential(*layers[:c4], c4_block[0]),
            nn.Sequential(c4_block[1:], *layers[c4 + 1 :]),
        )
        self.extra = nn.ModuleList(
            [
                _extra_block(6 * last, 512, norm),
                _extra_block(512, 256, norm),
                _extra_block(256, 256, norm),
                _extra_block(256, 128, norm),
            ]
        )
        self.out_channels = (c4_block[0][0].out_channels, 6 * last, 512, 256, 256, 128)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for block in (*self.features, *self.extra):
            x = block(x)
            outputs.append(x)
        return outputs
