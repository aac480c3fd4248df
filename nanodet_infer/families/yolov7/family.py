"""The YOLOv7 family: upstream's letterbox, the deploy model's decoded rows, ``non_max_suppression``, ``scale_coords``.

Defaults are detect.py's: ``score_threshold=0.25`` (``--conf-thres``; obj > it, then obj x cls > it),
``iou_threshold=0.45``, ``max_detections=300`` (upstream's ``max_det``), ``multi_label=False`` (best class per
box); test.py evaluates with :data:`EVALUATION_SETTINGS` (0.001 / 0.65, multi-label). NMS is class-aware
with upstream's ``max_wh`` offset, never agnostic here.

``keep_ratio=True`` (the model's own resize) letterboxes as detect.py does: the minimal rectangle (a multiple of
the largest stride, one canvas per aspect ratio; ``input_size`` rounded up to a multiple of it first, as
``check_img_size`` does) on a dynamic-H/W model, the square ``input_size`` letterbox on a static one; boxes
map back with ``scale_coords``. ``keep_ratio=False`` stretches to ``input_size``
(upstream's ``scaleFill``) and maps back per axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...metadata import ModelMetadata
from ...model_spec import ModelSpec
from ..base import LayoutModuleFamily, Settings
from . import layout
from .postprocess import boxes_to_original, non_max_suppression
from .preprocess import LetterboxPlan, letterbox_input, plan_letterbox

EVALUATION_SETTINGS: Mapping[str, Any] = {
    "score_threshold": 0.001,
    "iou_threshold": 0.65,
    "max_detections": 300,
    "multi_label": True,
}
"""test.py's settings (mAP evaluation)."""


class YoloV7(LayoutModuleFamily):
    """YOLOv7 (see the module docstring and :mod:`.section` for its metadata keys)."""

    name = "yolov7"
    default_settings = {"score_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 300, "multi_label": False}
    foreign_facts = layout.FOREIGN_FACTS
    layout = layout
    evaluation = EVALUATION_SETTINGS

    def model_keep_ratio(self, metadata: ModelMetadata) -> bool:
        return True

    def plan(self, image_size: Sequence[int], spec: ModelSpec, settings: Settings) -> LetterboxPlan:
        meta = spec.metadata
        if not settings.keep_ratio:
            return plan_letterbox(image_size, meta.input_size, auto=False, scale_fill=True)
        if not meta.dynamic_hw:
            return plan_letterbox(image_size, meta.input_size, auto=False)
        # detect.py's check_img_size: the target rounded up to a multiple of the largest stride
        target = tuple(-(-side // meta.max_stride) * meta.max_stride for side in meta.input_size)
        return plan_letterbox(image_size, target, stride=meta.max_stride, auto=True)

    def preprocess(self, image: np.ndarray, plan: LetterboxPlan, spec: ModelSpec) -> np.ndarray:
        meta = spec.metadata
        return letterbox_input(
            image, plan, color=meta.letterbox_color, mean=meta.mean, std=meta.std, channel_order=meta.channel_order
        )

    def postprocess(
        self, outputs: Sequence[np.ndarray], plan: LetterboxPlan, spec: ModelSpec, settings: Settings
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = layout.predictions(outputs, spec.layout, plan.canvas_size, spec.metadata)
        boxes, scores, class_ids = non_max_suppression(
            rows,
            settings.score_threshold,
            settings.iou_threshold,
            multi_label=settings.multi_label,
            max_det=settings.max_detections,
        )
        return boxes_to_original(boxes, plan), scores, class_ids


FAMILY = YoloV7()
