"""Metadata shared by the torchvision families' sections (``ssd``, ``retinanet``); standard library only.

Both families carry the head's output names, torchvision's box coder (``box_coder_weights``, ``bbox_xform_clip``)
and post-process attributes (``score_thresh``, ``nms_thresh``, ``detections_per_img``, ``topk_candidates``)
under the same keys (:class:`TorchvisionSection`), and both read the common ``mean``/``std`` (0-255 scale)
as torchvision's 0-1 values (:func:`torchvision_mean_std`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import MetadataError
from ..metadata_section import MetadataSection, check_number

BBOX_XFORM_CLIP = math.log(1000.0 / 16)
"""torchvision's default ``BoxCoder`` clamp on ``dw``/``dh`` (``log(1000 / 16)``)."""

IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)
"""torchvision's default ``image_mean`` / ``image_std`` (RGB), times 255 as the common keys hold them."""

MAX_EXP_ARGUMENT = 80.0
"""``bbox_xform_clip`` above this would let float32 ``exp`` overflow to inf."""

MAX_TOPK = 10_000_000


def check_float_lists(
    name: str, lists: Sequence[Sequence[float]], low: float, high: float, *, min_length: int = 1, max_length: int = 64
) -> None:
    """Raise :class:`MetadataError` unless every list holds ``min_length..max_length`` finite numbers in
    ``[low, high]``."""
    for values in lists:
        if not min_length <= len(values) <= max_length:
            raise MetadataError(
                f"each list of {name} must hold {min_length}..{max_length} numbers, got {list(values)!r}"
            )
        for value in values:
            check_number(f"{name} entry", value, low, high)


@dataclass(frozen=True)
class TorchvisionSection(MetadataSection):
    """The keys both torchvision families carry (subclasses add theirs and may change the defaults).

    ``scores_output`` / ``boxes_output``: names of the ``[B, A, C]`` logits and ``[B, A, 4]`` deltas outputs;
    ``box_coder_weights`` / ``bbox_xform_clip``: torchvision's ``BoxCoder``; ``score_thresh``, ``nms_thresh``,
    ``detections_per_img``, ``topk_candidates``: the detector's attributes of those names (torchvision's
    names), the first three being the defaults of the ``score_threshold``, ``iou_threshold`` and
    ``max_detections`` settings.
    """

    KINDS: ClassVar[dict[str, str]] = {
        "scores_output": "str",
        "boxes_output": "str",
        "box_coder_weights": "float_list",
        "bbox_xform_clip": "float",
        "score_thresh": "float",
        "nms_thresh": "float",
        "detections_per_img": "int",
        "topk_candidates": "int",
    }
    COMMON_DEFAULTS: ClassVar[dict[str, Any]] = {
        "mean": IMAGENET_MEAN_255,
        "std": IMAGENET_STD_255,
        "channel_order": "RGB",
        "input_name": "images",
    }

    scores_output: str = "cls_logits"
    boxes_output: str = "bbox_regression"
    box_coder_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    bbox_xform_clip: float = BBOX_XFORM_CLIP
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 300
    topk_candidates: int = 1000

    def validate(self) -> None:
        """Raise :class:`MetadataError` naming the first shared field outside its range."""
        if len(self.box_coder_weights) != 4:
            raise MetadataError(
                f"box_coder_weights must be 4 numbers (wx, wy, ww, wh), got {list(self.box_coder_weights)!r}"
            )
        for weight in self.box_coder_weights:
            check_number("box_coder_weights entry", weight, 1e-6, 1e6)
        check_number("bbox_xform_clip", self.bbox_xform_clip, 0.0, MAX_EXP_ARGUMENT)
        check_number("score_thresh", self.score_thresh, 0.0, 1.0)
        check_number("nms_thresh", self.nms_thresh, 0.0, 1.0)
        for name in ("detections_per_img", "topk_candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOPK:
                raise MetadataError(f"{name} must be an integer in 1..{MAX_TOPK}, got {value!r}")


def torchvision_mean_std(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The common keys' 0-255 ``mean``/``std`` as torchvision's 0-1 ``image_mean``/``image_std`` (``v / 255``).

    The exporter writes torchvision's values times 255 (float64); dividing again returns them exactly for
    every builder default (tested), so the float32 normalisation is torchvision's.
    """
    return tuple(v / 255 for v in mean), tuple(v / 255 for v in std)
