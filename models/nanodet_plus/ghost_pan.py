"""GhostPAN neck (upstream ``nanodet/model/fpn/ghost_pan.py``): top-down + bottom-up path aggregation with
Ghost blocks, plus ``num_extra_level`` extra stride-doubling levels (NanoDet-Plus: one, stride 64)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from nanodet_infer.errors import InvalidArgumentError

from .ghostnet import GhostBottleneck
from .layers import ConvModule, DepthwiseConvModule


class GhostBlocks(nn.Module):
    """``num_blocks`` GhostBottlenecks (+ optional 1x1 residual): ``[B, in, H, W] -> [B, out, H, W]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand: float = 1,
        kernel_size: int = 5,
        num_blocks: int = 1,
        use_res: bool = False,
        activation: str = "LeakyReLU",
    ) -> None:
        super().__init__()
        self.use_res = use_res
        if use_res:
            self.reduce_conv = ConvModule(in_channels, out_channels, 1, activation=activation)
        self.blocks = nn.Sequential(
            *(
                GhostBottleneck(
                    in_channels, int(out_channels * expand), out_channels, dw_kernel_size=kernel_size,
                    activation=activation,
                )
                for _ in range(num_blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(x)
        return out + self.reduce_conv(x) if self.use_res else out


class GhostPAN(nn.Module):
    """Path aggregation network with Ghost blocks.

    ``inputs``: ``len(in_channels)`` maps ``[B, in_channels[i], H_i, W_i]`` with strides doubling level to
    level. Returns ``len(in_channels) + num_extra_level`` maps ``[B, out_channels, H_i, W_i]``. Upsampling
    is ``nn.Upsample(**upsample_cfg)``, by default bilinear x2 (upstream's code default, which its configs
    do not override).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        use_depthwise: bool = False,
        kernel_size: int = 5,
        expand: float = 1,
        num_blocks: int = 1,
        use_res: bool = False,
        num_extra_level: int = 0,
        upsample_cfg: Mapping[str, Any] = MappingProxyType({"scale_factor": 2, "mode": "bilinear"}),
        norm_cfg: Mapping[str, Any] | None = MappingProxyType({"type": "BN"}),
        activation: str = "LeakyReLU",
    ) -> None:
        super().__init__()
        if len(in_channels) < 1 or num_extra_level < 0 or num_blocks < 1:
            raise InvalidArgumentError(
                "GhostPAN needs at least one input level, num_blocks >= 1 and num_extra_level >= 0"
            )
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        conv = DepthwiseConvModule if use_depthwise else ConvModule
        levels = len(in_channels)

        def ghost_blocks() -> GhostBlocks:
            return GhostBlocks(out_channels * 2, out_channels, expand, kernel_size, num_blocks, use_res, activation)

        def down_conv() -> nn.Module:
            return conv(out_channels, out_channels, kernel_size, 2, kernel_size // 2, norm_cfg, activation)

        self.upsample = nn.Upsample(**dict(upsample_cfg))
        self.reduce_layers = nn.ModuleList(
            ConvModule(c, out_channels, 1, norm_cfg=norm_cfg, activation=activation) for c in in_channels
        )
        self.top_down_blocks = nn.ModuleList(ghost_blocks() for _ in range(levels - 1))
        self.downsamples = nn.ModuleList(down_conv() for _ in range(levels - 1))
        self.bottom_up_blocks = nn.ModuleList(ghost_blocks() for _ in range(levels - 1))
        self.extra_lvl_in_conv = nn.ModuleList(down_conv() for _ in range(num_extra_level))
        self.extra_lvl_out_conv = nn.ModuleList(down_conv() for _ in range(num_extra_level))

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        reduced = [reduce(x) for x, reduce in zip(inputs, self.reduce_layers, strict=True)]
        # top-down: upsample the coarser result, concat with the finer input
        inner = [reduced[-1]]
        for step, low in enumerate(reversed(reduced[:-1])):
            inner.insert(0, self.top_down_blocks[step](torch.cat([self.upsample(inner[0]), low], 1)))
        # bottom-up: downsample the finer result, concat with the coarser top-down map
        outs = [inner[0]]
        for step, high in enumerate(inner[1:]):
            outs.append(self.bottom_up_blocks[step](torch.cat([self.downsamples[step](outs[-1]), high], 1)))
        for extra_in, extra_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv, strict=True):
            outs.append(extra_in(reduced[-1]) + extra_out(outs[-1]))
        return tuple(outs)
