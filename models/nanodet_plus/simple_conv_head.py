"""The Assign Guidance Module's head (upstream ``SimpleConvHead``); used only while training."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .layers import ConvModule, Scale
from .nanodet_plus_head import PRIOR_CLS_BIAS


class SimpleConvHead(nn.Module):
    """Separate cls/reg towers of 3x3 ConvModules (GroupNorm), shared across levels, ``Scale`` per level.

    ``feats``: one ``[B, input_channel, H_i, W_i]`` map per stride (NanoDet-Plus feeds the concat of the
    main and the auxiliary PAN outputs). Returns ``[B, N, num_classes + 4 * (reg_max + 1)]``.
    """

    def __init__(
        self,
        num_classes: int,
        input_channel: int,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[int] = (8, 16, 32),
        norm_cfg: Mapping[str, Any] | None = MappingProxyType({"type": "GN", "num_groups": 32}),
        activation: str = "LeakyReLU",
        reg_max: int = 16,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(strides)

        def tower() -> nn.ModuleList:
            return nn.ModuleList(
                ConvModule(
                    input_channel if i == 0 else feat_channels, feat_channels, 3, 1, 1, norm_cfg, activation
                )
                for i in range(stacked_convs)
            )

        self.cls_convs = tower()
        self.reg_convs = tower()
        self.gfl_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(feat_channels, 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        for module in (*self.cls_convs, *self.reg_convs):
            nn.init.normal_(module.conv.weight, std=0.01)
        nn.init.normal_(self.gfl_cls.weight, std=0.01)
        nn.init.constant_(self.gfl_cls.bias, PRIOR_CLS_BIAS)
        nn.init.normal_(self.gfl_reg.weight, std=0.01)
        nn.init.zeros_(self.gfl_reg.bias)

    def forward(self, feats: Iterable[torch.Tensor]) -> torch.Tensor:
        outputs = []
        for x, scale in zip(feats, self.scales, strict=True):
            cls_feat, reg_feat = x, x
            for cls_conv, reg_conv in zip(self.cls_convs, self.reg_convs, strict=True):
                cls_feat, reg_feat = cls_conv(cls_feat), reg_conv(reg_feat)
            out = torch.cat([self.gfl_cls(cls_feat), scale(self.gfl_reg(reg_feat)).float()], dim=1)
            outputs.append(out.flatten(start_dim=2))
        return torch.cat(outputs, dim=2).permute(0, 2, 1)
