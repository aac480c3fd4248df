"""The ``ssd`` family: torchvision's SSD300-VGG16 and SSDLite320-MobileNetV3 (:mod:`.section` for its keys).

The image is stretched to the fixed ``input_size`` (torchvision's ``fixed_size``; ``keep_ratio=True`` is not
torchvision's SSD and is refused when the detector is built or the setting assigned), default boxes come from
:mod:`.default_boxes`, detections from :mod:`.postprocess`; the default settings are the model's builder's
(metadata).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...metadata import ModelMetadata
from ...model_spec import ModelSpec
from ..base import Settings
from ..torchvision_common import DetectionParams, ResizePlan, fixed_size_plan
from ..torchvision_family import TorchvisionFamily
from .default_boxes import default_boxes
from .postprocess import postprocess


class SSD(TorchvisionFamily):
    """torchvision SSD / SSDLite (see the module docstring)."""

    name = "ssd"
    resize_rule = "torchvision's SSD stretches every image to its fixed size"

    def model_keep_ratio(self, metadata: ModelMetadata) -> bool:
        return False

    def plan(self, image_size: Sequence[int], spec: ModelSpec, settings: Settings) -> ResizePlan:
        return fixed_size_plan(image_size, spec.metadata.input_size)

    def anchors(self, meta: ModelMetadata, canvas_size: Sequence[int]) -> np.ndarray:
        return default_boxes(
            meta.feature_sizes,
            canvas_size,
            meta.default_box_aspect_ratios,
            meta.default_box_scales,
            meta.default_box_steps or None,
            meta.default_box_clip,
        )

    def detect(
        self,
        logits: np.ndarray,
        deltas: np.ndarray,
        meta: ModelMetadata,
        canvas_size: Sequence[int],
        params: DetectionParams,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return postprocess(logits, deltas, self.anchors(meta, canvas_size), params)


FAMILY = SSD()
