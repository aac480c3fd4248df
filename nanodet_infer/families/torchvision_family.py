"""What the torchvision families (``ssd``, ``retinanet``) share around their maths: the head's two outputs, the
model checks, torchvision's transform and the final rescale. Each family adds its resize plan, its anchors and
its ``postprocess_detections`` (:meth:`TorchvisionFamily.anchors`, :meth:`TorchvisionFamily.detect`).

Outputs: ``scores_output`` ``[B, A, C]`` raw class logits and ``boxes_output`` ``[B, A, 4]`` raw box-coder
deltas, ``A`` anchors in torchvision's head order, ``C = num_classes``. Labels are the head's class indices.
These models always carry metadata (there is no foreign torchvision export to run): ``foreign_facts`` is empty.
The default settings (``score_threshold``, ``iou_threshold``, ``max_detections``) are the model's own, from
its metadata keys ``score_thresh``, ``nms_thresh``, ``detections_per_img`` (torchvision's builders of one
family differ); ``multi_label`` defaults to True as in torchvision.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import Backend, format_shape
from ..errors import IncompatibleModelError, InvalidArgumentError, MetadataError
from ..metadata import ModelMetadata
from ..model_spec import ModelSpec, output_index
from .base import MetadataOnlyFamily, Settings
from .torchvision_common import DetectionParams, ResizePlan, boxes_to_original, transform
from .torchvision_section import torchvision_mean_std


@dataclass(frozen=True)
class HeadLayout:
    """Indices of the class-logit and box-delta outputs among the backend's outputs."""

    scores_index: int
    boxes_index: int

    def split(self, outputs: Sequence[np.ndarray], meta: ModelMetadata) -> tuple[np.ndarray, np.ndarray]:
        """One image's outputs → ``(logits [A, C], deltas [A, 4])``; :class:`IncompatibleModelError` on bad shapes."""
        logits, deltas = outputs[self.scores_index], outputs[self.boxes_index]
        if logits.ndim != 2 or deltas.shape != (len(logits), 4) or logits.shape[1] != meta.num_classes:
            raise IncompatibleModelError(
                f"outputs {meta.scores_output!r} {logits.shape} and {meta.boxes_output!r} {deltas.shape} must be "
                f"[A, {meta.num_classes}] and [A, 4] per image"
            )
        return logits, deltas


DISPLAY_SCORE_THRESHOLD = 0.5
"""``nanodet-infer detect``'s score threshold for torchvision detectors (torchvision's own examples draw the
boxes above 0.5 or higher); evaluation keeps the builder's."""


class TorchvisionFamily(MetadataOnlyFamily):
    """The shared part of the ``ssd`` and ``retinanet`` families (see the module docstring)."""

    default_settings = {"multi_label": True}
    resize_rule: str
    """How torchvision resizes for this family (the only ``keep_ratio`` it honours), for error messages."""

    @abstractmethod
    def anchors(self, meta: ModelMetadata, canvas_size: Sequence[int]) -> np.ndarray:
        """float32 ``[A, 4]`` anchors of a ``canvas_size`` ``(W, H)`` input, in the head's order (cached)."""

    @abstractmethod
    def detect(
        self,
        logits: np.ndarray,
        deltas: np.ndarray,
        meta: ModelMetadata,
        canvas_size: Sequence[int],
        params: DetectionParams,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The family's ``postprocess_detections``: boxes in network-input pixels, scores, labels."""


    def check_settings(self, settings: Settings, metadata: ModelMetadata) -> None:
        if settings.keep_ratio != self.model_keep_ratio(metadata):
            raise InvalidArgumentError(
                f"keep_ratio={settings.keep_ratio} is not available for {self.name} models: {self.resize_rule}; "
                "leave keep_ratio unset"
            )

    def model_settings(self, metadata: ModelMetadata) -> Mapping[str, Any]:
        return {
            **self.default_settings,
            "score_threshold": metadata.score_thresh,
            "iou_threshold": metadata.nms_thresh,
            "max_detections": metadata.detections_per_img,
        }

    def display_settings(self, metadata: ModelMetadata) -> Mapping[str, Any]:
        """The builder's settings are its evaluation settings (SSDLite keeps scores above 0.001: up to 300 boxes
        of noise per image); ``detect`` shows the boxes scoring above :data:`DISPLAY_SCORE_THRESHOLD`."""
        return {**self.model_settings(metadata), "score_threshold": DISPLAY_SCORE_THRESHOLD}

    def check_model(self, backend: Backend, metadata: ModelMetadata) -> HeadLayout:
        if metadata.channel_order != "RGB":
            raise MetadataError(
                f"{self.name} models take RGB input (torchvision), but channel_order is {metadata.channel_order!r}"
            )
        layout = HeadLayout(
            output_index(backend, metadata.scores_output, "scores_output"),
            output_index(backend, metadata.boxes_output, "boxes_output"),
        )
        scores, boxes = backend.output_shapes[layout.scores_index], backend.output_shapes[layout.boxes_index]
        ranks_ok = len(scores) == 3 and len(boxes) == 3
        if not ranks_ok or scores[2] not in (None, metadata.num_classes) or boxes[2] not in (None, 4):
            raise IncompatibleModelError(
                f"outputs {metadata.scores_output!r} {format_shape(scores)} and {metadata.boxes_output!r} "
                f"{format_shape(boxes)} must be [B, A, {metadata.num_classes}] and [B, A, 4]"
            )
        width, height = backend.input_shape[3], backend.input_shape[2]
        if width is not None and height is not None:
            expected = len(self.anchors(metadata, (width, height)))
            for shape in (scores, boxes):
                if shape[1] is not None:
                    _check_anchor_count(shape[1], expected, (width, height))
        return layout

    def preprocess(self, image: np.ndarray, plan: ResizePlan, spec: ModelSpec) -> np.ndarray:
        mean, std = torchvision_mean_std(spec.metadata.mean, spec.metadata.std)
        return transform(image, plan, mean, std)

    def postprocess(
        self, outputs: Sequence[np.ndarray], plan: ResizePlan, spec: ModelSpec, settings: Settings
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, deltas = spec.layout.split(outputs, spec.metadata)
        _check_anchor_count(len(logits), len(self.anchors(spec.metadata, plan.canvas_size)), plan.canvas_size)
        meta = spec.metadata
        params = DetectionParams(
            plan.resized_size,
            settings.score_threshold,
            settings.iou_threshold,
            settings.max_detections,
            meta.topk_candidates,
            meta.box_coder_weights,
            settings.multi_label,
            meta.bbox_xform_clip,
        )
        boxes, scores, labels = self.detect(logits, deltas, meta, plan.canvas_size, params)
        return boxes_to_original(boxes, plan), scores, labels


def _check_anchor_count(rows: int, expected: int, canvas_size: Sequence[int]) -> None:
    """:class:`IncompatibleModelError` unless the head's ``rows`` equal the anchors of a ``canvas_size`` input."""
    if rows != expected:
        raise IncompatibleModelError(
            f"the model gives {rows} anchor rows for a {canvas_size[0]}x{canvas_size[1]} input, but its metadata's "
            f"anchor configuration gives {expected}; the file does not match its metadata"
        )
