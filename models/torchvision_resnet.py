"""torchvision's ResNet body in its key layout: ``{conv1,bn1,layer1..4}.*`` without ``avgpool``/``fc``.

ResNet-18/34 (``BasicBlock``) or ResNet-50/101 (``Bottleneck``, stride on the 3x3 conv, "v1.5"), each norm made
by ``norm`` (default :class:`~.torchvision_common.FrozenBatchNorm2d`, eps 1e-5). ``dilation=True`` (DC5) replaces
layer4's stride by dilation 2, as torchvision's ``replace_stride_with_dilation=[False, False, True]``. Output: the
four stage maps C2..C5, strides 4, 8, 16, 32 (C5 at 16 with DC5). DETR's backbone (``backbone.0.body``, C5) and
RetinaNet's (``body``, C3..C5 into the FPN) are this module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .torchvision_common import FrozenBatchNorm2d

Norm = Callable[[int], nn.Module]

BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
"""Blocks per stage of each supported backbone."""
BOTTLENECK = frozenset({"resnet50", "resnet101"})


def _downsample(cin: int, cout: int, stride: int, norm: Norm) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm(cout))


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` (expansion 1)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, dilation: int, norm: Norm) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, width, stride, norm) if stride != 1 or cin != width else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (expansion 4, stride and dilation on the 3x3 conv)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, dilation: int, norm: Norm) -> None:
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, cout, stride, norm) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNetBody(nn.Module):
    """``x [B, 3, H, W]`` → ``[C2, C3, C4, C5]``, the maps of layer1..4 (C5 ``[B, C, H/32, W/32]``; C = 512 for
    R18/34, 2048 for R50/101; ``num_channels`` is C)."""

    def __init__(self, name: str, dilation: bool = False, norm: Norm = FrozenBatchNorm2d) -> None:
        super().__init__()
        block = Bottleneck if name in BOTTLENECK else BasicBlock
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin, current_dilation = 64, 1
        for index, (blocks, width) in enumerate(zip(BLOCKS[name], (64, 128, 256, 512), strict=True), start=1):
            stride = 1 if index == 1 else 2
            previous_dilation = current_dilation
            if index == 4 and dilation:
                current_dilation, stride = current_dilation * stride, 1
            layer = [block(cin, width, stride, previous_dilation, norm)]
            cin = width * block.expansion
            layer += [block(cin, width, 1, current_dilation, norm) for _ in range(1, blocks)]
            setattr(self, f"layer{index}", nn.Sequential(*layer))
        self.num_channels = cin

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(x)
        return stages
