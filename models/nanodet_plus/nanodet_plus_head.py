"""NanoDet-Plus detection head (upstream ``NanoDetPlusHead``, inference path only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from nanodet_infer.errors import InvalidArgumentError

from .layers import ConvModule, DepthwiseConvModule, Integral

PRIOR_CLS_BIAS = -4.595  # sigmoid(-4.595) = 0.01, upstream's initial class confidence


class NanoDetPlusHead(nn.Module):
    """One unshared conv tower + one 1x1 ``gfl_cls`` conv per level; classes and box bins share it.

    ``feats``: one ``[B, input_channel, H_i, W_i]`` map per stride. Returns ``[B, N, C + 4 * (reg_max + 1)]``
    (``N = sum(H_i * W_i)``, level by level, row-major): class logits first, then the raw box-distribution
    logits (sides left, top, right, bottom; ``reg_max + 1`` bins each).
    """

    def __init__(
        self,
        num_classes: int,
        input_channel: int,
        feat_channels: int = 96,
        stacked_convs: int = 2,
        kernel_size: int = 5,
        strides: Sequence[int] = (8, 16, 32),
        conv_type: str = "DWConv",
        norm_cfg: Mapping[str, Any] | None = MappingProxyType({"type": "BN"}),
        reg_max: int = 7,
        activation: str = "LeakyReLU",
    ) -> None:
        super().__init__()
        if conv_type not in ("DWConv", "Conv"):
            raise InvalidArgumentError(f"NanoDetPlusHead conv_type must be 'DWConv' or 'Conv', got {conv_type!r}")
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(strides)
        self.distribution_project = Integral(reg_max)
        conv = DepthwiseConvModule if conv_type == "DWConv" else ConvModule

        def tower() -> nn.ModuleList:
            return nn.ModuleList(
                conv(
                    input_channel if i == 0 else feat_channels, feat_channels, kernel_size, 1, kernel_size // 2,
                    norm_cfg, activation,
                )
                for i in range(stacked_convs)
            )

        self.cls_convs = nn.ModuleList(tower() for _ in self.strides)
        self.gfl_cls = nn.ModuleList(
            nn.Conv2d(feat_channels, num_classes + 4 * (reg_max + 1), 1) for _ in self.strides
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.cls_convs.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
        for conv in self.gfl_cls:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, PRIOR_CLS_BIAS)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        outputs = []
        for feat, convs, gfl_cls in zip(feats, self.cls_convs, self.gfl_cls, strict=True):
            for conv in convs:
                feat = conv(feat)
            outputs.append(gfl_cls(feat).flatten(start_dim=2))
        return torch.cat(outputs, dim=2).permute(0, 2, 1)
