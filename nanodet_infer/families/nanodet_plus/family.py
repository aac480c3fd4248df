"""The NanoDet-Plus family: upstream's warp-matrix resize, DFL decode at priors, class-aware multiclass NMS.

Defaults are upstream's demo settings: ``score_threshold=0.35``, ``iou_threshold=0.6``, ``max_detections=100``,
``multi_label=True``; its evaluator (``model.inference`` during validation) uses :data:`EVALUATION_SETTINGS`
(0.05 / 0.6 / 100, multi-label). ``keep_ratio`` follows the metadata (``keep_ratio`` key, default stretch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...metadata import ModelMetadata
from ...model_spec import ModelSpec
from ..base import LayoutModuleFamily, Settings
from . import layout
from .decode import make_priors
from .postprocess import postprocess
from .resize import InputPlan, boxes_to_original, plan_input, preprocess

EVALUATION_SETTINGS: Mapping[str, Any] = {
    "score_threshold": 0.05,
    "iou_threshold": 0.6,
    "max_detections": 100,
    "multi_label": True,
}
"""Upstream's evaluation settings (the head's ``test_cfg``: ``score_thr`` 0.05, NMS IoU 0.6, ``max_per_img`` 100)."""


class NanoDetPlus(LayoutModuleFamily):
    """NanoDet-Plus (see the module docstring and :mod:`.section` for its metadata keys)."""

    name = "nanodet-plus"
    default_settings = {"score_threshold": 0.35, "iou_threshold": 0.6, "max_detections": 100, "multi_label": True}
    foreign_facts = layout.FOREIGN_FACTS
    layout = layout
    evaluation = EVALUATION_SETTINGS

    def model_keep_ratio(self, metadata: ModelMetadata) -> bool:
        return metadata.keep_ratio

    def plan(self, image_size: Sequence[int], spec: ModelSpec, settings: Settings) -> InputPlan:
        meta = spec.metadata
        return plan_input(image_size, meta.input_size, keep_ratio=settings.keep_ratio, dynamic_hw=meta.dynamic_hw)

    def preprocess(self, image: np.ndarray, plan: InputPlan, spec: ModelSpec) -> np.ndarray:
        meta = spec.metadata
        return preprocess(
            image, plan, meta.mean, meta.std, channel_order=meta.channel_order, arithmetic=meta.resize_arithmetic
        )

    def postprocess(
        self, outputs: Sequence[np.ndarray], plan: InputPlan, spec: ModelSpec, settings: Settings
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        meta = spec.metadata
        scores, box_dist = spec.layout.split_outputs(outputs, meta)
        layout.check_num_priors(len(scores), plan.canvas_size, meta.strides)
        xyxy, kept_scores, class_ids = postprocess(
            scores,
            box_dist,
            make_priors(plan.canvas_size, meta.strides, meta.prior_offset),
            reg_max=meta.reg_max,
            score_threshold=settings.score_threshold,
            iou_threshold=settings.iou_threshold,
            max_detections=settings.max_detections,
            canvas_size=plan.canvas_size,
            multi_label=settings.multi_label,
        )
        return boxes_to_original(xyxy, plan), kept_scores, class_ids


FAMILY = NanoDetPlus()
