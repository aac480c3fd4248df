"""The :class:`Detector`: image(s) → :class:`~nanodet_infer.results.Detections`, for any registered family.

It only wires the stages together: :mod:`images` → the family's resize plan and preprocess → a backend →
the family's postprocess (boxes in original-image pixels) → :class:`Detections`. All arithmetic lives in the
family's folder (:mod:`nanodet_infer.families`) and the shared primitives; nothing here depends on the family.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .arguments import (
    PRECISIONS,
    SETTING_CHECKS,
    check_choice,
    check_flag,
    check_model_path,
    check_num_threads,
    check_positive_int,
    check_setting,
)
from .backends import BACKENDS, Backend, create_backend
from .errors import IncompatibleModelError, InvalidArgumentError
from .families import DEFAULT_FAMILY, family_names, get_family
from .families.base import Plan, Settings
from .images import MAX_IMAGE_PIXELS, ImageInput, load_image
from .metadata import ModelMetadata
from .model_spec import resolve_model_spec
from .results import Detections, StageTimings

Inference = Callable[[np.ndarray], Sequence[np.ndarray]]
"""An engine's inference: network input float32 ``[B, 3, H, W]`` → the model's outputs (batch axis first)."""

MAX_BATCH = 32
"""Default ``max_batch`` of :meth:`Detector.detect_batch`: at most this many images per inference (dynamic batch)."""

MAX_BATCH_BYTES = 256 * 2**20
"""Memory budget of the network inputs waiting in :meth:`Detector.detect_batch` (float32 ``[3, H, W]`` each), 256 MiB:
a batch holds at most as many images as fit (at least one), so large canvases run in smaller batches, and waiting
groups of different canvas sizes together stay within it."""

MAX_STREAM_BYTES = 512 * 2**20
"""Read-ahead budget of :meth:`Detector.stream` in bytes (512 MiB): array images waiting for their turn beyond it are
not taken from the source until earlier results are yielded (at least one image is always in flight)."""

MAX_INPUT_BYTES = 2**30
"""Largest single network input (float32 ``[3, H, W]``), 1 GiB: a canvas above it is refused."""


@dataclass(frozen=True)
class _LoadArguments:
    """What builds the engine (and bounds the image files it reads); a pickled :class:`Detector` carries these and
    loads the model again."""

    model: Path
    backend: str
    num_threads: int | None
    precision: str
    model_family: str | None
    allow_control_flow: bool = False
    facts: dict[str, Any] = field(default_factory=dict)
    max_image_pixels: int = MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class _Prepared:
    """One image of a :meth:`Detector.detect_batch` call, preprocessed and waiting for its batch."""

    index: int
    plan: Plan
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
    """An object detector on ONNX Runtime or OpenVINO (CPU), for any family in :mod:`nanodet_infer.families`.

    ``model``: an ``.onnx`` file or an OpenVINO IR ``.xml`` (a ``str`` or ``os.PathLike``). Models exported by
    ``nanodet-export`` carry their facts, including ``model_family``; for a model without metadata name its
    family with ``model_family`` (default ``"nanodet-plus"``) and pass the facts it lacks as keywords (the
    family's ``foreign_facts``; for NanoDet-Plus ``num_classes``, ``class_names``, ``reg_max=7``,
    ``strides=(8, 16, 32, 64)``, ``input_size=(W, H)``, ``mean``/``std``, ``keep_ratio=False``).

    The five settings default to the family's defaults (``None``); ``keep_ratio=None`` resizes as the model
    was trained. ``multi_label=True`` keeps every class above the threshold per box; ``False`` only the best
    class. ``num_threads`` (``1..1024``) / ``precision`` (``"f32"``, ``"bf16"``, ``"f16"``) go to the backend
    (see :func:`create_backend`), and so does ``allow_control_flow``: ``True`` accepts a model holding ``Loop`` /
    ``Scan`` / ``TensorIterator`` (refused by default, since such a graph can hang the engine), for foreign models
    you trust. ``max_image_pixels`` (default :data:`~nanodet_infer.images.MAX_IMAGE_PIXELS`, 100 megapixels) is the
    largest width x height an image *file* may declare in its header: a larger one raises
    :class:`~nanodet_infer.errors.ImageTooLargeError` before it is decoded (a decoder bomb); arrays are not
    limited. Bad arguments raise :class:`InvalidArgumentError` before the model loads.

    The settings (``score_threshold``, ``iou_threshold``, ``max_detections``, ``keep_ratio``, ``multi_label``)
    are attributes that can be reassigned: a new value is validated like the constructor argument
    (:class:`InvalidArgumentError`; ``None`` restores the default) and applies to calls that start afterwards;
    a call in progress keeps the settings it started with. Changing them is cheap, building another
    ``Detector`` is not (it loads and compiles the model again).

    One instance may be called from several threads at once; results equal serial calls. A detector pickles
    (e.g. for ``spawn`` multiprocessing): the model path, loading options and settings travel, and the engine
    is loaded again from that path on unpickling.
    """

    score_threshold = _Setting("A (box, class) pair is a candidate when its score is > this; in [0, 1].")
    iou_threshold = _Setting("NMS suppresses a box whose IoU with a kept box of its class is > this; in [0, 1].")
    max_detections = _Setting("At most this many detections per image (the best scores); an integer >= 1.")
    keep_ratio = _Setting("True: letterbox; False: stretch. Assigning None restores the model's own choice.")
    multi_label = _Setting("True: every class above the threshold per box; False: the best one.")

    def __init__(
        self,
        model: str | os.PathLike,
        backend: str = "auto",
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        num_threads: int | None = None,
        precision: str = "f32",
        keep_ratio: bool | None = None,
        multi_label: bool | None = None,
        model_family: str | None = None,
        allow_control_flow: bool = False,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        **foreign_model_facts: Any,
    ) -> None:
        requested = {
            "score_threshold": check_setting("score_threshold", score_threshold),
            "iou_threshold": check_setting("iou_threshold", iou_threshold),
            "max_detections": check_setting("max_detections", max_detections),
            "keep_ratio": check_setting("keep_ratio", keep_ratio),
            "multi_label": check_setting("multi_label", multi_label),
        }
        if model_family is not None:
            check_choice("model_family", model_family, family_names())
        arguments = _LoadArguments(
            model=check_model_path(model),
            backend=check_choice("backend", backend, BACKENDS),
            num_threads=check_num_threads(num_threads),
            precision=check_choice("precision", precision, PRECISIONS),
            model_family=model_family,
            allow_control_flow=check_flag("allow_control_flow", allow_control_flow),
            facts=get_family(model_family or DEFAULT_FAMILY).check_facts(foreign_model_facts),
            max_image_pixels=check_positive_int("max_image_pixels", max_image_pixels),
        )
        self._load(arguments, requested)

    def _load(self, arguments: _LoadArguments, requested: dict[str, Any]) -> None:
        """Load and verify the model, then settle the settings (``__init__`` and unpickling)."""
        self._arguments = arguments
        self._backend = create_backend(
            arguments.model,
            arguments.backend,
            num_threads=arguments.num_threads,
            precision=arguments.precision,
            allow_control_flow=arguments.allow_control_flow,
        )
        self._spec = resolve_model_spec(self._backend, arguments.model_family, **arguments.facts)
        self._settings_lock = threading.Lock()
        self._streams: tuple[int, Backend] | None = None  # (workers, backend) of the last OpenVINO stream
        self._requested = requested
        self._settings = self._resolve(requested)

    def _resolve(self, requested: dict[str, Any]) -> Settings:
        """The settings in use: ``requested`` with each ``None`` replaced by the family's or model's default."""
        family = self._spec.family
        meta = self._spec.metadata
        defaults = {**family.model_settings(meta), "keep_ratio": family.model_keep_ratio(meta)}
        settings = Settings(**{name: defaults[name] if value is None else value for name, value in requested.items()})
        family.check_settings(settings, meta)
        return settings

    def _change_setting(self, name: str, value: Any) -> None:
        """Validate and apply one setting (the other settings of the snapshot stay as they are)."""
        checked = check_setting(name, value)
        with self._settings_lock:
            requested = {**self._requested, name: checked}
            self._settings = self._resolve(requested)
            self._requested = requested

    def __getstate__(self) -> dict[str, Any]:
        """The model path, loading options and requested settings; never the engine."""
        return {"arguments": self._arguments, "settings": dict(self._requested)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load the model again from the pickled path and options (a missing file raises ``ModelLoadError``)."""
        settings = {name: check_setting(name, state["settings"].get(name)) for name in SETTING_CHECKS}
        self._load(state["arguments"], settings)

    # ------------------------------------------------------------------ properties
    @property
    def metadata(self) -> ModelMetadata:
        """The verified model facts (``dynamic_batch`` / ``dynamic_hw`` as the loaded graph has them)."""
        return self._spec.metadata

    @property
    def evaluation_settings(self) -> dict[str, Any]:
        """The settings upstream evaluates this model's family with (``score_threshold``, ``iou_threshold``,
        ``max_detections``, ``multi_label``), e.g. YOLOv7's test.py 0.001 / 0.65 / 300 multi-label; assign them
        to reproduce upstream's mAP (``nanodet-infer eval`` does, for every setting not given)."""
        return dict(self._spec.family.evaluation_settings(self._spec.metadata))

    @property
    def display_settings(self) -> dict[str, Any]:
        """The settings ``nanodet-infer detect`` uses for every setting not given (same four keys as
        :attr:`evaluation_settings`): the family's demo defaults, e.g. NanoDet-Plus 0.35; for the torchvision
        families score 0.5 instead of the builder's evaluation threshold (SSDLite 0.001)."""
        return dict(self._spec.family.display_settings(self._spec.metadata))

    @property
    def backend(self) -> Backend:
        """The loaded engine (its ``run`` takes the network input ``[B, 3, H, W]``; used by the serving tensor API)."""
        return self._backend

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
            f"Detector({self.backend_name}, {meta.model_family}, {meta.num_classes} classes, "
            f"input {meta.input_size[0]}x{meta.input_size[1]}"
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

    def network_input(self, image: ImageInput) -> np.ndarray:
        """The network input of one image, float32 ``[3, H, W]`` (the family's resize and normalisation, with the
        current settings), as :meth:`detect` feeds it to the model; for benchmarks and debugging."""
        return self._prepare(0, image, self._settings).tensor

    def detect_with(self, run: Inference, image: ImageInput) -> Detections:
        """Detect objects in one image with another engine's inference ``run`` in place of the detector's backend.

        ``run`` takes the network input, float32 ``[1, 3, H, W]`` (this detector's preprocessing and settings), and
        returns the model's outputs as this model gives them (same order and layout, batch axis first); the
        family's post-process then maps them to original-image pixels. For checking another build of the same
        model (the exporter ranks candidate INT8 graphs with it) without writing each to a file.
        """
        settings = self._settings
        return self._run_batch([self._prepare(0, image, settings)], settings, run)[0]

    def detect_batch(self, images: Iterable[ImageInput], max_batch: int = MAX_BATCH) -> list[Detections]:
        """Detect objects in several images (a list, or any iterable); one :class:`Detections` per image, in order.

        Images are read and preprocessed one at a time; only their network inputs wait for a batch. With a
        dynamic batch axis, images that share a canvas size run together, at most ``max_batch``
        (:data:`MAX_BATCH`) per inference and at most :data:`MAX_BATCH_BYTES` of network input per batch (with
        ``keep_ratio`` on a dynamic-H/W model canvases differ per aspect ratio: each canvas size collects its own
        batches, so no image is padded to a larger canvas and results equal single-image calls). Waiting inputs
        of all canvas sizes together stay within :data:`MAX_BATCH_BYTES` (plus the image just prepared): above it
        the largest waiting group runs early. Memory is thus bounded however many images and aspect ratios are
        given. With a static batch the images run one by one. A canvas above :data:`MAX_INPUT_BYTES` raises
        :class:`IncompatibleModelError`. Each result's ``inference_ms`` is its share of its batch's time.
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
        waiting_bytes = 0
        for index, image in enumerate(images):
            item = self._prepare(index, image, settings)
            group = waiting.setdefault(item.plan.canvas_size, [])
            group.append(item)
            waiting_bytes += item.tensor.nbytes
            if len(group) >= min(limit, max(1, MAX_BATCH_BYTES // item.tensor.nbytes)):
                canvas = item.plan.canvas_size
            elif waiting_bytes > MAX_BATCH_BYTES:  # many canvas sizes waiting: run the largest group
                canvas = max(waiting, key=lambda size: sum(i.tensor.nbytes for i in waiting[size]))
            else:
                continue
            batch = waiting.pop(canvas)
            waiting_bytes -= sum(i.tensor.nbytes for i in batch)
            results.update(self._run_batch(batch, settings))
        for group in waiting.values():
            results.update(self._run_batch(group, settings))
        return [results[i] for i in range(len(results))]

    def stream(
        self, images: Iterable[ImageInput], workers: int | None = None, tracker: Any = None
    ) -> Iterator[Detections]:
        """Detect objects in an iterable of images (e.g. a generator, or a camera or stream opened as a
        :class:`~nanodet_infer.live.VideoSource`); yields :class:`Detections` in input order.

        Throughput API: up to ``workers`` images (default: the CPU count) are processed at once, each on a worker
        thread, so one image's reading, preprocessing and post-processing overlap another's inference. ONNX
        Runtime runs the workers' calls on the detector's session concurrently; on OpenVINO the first stream with
        ``workers`` > 1 compiles the model once more with ``workers`` CPU streams (kept for later streams with as
        many workers), each with the detector's ``num_threads``. Build the detector with ``num_threads=1`` and
        give ``workers`` = cores for the best images/s. Memory is bounded: at most
        ``2 * workers`` images, and at most :data:`MAX_STREAM_BYTES` of array images, are read ahead of the one
        being yielded. Each result equals calling the detector
        on that image (settings are read once, when the stream starts). An error on an image is raised when its
        turn comes; when the ``images`` iterable itself raises, every image it gave before is still detected and
        yielded, then its exception propagates. Closing the generator early cancels the images not yet started;
        no worker thread outlives the generator.

        ``tracker``: a :class:`~nanodet_infer.tracking.ByteTrack` (or a ``trackers`` / supervision tracker object,
        :func:`~nanodet_infer.tracking.as_tracker`) updated with each result in order: the results then carry
        ``tracker_ids``. A real-time ``VideoSource`` hands the stream its newest frame whenever the stream asks for
        one, and the stream reads up to ``2 * workers`` ahead: for the lowest latency use ``workers=1``.
        """
        if isinstance(images, (str, bytes, os.PathLike, np.ndarray)) or not isinstance(images, Iterable):
            raise InvalidArgumentError(
                f"stream takes an iterable of images (e.g. a list or a generator), got {type(images).__name__}; "
                "call the detector for one image"
            )
        count = (os.cpu_count() or 1) if workers is None else check_positive_int("workers", workers)
        results = self._stream(iter(images), count, self._settings, self._stream_backend(count))
        if tracker is None:
            return results
        from .tracking import as_tracker

        update = as_tracker(tracker)
        return (update(result) for result in results)

    def track(
        self, images: Iterable[ImageInput], tracker: Any = None, workers: int | None = None
    ) -> Iterator[Detections]:
        """:meth:`stream` with a tracker: each :class:`Detections` carries ``tracker_ids`` (``-1``: not in a
        confirmed track). ``tracker`` defaults to a new :class:`~nanodet_infer.tracking.ByteTrack` at 30 fps (pass
        one built with the source's frame rate for other rates); needs the ``track`` extra (see
        :mod:`nanodet_infer.tracking`)."""
        if tracker is None:
            from .tracking import ByteTrack

            tracker = ByteTrack()
        return self.stream(images, workers=workers, tracker=tracker)

    def _stream_backend(self, workers: int) -> Backend:
        """The backend :meth:`stream` runs on: this one, or on OpenVINO with ``workers`` > 1 a multi-stream copy."""
        if self._backend.name != "openvino" or workers == 1:
            return self._backend
        with self._settings_lock:
            cached = self._streams
            if cached is None or cached[0] != workers:
                args = self._arguments
                backend = create_backend(
                    args.model,
                    "openvino",
                    num_threads=args.num_threads,
                    precision=args.precision,
                    allow_control_flow=args.allow_control_flow,
                    streams=workers,
                )
                self._streams = cached = (workers, backend)
        return cached[1]

    def _stream(
        self, images: Iterator[ImageInput], workers: int, settings: Settings, backend: Backend
    ) -> Iterator[Detections]:
        def detect(image: ImageInput) -> Detections:
            return self._run_batch([self._prepare(0, image, settings)], settings, backend.run)[0]

        pending: deque[tuple[Future[Detections], int]] = deque()
        held = 0  # bytes of the array images waiting in ``pending``

        def oldest() -> Detections:
            nonlocal held
            future, size = pending.popleft()
            held -= size
            return future.result()

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nanodet-stream") as pool:
            source = iter(images)
            try:
                while True:
                    try:
                        image = next(source)
                    except StopIteration:
                        break
                    except Exception:  # the source failed: first deliver every image it did give, then its error
                        while pending:
                            yield oldest()
                        raise
                    size = image.nbytes if isinstance(image, np.ndarray) else 0
                    pending.append((pool.submit(detect, image), size))
                    held += size
                    while len(pending) >= 2 * workers or (held > MAX_STREAM_BYTES and len(pending) > 1):
                        yield oldest()  # an image's own error is raised here, in its turn
                while pending:
                    yield oldest()
            finally:
                for future, _ in pending:
                    future.cancel()

    def _prepare(self, index: int, image: ImageInput, settings: Settings) -> _Prepared:
        """Read/validate ``image``, plan its resize and fill its network input ``[3, H, W]``."""
        loaded = load_image(image, self._arguments.max_image_pixels)
        family = self._spec.family
        plan = family.plan((loaded.shape[1], loaded.shape[0]), self._spec, settings)
        width, height = plan.canvas_size
        if 3 * 4 * width * height > MAX_INPUT_BYTES:
            raise IncompatibleModelError(
                f"a {width}x{height} network input needs {12 * width * height / 2**30:.1f} GiB, more than the "
                f"{MAX_INPUT_BYTES / 2**30:g} GiB limit; export the model at a smaller input size"
            )
        start = time.perf_counter()
        tensor = family.preprocess(loaded, plan, self._spec)
        return _Prepared(index, plan, tensor, (time.perf_counter() - start) * 1e3)

    def _run_batch(
        self, group: list[_Prepared], settings: Settings, run: Inference | None = None
    ) -> dict[int, Detections]:
        """One inference on ``group`` (all on one canvas; by ``run``, default the detector's backend), then the
        family's post-process per image; keyed by index."""
        spec = self._spec
        batch = group[0].tensor[None] if len(group) == 1 else np.stack([item.tensor for item in group])
        start = time.perf_counter()
        outputs = (run or self._backend.run)(batch)
        inference_ms = (time.perf_counter() - start) * 1e3 / len(group)
        if any(output.ndim < 1 or output.shape[0] != len(group) for output in outputs):
            raise IncompatibleModelError(
                f"the model returned outputs of shapes {[o.shape for o in outputs]} for a batch of {len(group)}; "
                "every output must have the batch axis first"
            )
        results = {}
        for slot, item in enumerate(group):
            start = time.perf_counter()
            xyxy, scores, class_ids = spec.family.postprocess([o[slot] for o in outputs], item.plan, spec, settings)
            timings = StageTimings(item.preprocess_ms, inference_ms, (time.perf_counter() - start) * 1e3)
            names, size = spec.metadata.class_names, item.plan.src_size
            results[item.index] = Detections(xyxy, scores, class_ids, names, size, timings)
        return results
