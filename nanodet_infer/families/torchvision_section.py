"""Metadata pieces shared by the torchvision families' sections (``ssd``, ``retinanet``); standard library only.

Both families carry torchvision's box coder (``coder_weights``, ``bbox_xform_clip``) and post-process
defaults (``score_threshold``, ``iou_threshold``, ``max_detections``, ``topk_candidates``) under the same
keys; this module checks them, and converts the common ``mean``/``std`` (0-255 scale) back to
torchvision's 0-1 values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import MetadataError
from ..metadata import check_number

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


def check_coder(weights: Sequence[float], clip: float) -> None:
    """Raise :class:`MetadataError` unless ``coder_weights`` are 4 positive numbers and the clip is in range."""
    if len(weights) != 4:
        raise MetadataError(f"coder_weights must be 4 numbers (wx, wy, ww, wh), got {list(weights)!r}")
    for weight in weights:
        check_number("coder_weights entry", weight, 1e-6, 1e6)
    check_number("bbox_xform_clip", clip, 0.0, MAX_EXP_ARGUMENT)


def check_postprocess_defaults(section: Any) -> None:
    """Raise :class:`MetadataError` unless the section's post-process defaults are in range."""
    check_number("score_threshold", section.score_threshold, 0.0, 1.0)
    check_number("iou_threshold", section.iou_threshold, 0.0, 1.0)
    for name in ("max_detections", "topk_candidates"):
        value = getattr(section, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOPK:
            raise MetadataError(f"{name} must be an integer in 1..{MAX_TOPK}, got {value!r}")


def torchvision_mean_std(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The common keys' 0-255 ``mean``/``std`` as torchvision's 0-1 ``image_mean``/``image_std`` (``v / 255``).

    The exporter writes torchvision's values times 255 (float64); dividing again returns them exactly for
    every builder default (tested), so the float32 normalisation is torchvision's.
    """
    return tuple(v / 255 for v in mean), tuple(v / 255 for v in std)
