"""The ``ssd`` family's metadata section: torchvision SSD300-VGG16 and SSDLite320-MobileNetV3.

==============================  ===========================  =========================================
key                             example (SSDLite320)         meaning
==============================  ===========================  =========================================
``scores_output``               ``cls_logits``               output ``[B, A, C]``: raw class logits
``boxes_output``                ``bbox_regression``          output ``[B, A, 4]``: raw box-coder deltas
``feature_map_sizes``           ``[[20, 20], ..., [1, 1]]``  ``[H, W]`` of each head level's feature map
                                                             (torchvision's order)
``default_box_aspect_ratios``   ``[[2, 3], ...]``            ``DefaultBoxGenerator.aspect_ratios``, per level
``default_box_scales``          ``[0.2, ..., 0.95, 1.0]``    its ``scales``: one per level, plus one
``default_box_steps``           ``[]``                       its ``steps`` (one per level), ``[]`` for None
``default_box_clip``            ``true``                     its ``clip`` (clamp the (w, h) pairs to [0, 1])
``box_coder_weights``           ``[10, 10, 5, 5]``           ``BoxCoder.weights``
``bbox_xform_clip``             ``4.135166556742356``        ``BoxCoder.bbox_xform_clip`` (``log(1000/16)``)
``score_thresh``                ``0.001``                    ``SSD.score_thresh``: default ``score_threshold``
``nms_thresh``                  ``0.55``                     ``SSD.nms_thresh``: default ``iou_threshold``
``detections_per_img``          ``300``                      ``SSD.detections_per_img``: default ``max_detections``
``topk_candidates``             ``300``                      ``SSD.topk_candidates`` (per label)
``background_class``            ``0``                        the head's background class (must be 0)
==============================  ===========================  =========================================

The transform is torchvision's fixed-size one: the image is stretched to the common ``input_size`` and
normalised with the common ``mean``/``std`` (0-255 scale, RGB; torchvision's values times 255, which the
runtime divides by 255 again: a float64 round trip that returns torchvision's values exactly for both
builders). Labels are the head's class indices: ``class_names`` has ``num_classes = C`` entries including
the background at 0, which is never returned. The class defaults are torchvision's ``SSD`` defaults;
:data:`BUILDERS` holds every key of its two builders (common keys included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import MetadataError
from ...metadata_section import MAX_INPUT_SIDE, MAX_LEVELS, check_int_list, check_number
from ..torchvision_section import TorchvisionSection, check_float_lists

MAX_DEFAULT_BOXES = 10_000_000


@dataclass(frozen=True)
class SSDSection(TorchvisionSection):
    """The ``ssd`` family's keys (see the module docstring)."""

    FAMILY: ClassVar[str] = "ssd"
    KINDS: ClassVar[dict[str, str]] = {
        **TorchvisionSection.KINDS,
        "feature_map_sizes": "int_lists",
        "default_box_aspect_ratios": "float_lists",
        "default_box_scales": "float_list",
        "default_box_steps": "float_list",
        "default_box_clip": "bool",
        "background_class": "int",
    }
    REQUIRED: ClassVar[tuple[str, ...]] = ("feature_map_sizes", "default_box_aspect_ratios", "default_box_scales")

    box_coder_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    detections_per_img: int = 200
    topk_candidates: int = 400
    feature_map_sizes: tuple[tuple[int, ...], ...] = ()
    default_box_aspect_ratios: tuple[tuple[float, ...], ...] = ()
    default_box_scales: tuple[float, ...] = ()
    default_box_steps: tuple[float, ...] = ()
    default_box_clip: bool = True
    background_class: int = 0

    def validate(self) -> None:
        """Raise :class:`MetadataError` naming the first field outside its range."""
        levels = len(self.default_box_aspect_ratios)
        if not 1 <= levels <= MAX_LEVELS:
            raise MetadataError(f"default_box_aspect_ratios must list 1..{MAX_LEVELS} levels, got {levels}")
        check_float_lists("default_box_aspect_ratios", self.default_box_aspect_ratios, 1e-6, 1e6, min_length=0)
        if len(self.feature_map_sizes) != levels:
            raise MetadataError(
                f"feature_map_sizes must give one [H, W] per level ({levels}), got {self.feature_map_sizes!r}"
            )
        for size in self.feature_map_sizes:
            check_int_list("feature_map_sizes entry", size, 1, MAX_INPUT_SIDE, length=2)
        if len(self.default_box_scales) != levels + 1:
            raise MetadataError(
                f"default_box_scales must hold {levels + 1} numbers (one per level, plus one), "
                f"got {len(self.default_box_scales)}"
            )
        for scale in self.default_box_scales:
            check_number("default_box_scales entry", scale, 0.0, 1e3)
        if len(self.default_box_steps) not in (0, levels):
            raise MetadataError(
                f"default_box_steps must be [] or one per level ({levels}), got {self.default_box_steps!r}"
            )
        for step in self.default_box_steps:
            check_number("default_box_steps entry", step, 1e-6, MAX_INPUT_SIDE)
        if not isinstance(self.default_box_clip, bool):
            raise MetadataError(f"default_box_clip must be true or false, got {self.default_box_clip!r}")
        if self.num_default_boxes > MAX_DEFAULT_BOXES:
            raise MetadataError(f"the default boxes number {self.num_default_boxes}, more than {MAX_DEFAULT_BOXES}")
        super().validate()
        if self.background_class != 0:
            raise MetadataError(f"background_class must be 0 (torchvision's SSD), got {self.background_class!r}")

    @property
    def feature_sizes(self) -> tuple[tuple[int, int], ...]:
        """``feature_map_sizes`` as ``(W, H)`` integer pairs (this package's order)."""
        return tuple((w, h) for h, w in self.feature_map_sizes)

    @property
    def num_default_boxes(self) -> int:
        """Rows of the head outputs: ``sum(W * H * (2 + 2 * len(ratios)))`` over the levels."""
        return sum(
            math.prod(size) * (2 + 2 * len(ratios))
            for size, ratios in zip(self.feature_map_sizes, self.default_box_aspect_ratios, strict=False)
        )


SECTION = SSDSection

BUILDERS: dict[str, dict[str, Any]] = {
    "ssd300_vgg16": {
        "input_size": (300, 300),
        "mean": (0.48235 * 255, 0.45882 * 255, 0.40784 * 255),
        "std": (1.0,) * 3,  # torchvision's 1 / 255, times 255
        "channel_order": "RGB",
        "feature_map_sizes": ((38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)),
        "default_box_aspect_ratios": ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
        "default_box_scales": (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
        "default_box_steps": (8, 16, 32, 64, 100, 300),
        "score_thresh": 0.01,
        "nms_thresh": 0.45,
        "detections_per_img": 200,
        "topk_candidates": 400,
    },
    "ssdlite320_mobilenet_v3_large": {
        "input_size": (320, 320),
        "mean": (0.5 * 255,) * 3,
        "std": (0.5 * 255,) * 3,
        "channel_order": "RGB",
        "feature_map_sizes": ((20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)),
        "default_box_aspect_ratios": ((2, 3),) * 6,
        "default_box_scales": (0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0),  # min_ratio 0.2, max_ratio 0.95
        "default_box_steps": (),
        "score_thresh": 0.001,
        "nms_thresh": 0.55,
        "detections_per_img": 300,
        "topk_candidates": 300,
    },
}
"""Every metadata key of torchvision's two SSD builders (``num_classes`` 91 by default), for exporters."""
