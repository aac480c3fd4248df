"""A toy detector family for tests: proves the Detector runs a family it knows nothing about.

Model: ``_tiny_models.conv_model`` (``x [B,3,H,W]`` → ``y [B,2,H,W]``, dynamic). The toy resizes by stretching to
``input_size``, normalises with the metadata's mean/std, and reports one detection per image: the whole image,
class 0, score ``sigmoid(mean(y[0]))`` when above the threshold. Its metadata section has one key, ``output``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from nanodet_infer.errors import IncompatibleModelError, InvalidArgumentError, MetadataError
from nanodet_infer.families.base import Family, Settings
from nanodet_infer.metadata import MetadataSection
from nanodet_infer.model_spec import output_index
from nanodet_infer.preprocess import canvas_out, normalize_into


@dataclass(frozen=True)
class ToySection(MetadataSection):
    FAMILY: ClassVar[str] = "toy"
    KINDS: ClassVar[dict[str, str]] = {"output": "str"}
    REQUIRED: ClassVar[tuple[str, ...]] = ("output",)
    COMMON_DEFAULTS: ClassVar[dict[str, Any]] = {
        "input_size": (32, 16),
        "mean": (0.0, 0.0, 0.0),
        "std": (255.0, 255.0, 255.0),
        "channel_order": "RGB",
        "input_name": "x",
    }

    output: str = "y"

    def validate(self) -> None:
        if not self.output:
            raise MetadataError("output must name the model output")


@dataclass(frozen=True)
class ToyPlan:
    src_size: tuple[int, int]
    canvas_size: tuple[int, int]


class Toy(Family):
    name = "toy"
    default_settings = {"score_threshold": 0.25, "iou_threshold": 0.5, "max_detections": 10, "multi_label": False}
    foreign_facts = ()

    def check_facts(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        if any(value is not None for value in facts.values()):
            raise InvalidArgumentError(f"the toy family takes no model facts, got {sorted(facts)}")
        return {}

    def foreign_metadata(self, backend, facts):
        raise IncompatibleModelError("toy models always carry metadata")

    def check_model(self, backend, metadata) -> int:
        index = output_index(backend, metadata.output, "output")
        if len(backend.output_shapes[index]) != 4:
            raise IncompatibleModelError("the toy output must be [B, 2, H, W]")
        return index

    def model_keep_ratio(self, metadata) -> bool:
        return False

    def plan(self, image_size: Sequence[int], spec, settings: Settings) -> ToyPlan:
        return ToyPlan((int(image_size[0]), int(image_size[1])), spec.metadata.input_size)

    def preprocess(self, image: np.ndarray, plan: ToyPlan, spec) -> np.ndarray:
        meta = spec.metadata
        resized = cv2.resize(image, plan.canvas_size, interpolation=cv2.INTER_LINEAR)
        return normalize_into(resized, meta.mean, meta.std, meta.channel_order, canvas_out(plan.canvas_size, None))

    def postprocess(self, outputs, plan: ToyPlan, spec, settings: Settings):
        score = np.float32(1 / (1 + np.exp(-outputs[spec.layout][0].mean(dtype=np.float64))))
        if not score > settings.score_threshold:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        width, height = plan.src_size
        return np.array([[0, 0, width, height]], np.float32), np.array([score]), np.zeros(1, np.int64)


SECTION = ToySection
FAMILY = Toy()
