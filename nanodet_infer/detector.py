"""The :class:`Detector`: image(s) → :class:`~nanodet_infer.results.Detections`.

It only wires the stages together: :mod:`images` → :mod:`preprocess` → a backend → the output adapter of
:mod:`model_spec` → :mod:`postprocess` → boxes mapped back to the original image. All arithmetic lives in
those modules.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any

import numpy as np

from .backends import create_backend
from .decode import make_priors
from .errors import InvalidArgumentError
from .images import ImageInput, load_image
from .metadata import ModelMetadata
from .model_spec import check_facts, check_flag, check_positive_int, resolve_model_spec
from .postprocess import postprocess
from .preprocess import InputPlan, boxes_to_original, plan_input, preprocess
from .results import Detections, StageTimings

MAX_BATCH = 32
"""Default ``max_batch`` of :meth:`Detector.detect_batch`: at most this many images per inference (dynamic batch)."""


@dataclass(frozen=True)
class _Settings:
    """One consistent set of a detector's tunable settings; every call reads it once, at its start.

    ``keep_ratio=None`` means "as the model was trained" until :meth:`resolved` replaces it.
    """

    score_threshold: float
    iou_threshold: float
    max_detections: int
    keep_ratio: bool | None
    multi_label: bool

    @classmethod
    def checked(
        cls, *, score_threshold: Any, iou_threshold: Any, max_detections: Any, keep_ratio: Any, multi_label: Any
    ) -> _Settings:
        """Validate the settings; raise :class:`InvalidArgumentError` naming the first bad one."""
        return cls(
            score_threshold=_unit_interval("score_threshold", score_threshold),
            iou_threshold=_unit_interval("iou_threshold", iou_threshold),
            max_detections=check_positive_int("max_detections", max_detections),
            keep_ratio=None if keep_ratio is None else check_flag("keep_ratio", keep_ratio),
            multi_label=check_flag("multi_label", multi_label),
        )

    def resolved(self, model_keep_ratio: bool) -> _Settings:
        """These settings with ``keep_ratio=None`` replaced by the model's own."""
        if self.keep_ratio is not None:
            return self
        return _Settings(**{**asdict(self), "keep_ratio": model_keep_ratio})


@dataclass(frozen=True)
class _Prepared:
    """One image of a :meth:`Detector.detect_batch` call, preprocessed and waiting for its batch."""

    index: int
    plan: InputPlan
    tensor: np.ndarray
    preprocess_ms: float


