"""The ``detr`` family: facebookresearch/detr (:mod:`.section` for its keys).

Per image: :func:`.preprocess.eval_size` (the official eval size rule, ``min_size``/``max_size`` from the
metadata), Pillow's bilinear resize, ImageNet normalisation; the network sees the resized image unpadded
(``canvas_size`` = the resized size). The Detector batches only images of equal canvas size, so a batch
never pads and each image gets exactly the detections it gets alone (official DETR pads a batch and masks
the padding; without the mask, padding changes the answers, so this runtime never pads). Then
:func:`.postprocess.post_process` (official ``PostProcess``) and :func:`.postprocess.select`.

Defaults: detect keeps ``score > 0.7`` (the official demo's threshold), at most ``num_queries``; eval keeps
every query (``score > 0``, as the official COCO evaluation does). Boxes are clipped to the image unless the
metadata says ``clip_boxes: false``. ``iou_threshold`` is unused (DETR has no NMS) and ``multi_label`` is refused.
Class ids are COCO category ids (for 91-class checkpoints). Only exported models (with metadata) run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...backends.base import Backend, format_shape
from ...errors import IncompatibleModelError, InvalidArgumentError, MetadataError
from ...metadata import ModelMetadata
from ...model_spec import ModelSpec, output_index
from ..base import MetadataOnlyFamily, Settings
from .postprocess import post_process, select
from .preprocess import DetrPlan, eval_size, preprocess

DEMO_SCORE_THRESHOLD = 0.7


@dataclass(frozen=True)
class DetrLayout:
    """Indices of the logits and boxes outputs among the backend's outputs."""

    logits_index: int
    boxes_index: int


class Detr(MetadataOnlyFamily):
    """facebookresearch/detr (see the module docstring)."""

    name = "detr"
    default_settings = {"score_threshold": DEMO_SCORE_THRESHOLD, "iou_threshold": 0.5, "multi_label": False}
    display_name = "DETR"

    def model_settings(self, metadata: ModelMetadata) -> Mapping[str, Any]:
        return {**self.default_settings, "max_detections": metadata.num_queries}

    def evaluation_settings(self, metadata: ModelMetadata) -> Mapping[str, Any]:
        return {**self.model_settings(metadata), "score_threshold": 0.0}

    def model_keep_ratio(self, metadata: ModelMetadata) -> bool:
        return True

    def check_settings(self, settings: Settings, metadata: ModelMetadata) -> None:
        if not settings.keep_ratio:
            raise InvalidArgumentError(
                "keep_ratio=False is not available for DETR models: DETR keeps the aspect ratio; leave keep_ratio unset"
            )
        if settings.multi_label:
            raise InvalidArgumentError(
                "multi_label=True is not available for DETR models: each query predicts one class; leave it unset"
            )

    def check_model(self, backend: Backend, metadata: ModelMetadata) -> DetrLayout:
        if metadata.channel_order != "RGB":
            raise MetadataError(f"DETR models take RGB input, but channel_order is {metadata.channel_order!r}")
        if metadata.no_object_index != metadata.num_classes:
            raise MetadataError(
                f"no_object_index {metadata.no_object_index} must be num_classes ({metadata.num_classes}): "
                "DETR's no-object logit is the last"
            )
        if not metadata.dynamic_hw:
            raise IncompatibleModelError(
                "this DETR model has a static input size; DETR resizes each image to its own size: "
                "re-export it with dynamic H/W (nanodet-export's default for DETR)"
            )
        layout = DetrLayout(
            output_index(backend, metadata.logits_output, "logits_output"),
            output_index(backend, metadata.boxes_output, "boxes_output"),
        )
        logits, boxes = backend.output_shapes[layout.logits_index], backend.output_shapes[layout.boxes_index]
        queries = (None, metadata.num_queries)
        ok = (
            len(logits) == 3
            and len(boxes) == 3
            and logits[1] in queries
            and boxes[1] in queries
            and logits[2] in (None, metadata.num_classes + 1)
            and boxes[2] in (None, 4)
        )
        if not ok:
            raise IncompatibleModelError(
                f"outputs {metadata.logits_output!r} {format_shape(logits)} and {metadata.boxes_output!r} "
                f"{format_shape(boxes)} must be [B, {metadata.num_queries}, {metadata.num_classes + 1}] and "
                f"[B, {metadata.num_queries}, 4]"
            )
        return layout

    def plan(self, image_size: Sequence[int], spec: ModelSpec, settings: Settings) -> DetrPlan:
        src = (int(image_size[0]), int(image_size[1]))
        return DetrPlan(src, eval_size(src, spec.metadata.min_size, spec.metadata.max_size))

    def preprocess(self, image: np.ndarray, plan: DetrPlan, spec: ModelSpec) -> np.ndarray:
        meta = spec.metadata
        return preprocess(image, plan, [v / 255 for v in meta.mean], [v / 255 for v in meta.std])

    def postprocess(
        self, outputs: Sequence[np.ndarray], plan: DetrPlan, spec: ModelSpec, settings: Settings
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        layout: DetrLayout = spec.layout
        scores, labels, xyxy = post_process(outputs[layout.logits_index], outputs[layout.boxes_index], plan.src_size)
        if len(scores) and labels.max() >= spec.metadata.num_classes:
            raise IncompatibleModelError("DETR logits have more classes than the metadata's num_classes")
        return select(
            scores,
            labels,
            xyxy,
            plan.src_size,
            settings.score_threshold,
            settings.max_detections,
            spec.metadata.clip_boxes,
        )


FAMILY = Detr()
