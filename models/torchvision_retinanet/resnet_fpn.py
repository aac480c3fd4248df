"""RetinaNet v1's backbone in torchvision's layout: ResNet-50 ``body`` + ``fpn`` with ``LastLevelP6P7``.

Keys: ``body.{conv1,bn1,layer1..4}.*`` (torchvision ``resnet50`` without ``fc``; stride on the 3x3
conv, "v1.5") and ``fpn.{inner_blocks,layer_blocks}.{0,1,2}.0.*``, ``fpn.extra_blocks.{p6,p7}.*``.
The FPN takes C3..C5 (512, 1024, 2048 channels), adds the top-down path with nearest-neighbour
``interpolate(size=...)`` and builds P6 = conv3x3/2(**P5**), P7 = conv3x3/2(relu(P6)) (v1: 256 → 256).
Output: P3..P7, 256 channels each; spatial sizes ceil-halve from P3 = H/8.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..torchvision_common import conv_norm_act

Norm = Callable[[int], nn.Module]
_BLOCKS = (3, 4, 6, 3)


class Bottleneck(nn.Module):
    """torchvision's ResNet ``Bottleneck`` (expansion 4)."""

    def __init__(self, cin: int, width: int, stride: int, norm: Norm) -> None:
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50Body(nn.Module):
    """``x [N, 3, H, W]`` → C3, C4, C5 (``layer2..4``; what ``IntermediateLayerGetter`` returns)."""

    def __init__(self, norm: Norm) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for index, (blocks, width) in enumerate(zip(_BLOCKS, (64, 128, 256, 512), strict=True), start=1):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(cin, width, 2 if b == 0 and index > 1 else 1, norm))
                cin = width * 4
            setattr(self, f"layer{index}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


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
        self.body = ResNet50Body(norm)
        self.fpn = FeaturePyramidNetwork()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.fpn(self.body(x))
