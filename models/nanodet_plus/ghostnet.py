"""GhostNet backbone in upstream NanoDet's layout (``backbone.conv_stem``, ``backbone.blocks.0..9``).

``GhostModule``/``GhostBottleneck`` are also the building blocks of :class:`~.ghost_pan.GhostPAN`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nanodet_infer.errors import InvalidArgumentError

from .layers import activation_layer

# Per block index: rows of (kernel, expansion, out channels, SE ratio, stride); block 9 is a 1x1 ConvBnAct.
BLOCKS: tuple[tuple[tuple[int, int, int, float, int], ...], ...] = (
    ((3, 16, 16, 0, 1),),
    ((3, 48, 24, 0, 2),),
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0, 2),),
    ((3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)),
)
# total stride after block i (the stem already halves the input)
BLOCK_STRIDES = (2, 4, 4, 8, 8, 16, 16, 32, 32, 32)


def make_divisible(value: float, divisor: int) -> int:
    """Round ``value`` to a multiple of ``divisor`` without going more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def block_channels(width_mult: float) -> tuple[int, ...]:
    """Output channels of blocks 0..9 for ``width_mult``."""
    outs = [make_divisible(rows[-1][2] * width_mult, 4) for rows in BLOCKS]
    return (*outs, make_divisible(BLOCKS[-1][-1][1] * width_mult, 4))


class SqueezeExcite(nn.Module):
    """Channel attention with a hard-sigmoid gate (ReLU inside, as upstream): shape-preserving."""

    def __init__(self, channels: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        reduced = make_divisible(channels * se_ratio, 4)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act1 = nn.ReLU()
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv_expand(self.act1(self.conv_reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * (F.relu6(gate + 3.0) / 6.0)


class GhostModule(nn.Module):
    """Primary 1x1 conv + cheap depthwise 3x3 conv, concatenated: ``[B, inp, H, W] -> [B, oup, H, W]``."""

    def __init__(self, inp: int, oup: int, activation: str | None = "ReLU") -> None:
        super().__init__()
        init_channels = math.ceil(oup / 2)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, init_channels, 1, bias=False),
            nn.BatchNorm2d(init_channels),
            activation_layer(activation) if activation else nn.Sequential(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, init_channels, 3, 1, 1, groups=init_channels, bias=False),
            nn.BatchNorm2d(init_channels),
            activation_layer(activation) if activation else nn.Sequential(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary_conv(x)
        return torch.cat([primary, self.cheap_operation(primary)], dim=1)


class GhostBottleneck(nn.Module):
    """Ghost bottleneck with optional SE: ``[B, in_chs, H, W] -> [B, out_chs, H/stride, W/stride]``."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        activation: str = "ReLU",
        se_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        self.stride = stride
        pad = (dw_kernel_size - 1) // 2
        self.ghost1 = GhostModule(in_chs, mid_chs, activation=activation)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, pad, groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio) if se_ratio else None
        self.ghost2 = GhostModule(mid_chs, out_chs, activation=None)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride, pad, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost1(x)
        if self.stride > 1:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        return self.ghost2(out) + self.shortcut(x)


class ConvBnAct(nn.Module):
    """1x1 conv -> BN -> activation (GhostNet block 9)."""

    def __init__(self, in_chs: int, out_chs: int, activation: str = "ReLU") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = activation_layer(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


class GhostNet(nn.Module):
    """GhostNet: ``[B, 3, H, W]`` -> the outputs of the blocks listed in ``out_stages`` (indices 0..9).

    Block ``i`` has total stride ``BLOCK_STRIDES[i]`` and ``block_channels(width_mult)[i]`` channels.
    """

    def __init__(
        self, width_mult: float = 1.0, out_stages: Sequence[int] = (4, 6, 9), activation: str = "ReLU"
    ) -> None:
        super().__init__()
        if not out_stages or not set(out_stages) <= set(range(10)):
            raise InvalidArgumentError(f"GhostNet out_stages must be block indices 0..9, got {out_stages!r}")
        self.out_stages = tuple(out_stages)
        stem = make_divisible(16 * width_mult, 4)
        self.conv_stem = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = activation_layer(activation)
        stages: list[nn.Module] = []
        inp = stem
        for rows in BLOCKS:
            layers = []
            for kernel, expansion, out, se_ratio, stride in rows:
                oup = make_divisible(out * width_mult, 4)
                mid = make_divisible(expansion * width_mult, 4)
                layers.append(GhostBottleneck(inp, mid, oup, kernel, stride, activation, se_ratio))
                inp = oup
            stages.append(nn.Sequential(*layers))
        channels = block_channels(width_mult)
        stages.append(nn.Sequential(ConvBnAct(inp, channels[9], activation)))
        self.blocks = nn.Sequential(*stages)
        self.out_channels = tuple(channels[i] for i in self.out_stages)
        self.strides = tuple(BLOCK_STRIDES[i] for i in self.out_stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        outputs = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.out_stages:
                outputs.append(x)
        return tuple(outputs)
