"""RetinaNet v1's backbone in torchvision's layout: ResNet-50 ``body`` + ``fpn`` with ``LastLevelP6P7``.

Keys: ``body.{conv1,bn1,layer1..4}.*`` (torchvision ``resnet50`` without ``fc``; stride on the 3x3
conv, "v1.5") and ``fpn.{inner_blocks,layer_blocks}.{0,1,2}.0.*``, ``fpn.extra_blocks.{p6,p7}.*``.
The FPN takes C3..C5 (512, 1024, 2048 channels), adds the top-down path with nearest-neighbour
``interpolate(size=...)`` and builds P6 = conv3x3/2(**P5**), P7 = conv3x3/2(relu(P6)) (v1: 256 → 256).
Output: P3..P7, 256 channels each; spatial sizes ceil-halve from P3 = H/8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..torchvision_common import conv_norm_act
from ..torchvision_resnet import Norm, ResNetBody


class LastLevelP6P7(nn.Module):
    """P6 = conv3x3/2 of P5 (``use_P5``: in == out channels, RetinaNet v1) or of C5 (v2), P7 = conv3x3/2(relu(P6))."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        self.use_P5 = in_channels == out_channels

    def forward(self, p: list[torch.Tensor], c: list[torch.Tensor]) -> list[torch.Tensor]:
        p6 = self.p6(p[-1] if self.use_P5 else c[-1])
        return [*p, p6, self.p7(F.relu(p6))]


class FeaturePyramidNetwork(nn.Module):
    """torchvision's ``FeaturePyramidNetwork`` (no norm) with ``LastLevelP6P7(256, 256)``."""

    def __init__(self, in_channels: tuple[int, ...] = (512, 1024, 2048), out_channels: int = 256) -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(
            conv_norm_act(c, out_channels, 1, norm=None, activation=None) for c in in_channels
        )
        self.layer_blocks = nn.ModuleList(
            conv_norm_act(out_channels, out_channels, 3, norm=None, activation=None) for _ in in_channels
        )
        self.extra_blocks = LastLevelP6P7(out_channels, out_channels)

    def forward(self, c: list[torch.Tensor]) -> list[torch.Tensor]:
        last_inner = self.inner_blocks[-1](c[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(c) - 2, -1, -1):
            lateral = self.inner_blocks[idx](c[idx])
            last_inner = lateral + F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.layer_blocks[idx](last_inner))
        return self.extra_blocks(results, c)


class BackboneWithFPN(nn.Module):
    """``body`` + ``fpn``: ``x`` → [P3, P4, P5, P6, P7]."""

    def __init__(self, norm: Norm) -> None:
        super().__init__()
        self.body = ResNetBody("resnet50", norm=norm)
        self.fpn = FeaturePyramidNetwork()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.fpn(self.body(x)[1:])  # C3..C5
