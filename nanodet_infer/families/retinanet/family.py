"""The ``retinanet`` family: torchvision's RetinaNet-ResNet50-FPN (:mod:`.section` for its keys).

The image keeps its aspect ratio (``GeneralizedRCNNTransform``'s min/max-size rule; ``keep_ratio=False`` is
not torchvision's RetinaNet and is refused when the detector is built or the setting assigned) and is padded
to ``size_divisible`` when the model has dynamic H/W, as torchvision does. A model exported with a static input
uses it as a fixed canvas: the rule's scale is further limited so the image fits, and the result equals
torchvision's whenever torchvision would pad to that same canvas. Anchors come from :mod:`.anchors` (cached per
canvas), detections from :mod:`.postprocess`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...metadata import ModelMetadata
from ...model_spec import ModelSpec
from ..base import Settings
from ..torchvision_common import DetectionParams, ResizePlan, min_max_size_plan
from ..torchvision_family import TorchvisionFamily
from .anchors import anchors
from .postprocess import postprocess


class RetinaNet(TorchvisionFamily):
    """torchvision RetinaNet (see the module docstring)."""

    name = "retinanet"
    resize_rule = "torchvision's RetinaNet keeps the aspect ratio"

    def model_keep_ratio(self, metadata: ModelMetadata) -> bool:
        return True

    def plan(self, image_size: Sequence[int], spec: ModelSpec, settings: Settings) -> ResizePlan:
        meta = spec.metadata
        canvas = None if meta.dynamic_hw else meta.input_size
        return min_max_size_plan(image_size, meta.min_size, meta.max_size, meta.size_divisible, canvas=canvas)

    def anchors(self, meta: ModelMetadata, canvas_size: Sequence[int]) -> np.ndarray:
        return self._anchors(meta, canvas_size)[0]

    @staticmethod
    def _anchors(meta: ModelMetadata, canvas_size: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
        return anchors(canvas_size, meta.strides, meta.anchor_sizes, meta.anchor_aspect_ratios)

    def detect(
        self,
        logits: np.ndarray,
        deltas: np.ndarray,
        meta: ModelMetadata,
        canvas_size: Sequence[int],
        params: DetectionParams,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return postprocess(logits, deltas, *self._anchors(meta, canvas_size), params)


FAMILY = RetinaNet()
