"""torchvision's RetinaNet-ResNet50-FPN (v1) as a deploy graph: backbone + head.

``RetinaNet(x)`` returns torchvision's raw head outputs for an already transformed (normalised, resized,
zero-padded to /32) input ``x [N, 3, H, W]``: ``cls_logits [N, A, C]`` (logits; sigmoid per class, label 0
is a real class) and ``bbox_regression [N, A, 4]`` (box-coder deltas, weights (1, 1, 1, 1)). Rows: P3..P7,
then y, then x, then the 9 anchors of a location. ``state_dict`` keys are torchvision's (``backbone.body.*``,
``backbone.fpn.*``, ``head.classification_head.{conv.{0..3}.0,cls_logits}.*``,
``head.regression_head.{conv.{0..3}.0,bbox_reg}.*``). The v2 model (GroupNorm head, P6 from C5) is not this.
"""

from __future__ import annotations

import torch
from torch import nn

from nanodet_infer.families.retinanet.section import RetinaNetSection

from ..torchvision_common import NormChoice, conv_norm_act, flatten_level
from .resnet_fpn import BackboneWithFPN

_ANCHORS = RetinaNetSection()  # the runtime's defaults are torchvision's builder (the one copy)
NUM_ANCHORS = len(_ANCHORS.anchor_sizes[0]) * len(_ANCHORS.anchor_aspect_ratios[0])
"""Anchors per location: 3 sizes x 3 aspect ratios."""


def _tower() -> nn.Sequential:
    return nn.Sequential(*(conv_norm_act(256, 256, 3, norm=None, activation=nn.ReLU) for _ in range(4)))


class RetinaNetClassificationHead(nn.Module):
    """4 x (conv3x3 256 + ReLU), then ``cls_logits`` conv3x3 to ``A * C``; shared over the levels."""

    def __init__(self, num_classes: int, num_anchors: int = NUM_ANCHORS) -> None:
        super().__init__()
        self.conv = _tower()
        self.cls_logits = nn.Conv2d(256, num_anchors * num_classes, 3, padding=1)
        self.num_classes = num_classes

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([flatten_level(self.cls_logits(self.conv(f)), self.num_classes) for f in features], dim=1)


class RetinaNetRegressionHead(nn.Module):
    """4 x (conv3x3 256 + ReLU), then ``bbox_reg`` conv3x3 to ``A * 4``; shared over the levels."""

    def __init__(self, num_anchors: int = NUM_ANCHORS) -> None:
        super().__init__()
        self.conv = _tower()
        self.bbox_reg = nn.Conv2d(256, num_anchors * 4, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([flatten_level(self.bbox_reg(self.conv(f)), 4) for f in features], dim=1)


class RetinaNetHead(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.classification_head = RetinaNetClassificationHead(num_classes)
        self.regression_head = RetinaNetRegressionHead()

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classification_head(features), self.regression_head(features)


class RetinaNet(nn.Module):
    """``x [N, 3, H, W]`` (transformed, H and W multiples of 32) → ``(cls_logits, bbox_regression)``."""

    def __init__(self, num_classes: int = 91, *, norm: NormChoice | None = None) -> None:
        super().__init__()
        self.norm = norm or NormChoice("batchnorm", 1e-5)
        self.backbone = BackboneWithFPN(self.norm.layer())
        self.head = RetinaNetHead(num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))
