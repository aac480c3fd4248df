"""torchvision's SSD300-VGG16 and SSDLite320-MobileNetV3-Large as deploy graphs: backbone + head.

``SSD(x)`` returns torchvision's raw head outputs for an already transformed input ``x [N, 3, H, W]``:
``cls_logits [N, A, C]`` (logits; softmax over C, class 0 = background) and ``bbox_regression [N, A, 4]``
(box-coder deltas, weights (10, 10, 5, 5)). Rows: level by level, then y, then x, then the default boxes
of a location. The transform, default boxes and post-processing are runtime facts, not graph nodes: the
runtime's table of torchvision's builders (``nanodet_infer.families.ssd.section.BUILDERS``, the one copy)
holds them, and its aspect ratios set the head's boxes per location here. ``state_dict`` keys are
torchvision's (``backbone.*``, ``head.classification_head.module_list.*``, ``head.regression_head.module_list.*``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nanodet_infer.families.ssd.section import BUILDERS

from ..torchvision_common import NormChoice, conv_norm_act, flatten_level
from .mobilenet_v3 import SSDLiteFeatureExtractorMobileNet
from .vgg import OUT_CHANNELS as VGG_OUT_CHANNELS
from .vgg import SSDFeatureExtractorVGG


def boxes_per_location(aspect_ratios: Sequence[Sequence[float]]) -> list[int]:
    """``DefaultBoxGenerator.num_anchors_per_location``: 2 + 2 per aspect ratio."""
    return [2 + 2 * len(ratios) for ratios in aspect_ratios]


class ScoringHead(nn.Module):
    """torchvision's ``SSDScoringHead``: one module per level, outputs flattened and concatenated."""

    def __init__(self, module_list: nn.ModuleList, num_columns: int) -> None:
        super().__init__()
        self.module_list = module_list
        self.num_columns = num_columns

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            [flatten_level(m(f), self.num_columns) for m, f in zip(self.module_list, features, strict=True)], dim=1
        )


class SSDHead(nn.Module):
    """``classification_head`` and ``regression_head``; ``lite`` selects SSDLite's depthwise-separable
    prediction blocks (3x3 depthwise + norm + ReLU6, then a 1x1 conv) over SSD's plain 3x3 convs."""

    def __init__(
        self,
        in_channels: Sequence[int],
        anchors: Sequence[int],
        num_classes: int,
        *,
        lite: bool,
        norm: NormChoice | None = None,
    ) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Module:
            if not lite:
                return nn.Conv2d(cin, cout, kernel_size=3, padding=1)
            assert norm is not None
            dw = conv_norm_act(cin, cin, 3, groups=cin, norm=norm.layer(), activation=nn.ReLU6)
            return nn.Sequential(dw, nn.Conv2d(cin, cout, 1))

        levels = list(zip(in_channels, anchors, strict=True))
        self.classification_head = ScoringHead(nn.ModuleList(block(c, num_classes * a) for c, a in levels), num_classes)
        self.regression_head = ScoringHead(nn.ModuleList(block(c, 4 * a) for c, a in levels), 4)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classification_head(features), self.regression_head(features)


class SSD(nn.Module):
    """``x [N, 3, H, W]`` (transformed) → ``(cls_logits [N, A, C], bbox_regression [N, A, 4])``."""

    def __init__(self, backbone: nn.Module, head: SSDHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))


def ssd300_vgg16(num_classes: int = 91) -> SSD:
    """torchvision ``ssd300_vgg16`` (VGG16 without BatchNorm; nothing to assume about norms)."""
    anchors = boxes_per_location(BUILDERS["ssd300_vgg16"]["default_box_aspect_ratios"])
    head = SSDHead(VGG_OUT_CHANNELS, anchors, num_classes, lite=False)
    return SSD(SSDFeatureExtractorVGG(), head)


def ssdlite320_mobilenet_v3_large(
    num_classes: int = 91, *, reduced_tail: bool = True, norm: NormChoice | None = None
) -> SSD:
    """torchvision ``ssdlite320_mobilenet_v3_large``; ``norm`` defaults to its ``BatchNorm2d(eps=0.001)``."""
    norm = norm or NormChoice("batchnorm", 0.001)
    backbone = SSDLiteFeatureExtractorMobileNet(norm.layer(), reduced_tail=reduced_tail)
    anchors = boxes_per_location(BUILDERS["ssdlite320_mobilenet_v3_large"]["default_box_aspect_ratios"])
    head = SSDHead(backbone.out_channels, anchors, num_classes, lite=True, norm=norm)
    return SSD(backbone, head)