class _Setting:
    """A :class:`Detector` setting: reading gives the value in use; assigning validates the new value first."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, detector: Detector | None, owner: type | None = None) -> Any:
        return self if detector is None else getattr(detector._settings, self.name)

    def __set__(self, detector: Detector, value: Any) -> None:
        detector._change_setting(self.name, value)


class Detector:
    """A NanoDet-Plus detector on ONNX Runtime or OpenVINO (CPU).

    ``model``: an ``.onnx`` file or an OpenVINO IR ``.xml``. Models exported by ``nanodet-export`` carry
    their facts; for a model without metadata (upstream's ``export_onnx.py``) pass them as keywords
    (``num_classes``, ``class_names``, ``reg_max=7``, ``strides=(8, 16, 32, 64)``, ``input_size=(W, H)``,
    ``mean``/``std`` (upstream's BGR defaults), ``keep_ratio=False``); ``num_classes`` and ``input_size``
    default to what the graph's static shapes imply.

    ``keep_ratio=None`` resizes as the model was trained (its metadata); ``True`` / ``False`` override it.
    ``multi_label=True`` keeps every class above the threshold per prior (upstream); ``False`` only the
    best class. ``num_threads`` / ``precision`` go to the backend (see :func:`create_backend`), and so does
    ``allow_control_flow``: ``True`` accepts a model holding ``Loop`` / ``Scan`` / ``TensorIterator`` (refused
    by default, since such a graph can hang the engine), for foreign models you trust.

    The five settings (``score_threshold``, ``iou_threshold``, ``max_detections``, ``keep_ratio``,
    ``multi_label``) are attributes that can be reassigned: a new value is validated like the constructor
    argument (:class:`InvalidArgumentError`) and applies to calls that start afterwards; a call in progress
    keeps the settings it started with. Changing them is cheap, building another ``Detector`` is not (it
    loads and compiles the model again).

    One instance may be called from several threads at once; results equal serial calls.
    """

    score_threshold = _Setting("A (prior, class) pair is a candidate when its score is > this; in [0, 1].")
    iou_threshold = _Setting("NMS suppresses a box whose IoU with a kept box of its class is > this; in [0, 1].")
    max_detections = _Setting("At most this many detections per image (the best scores); an integer >= 1.")
    keep_ratio = _Setting("True: letterbox; False: stretch. Assigning None restores the model's own choice.")
    multi_label = _Setting("True: every class above the threshold per prior (upstream); False: the best one.")

    def __init__(
        self,
        model: str | os.PathLike,
        backend: str = "auto",
        score_threshold: float = 0.35,
        iou_threshold: float = 0.6,
        max_detections: int = 100,
        num_threads: int | None = None,
        precision: str = "f32",
        keep_ratio: bool | None = None,
        multi_label: bool = True,
        allow_control_flow: bool = False,
        **foreign_model_facts: Any,
    ) -> None:
        settings = _Settings.checked(
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            keep_ratio=keep_ratio,
            multi_label=multi_label,
        )
        facts = check_facts(foreign_model_facts)
        self._backend = create_backend(
            model, backend, num_threads=num_threads, precision=precision, allow_control_flow=allow_control_flow
        )
        self._spec = resolve_model_spec(self._backend, **facts)
        self._settings_lock = threading.Lock()
        self._settings = settings.resolved(self._spec.metadata.keep_ratio)

    def _change_setting(self, name: str, value: Any) -> None:
        """Validate and apply one setting (the other settings of the snapshot stay as they are)."""
        with self._settings_lock:
            changed = _Settings.checked(**{**asdict(self._settings), name: value})
            self._settings = changed.resolved(self._spec.metadata.keep_ratio)

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

    def detect_batch(self, images: Iterable[ImageInput], max_batch: int = MAX_BATCH) -> list[Detections]:
        """Detect objects in several images (a list, or any iterable); one :class:`Detections` per image, in order.

        Images are read and preprocessed one at a time; only their network inputs wait for a batch. With a
        dynamic batch axis, images that share a canvas size run together, at most ``max_batch``
        (:data:`MAX_BATCH`) per inference (with ``keep_ratio`` on a dynamic-H/W model canvases differ per
        aspect ratio: each canvas size collects its own batches, so no image is padded to a larger canvas
        and results equal single-image calls). Memory is thus bounded by ``max_batch`` inputs per distinct
        canvas size however many images are given. With a static batch the images run one by one. Each
        result's ``inference_ms`` is its share of its batch's time.
        """
        if isinstance(images, (str, bytes, os.PathLike, np.ndarray)) or not isinstance(images, Iterable):
            raise InvalidArgumentError(
                f"detect_batch takes a sequence of images (e.g. a list), got {type(images).__name__}; "
                "call the detector for one image"
            )
        max_batch = check_positive_int("max_batch", max_batch)
        limit = max_batch if self._spec.metadata.dynamic_batch else 1
        settings = self._settings
        results: dict[int, Detections] = {}
        waiting: dict[tuple[int, int], list[_Prepared]] = {}
        for index, image in enumerate(images):
            item = self._prepare(index, image, settings)
            group = waiting.setdefault(item.plan.canvas_size, [])
            group.append(item)
            if len(group) == limit:
                results.update(self._run_batch(waiting.pop(item.plan.canvas_size), settings))
        for group in waiting.values():
            results.update(self._run_batch(group, settings))
        return [results[i] for i in range(len(results))]

    def _prepare(self, index: int, image: ImageInput, settings: _Settings) -> _Prepared:
        """Read/validate ``image``, plan its resize and fill its network input ``[3, H, W]``."""
        loaded = load_image(image)
        meta = self._spec.metadata
        size = (loaded.shape[1], loaded.shape[0])
        plan = plan_input(size, meta.input_size, keep_ratio=settings.keep_ratio, dynamic_hw=meta.dynamic_hw)
        start = time.perf_counter()
        tensor = preprocess(loaded, plan, meta.mean, meta.std, channel_order=meta.channel_order)
        return _Prepared(index, plan, tensor, (time.perf_counter() - start) * 1e3)

    def _run_batch(self, group: list[_Prepared], settings: _Settings) -> dict[int, Detections]:
        """One inference on ``group`` (all on one canvas), then the post-process per image; keyed by index."""
        meta = self._spec.metadata
        canvas = group[0].plan.canvas_size
        batch = group[0].tensor[None] if len(group) == 1 else np.stack([item.tensor for item in group])
        start = time.perf_counter()
        outputs = self._backend.run(batch)
        inference_ms = (time.perf_counter() - start) * 1e3 / len(group)
        scores, boxes = self._spec.split_outputs(outputs)
        self._spec.check_num_priors(scores.shape[1], canvas)
        priors = make_priors(canvas, meta.strides, meta.prior_offset)
        results = {}
        for slot, item in enumerate(group):
            start = time.perf_counter()
            xyxy, kept_scores, class_ids = postprocess(
                scores[slot],
                boxes[slot],
                priors,
                reg_max=meta.reg_max,
                score_threshold=settings.score_threshold,
                iou_threshold=settings.iou_threshold,
                max_detections=settings.max_detections,
                canvas_size=canvas,
                multi_label=settings.multi_label,
            )
            xyxy = boxes_to_original(xyxy, item.plan)
            timings = StageTimings(item.preprocess_ms, inference_ms, (time.perf_counter() - start) * 1e3)
            size = item.plan.src_size
            results[item.index] = Detections(xyxy, kept_scores, class_ids, meta.class_names, size, timings)
        return results


def _unit_interval(name: str, value: Any) -> float:
    """``value`` as a float; any real number (numpy's too) in ``[0, 1]``, not a bool or NaN."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)
