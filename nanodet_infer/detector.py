"""The :class:`Detector`: image(s) → :class:`~nanodet_infer.results.Detections`.

It only wires the stages together: :mod:`images` → :mod:`preprocess` → a backend → the output adapter of
:mod:`model_spec` → :mod:`postprocess` → boxes mapped back to the original image. All arithmetic lives in
those modules.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from .backends import create_backend
from .decode import make_priors
from .errors import InvalidArgumentError
from .images import ImageInput, load_image
from .metadata import ModelMetadata
from .model_spec import resolve_model_spec
from .postprocess import postprocess
from .preprocess import InputPlan, boxes_to_original, plan_input, preprocess
from .results import Detections, StageTimings


class Detector:
    """A NanoDet-Plus detector on ONNX Runtime or OpenVINO (CPU).

    ``model``: an ``.onnx`` file or an OpenVINO IR ``.xml``. Models exported by ``nanodet-export`` carry
    their facts; for a model without metadata (upstream's ``export_onnx.py``) pass them as keywords
    (``num_classes``, ``class_names``, ``reg_max=7``, ``strides=(8, 16, 32, 64)``, ``input_size=(W, H)``,
    ``mean``/``std`` (upstream's BGR defaults), ``keep_ratio=False``); ``num_classes`` and ``input_size``
    default to what the graph's static shapes imply.

    ``keep_ratio=None`` resizes as the model was trained (its metadata); ``True`` / ``False`` override it.
    ``multi_label=True`` keeps every class above the threshold per prior (upstream); ``False`` only the
    best class. ``num_threads`` / ``precision`` go to the backend (see :func:`create_backend`).

    One instance may be called from several threads at once; results equal serial calls.
    """

    def __init__(
        self,
        model: str | Path,
        backend: str = "auto",
        score_threshold: float = 0.35,
        iou_threshold: float = 0.6,
        max_detections: int = 100,
        num_threads: int | None = None,
        precision: str = "f32",
        keep_ratio: bool | None = None,
        multi_label: bool = True,
        **foreign_model_facts: Any,
    ) -> None:
        self.score_threshold = _unit_interval("score_threshold", score_threshold)
        self.iou_threshold = _unit_interval("iou_threshold", iou_threshold)
        if type(max_detections) is not int or max_detections < 1:
            raise InvalidArgumentError(f"max_detections must be an integer >= 1, got {max_detections!r}")
        if keep_ratio not in (None, True, False):
            raise InvalidArgumentError(f"keep_ratio must be None, True or False, got {keep_ratio!r}")
        self.max_detections = max_detections
        self.multi_label = bool(multi_label)
        self._backend = create_backend(model, backend, num_threads=num_threads, precision=precision)
        self._spec = resolve_model_spec(self._backend, **foreign_model_facts)
        meta = self._spec.metadata
        self.keep_ratio = meta.keep_ratio if keep_ratio is None else keep_ratio

    # ------------------------------------------------------------------ properties
    @property
    def metadata(self) -> ModelMetadata:
        """The verified model facts (``dynamic_batch`` / ``dynamic_hw`` as the loaded graph has them)."""
        return self._spec.metadata

    @property
    def backend_name(self) -> str:
        """``"onnxruntime"`` or ``"openvino"``."""
        return self._backend.name

    @property
    def input_size(self) -> tuple[int, int]:
        """``(W, H)`` the model was trained at; with ``keep_ratio`` and dynamic H/W the canvas may be smaller."""
        return self._spec.metadata.input_size

    def __repr__(self) -> str:
        meta = self.metadata
        return (
            f"Detector({self.backend_name}, {meta.num_classes} classes, input {meta.input_size[0]}x{meta.input_size[1]}"
            f"{' dynamic H/W' if meta.dynamic_hw else ''}, keep_ratio={self.keep_ratio})"
        )

    # ------------------------------------------------------------------ detection
    def __call__(self, image: ImageInput) -> Detections:
        """Detect objects in one image (a path, or a BGR/gray/BGRA ``uint8`` array).

        Returns :class:`Detections` with xyxy boxes in original-image pixels. ``timings.preprocess_ms``
        covers resize + normalisation (not reading/decoding a file).
        """
        return self.detect_batch([image])[0]

    def detect(self, image: ImageInput) -> Detections:
        """Same as calling the detector."""
        return self(image)

    def detect_batch(self, images: Sequence[ImageInput]) -> list[Detections]:
        """Detect objects in several images; one :class:`Detections` per image, in order.

        With a dynamic batch axis, images that share a canvas size run in one batched inference (with
        ``keep_ratio`` on a dynamic-H/W model, canvases differ per aspect ratio: each group of equal
        canvases is one batch, so results equal single-image calls and no extra padding is added).
        With a static batch the images run one by one. Each result's ``inference_ms`` is its share of its
        batch's time.
        """
        if isinstance(images, (str, Path, np.ndarray)):
            raise InvalidArgumentError("detect_batch takes a sequence of images; call the detector for one image")
        loaded = [load_image(image) for image in images]
        meta = self._spec.metadata
        plans = [
            plan_input(
                (img.shape[1], img.shape[0]), meta.input_size, keep_ratio=self.keep_ratio, dynamic_hw=meta.dynamic_hw
            )
            for img in loaded
        ]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, plan in enumerate(plans):
            groups.setdefault(plan.canvas_size, []).append(index)
        results: dict[int, Detections] = {}
        for canvas, indices in groups.items():
            for chunk in [indices] if meta.dynamic_batch else [[i] for i in indices]:
                batch = self._run_batch([loaded[i] for i in chunk], [plans[i] for i in chunk], canvas)
                results.update(zip(chunk, batch, strict=True))
        return [results[i] for i in range(len(loaded))]

    def _run_batch(self, images: list[np.ndarray], plans: list[InputPlan], canvas: tuple[int, int]) -> list[Detections]:
        meta = self._spec.metadata
        batch = np.empty((len(images), 3, canvas[1], canvas[0]), dtype=np.float32)
        preprocess_ms = []
        for slot, (image, plan) in enumerate(zip(images, plans, strict=True)):
            start = time.perf_counter()
            preprocess(image, plan, meta.mean, meta.std, channel_order=meta.channel_order, out=batch[slot])
            preprocess_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        outputs = self._backend.run(batch)
        inference_ms = (time.perf_counter() - start) * 1e3 / len(images)
        scores, boxes = self._spec.split_outputs(outputs)
        self._spec.check_num_priors(scores.shape[1], canvas)
        priors = make_priors(canvas, meta.strides, meta.prior_offset)
        results = []
        for slot, plan in enumerate(plans):
            start = time.perf_counter()
            xyxy, kept_scores, class_ids = postprocess(
                scores[slot],
                boxes[slot],
                priors,
                reg_max=meta.reg_max,
                score_threshold=self.score_threshold,
                iou_threshold=self.iou_threshold,
                max_detections=self.max_detections,
                canvas_size=canvas,
                multi_label=self.multi_label,
            )
            xyxy = boxes_to_original(xyxy, plan)
            postprocess_ms = (time.perf_counter() - start) * 1e3
            timings = StageTimings(preprocess_ms[slot], inference_ms, postprocess_ms)
            results.append(Detections(xyxy, kept_scores, class_ids, meta.class_names, plan.src_size, timings))
        return results


def _unit_interval(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)
