"""torchvision's SSD300-VGG16 and SSDLite320-MobileNetV3-Large as deploy graphs: backbone + head.

``SSD(x)`` returns torchvision's raw head outputs for an already transformed input ``x [N, 3, H, W]``:
``cls_logits [N, A, C]`` (logits; softmax over C, class 0 = background) and ``bbox_regression [N, A, 4]``
(box-coder deltas, weights (10, 10, 5, 5)). Rows: level by level, then y, then x, then the default boxes
of a location. The transform, default boxes and post-processing are runtime facts (:data:`SSD300_FACTS`,
:data:`SSDLITE320_FACTS`), not graph nodes. ``state_dict`` keys are torchvision's (``backbone.*``,
``head.classification_head.module_list.*``, ``head.regression_head.module_list.*``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..torchvision_common import NormChoice, conv_norm_act, flatten_level
from .mobilenet_v3 import SSDLiteFeatureExtractorMobileNet
from .vgg import OUT_CHANNELS as VGG_OUT_CHANNELS
from .vgg import SSDFeatureExtractorVGG

BBOX_XFORM_CLIP = math.log(1000.0 / 16)

#: torchvision ``ssd300_vgg16`` defaults (builder, ``SSD.__init__``, ``DefaultBoxGenerator``).
SSD300_FACTS: dict[str, Any] = {
    "builder": "ssd300_vgg16",
    "size": (300, 300),
    "image_mean": (0.48235, 0.45882, 0.40784),
    "image_std": (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0),
    "aspect_ratios": ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    "scales": (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
    "min_ratio": 0.15,
    "max_ratio": 0.9,
    "steps": (8, 16, 32, 64, 100, 300),
    "clip": True,
    "feature_map_sizes": ((38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)),
    "box_coder_weights": (10.0, 10.0, 5.0, 5.0),
    "score_thresh": 0.01,
    "nms_thresh": 0.45,
    "detections_per_img": 200,
    "topk_candidates": 400,
}

#: torchvision ``ssdlite320_mobilenet_v3_large`` defaults.
SSDLITE320_FACTS: dict[str, Any] = {
    "builder": "ssdlite320_mobilenet_v3_large",
    "size": (320, 320),
    "image_mean": (0.5, 0.5, 0.5),
    "image_std": (0.5, 0.5, 0.5),
    "aspect_ratios": ((2, 3),) * 6,
    "scales": None,
    "min_ratio": 0.2,
    "max_ratio": 0.95,
    "steps": None,
    "clip": True,
    "feature_map_sizes": ((20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)),
    "box_coder_weights": (10.0, 10.0, 5.0, 5.0),
    "score_thresh": 0.001,
    "nms_thresh": 0.55,
    "detections_per_img": 300,
    "topk_candidates": 300,
}


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
    """``x [N, 3, H, W]`` (transformed) → ``(cls_logits [N, A, C], bbox_regression [N, A, 4])``.

    ``facts`` are the builder's transform, default-box and post-process defaults (for the exporter).
    """

    def __init__(self, backbone: nn.Module, head: SSDHead, facts: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.facts = facts

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))


def ssd300_vgg16(num_classes: int = 91) -> SSD:
    """torchvision ``ssd300_vgg16`` (VGG16 without BatchNorm; nothing to assume about norms)."""
    anchors = boxes_per_location(SSD300_FACTS["aspect_ratios"])
    head = SSDHead(VGG_OUT_CHANNELS, anchors, num_classes, lite=False)
    return SSD(SSDFeatureExtractorVGG(), head, SSD300_FACTS)


def ssdlite320_mobilenet_v3_large(
    num_classes: int = 91, *, reduced_tail: bool = True, norm: NormChoice | None = None
) -> SSD:
    """torchvision ``ssdlite320_mobilenet_v3_large``; ``norm`` defaults to its ``BatchNorm2d(eps=0.001)``."""
    norm = norm or NormChoice("batchnorm", 0.001)
    backbone = SSDLiteFeatureExtractorMobileNet(norm.layer(), reduced_tail=reduced_tail)
    anchors = boxes_per_location(SSDLITE320_FACTS["aspect_ratios"])
    head = SSDHead(backbone.out_channels, anchors, num_classes, lite=True, norm=norm)
    return SSD(backbone, head, SSDLITE320_FACTS)
