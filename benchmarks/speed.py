"""The benchmark's "speed past f32" parts: INT8 models, a trained checkpoint, accuracy and throughput.

* :func:`checkpoint_models` — f32 ONNX + IR of a checkpoint of any family (``--checkpoint`` [``--config``]), cached;
  :func:`checkpoint_torch_model` — a NanoDet-Plus checkpoint's training-side PyTorch model for the PyTorch row
  (other families: :mod:`benchmarks.family_reference`);
* :func:`int8_models` — INT8 copies of the measured f32 models (``nanodet_export.quantize.quantize_file``),
  cached per calibration set;
* :func:`accuracy` — COCO mAP of one engine at upstream's evaluation settings (``--ann/--images``);
* :func:`throughput` — images/s of ``Detector.stream`` against synchronous calls, same 1-thread detector.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def checkpoint_models(checkpoint: Path, config: Path | None, cache: Path) -> tuple[Path, Path]:
    """``(model.onnx, model.xml)`` exported from ``checkpoint`` (with ``config``, NanoDet-Plus's training YAML), built
    once per file pair; the family is the exporter's recognition of the file."""
    from nanodet_export import export_checkpoint

    digest = hashlib.sha256(checkpoint.read_bytes() + (config.read_bytes() if config else b"")).hexdigest()[:16]
    folder = cache / f"checkpoint-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, xml_path = folder / "model.onnx", folder / "model.xml"
    options = {"config": config} if config is not None else {}
    if not onnx_path.is_file():
        export_checkpoint(checkpoint, onnx_path, **options)
    if not xml_path.is_file():
        export_checkpoint(checkpoint, xml_path, fmt="openvino", **options)
    return onnx_path, xml_path


def checkpoint_torch_model(checkpoint: Path, config: Path | None) -> Any:
    """The training-side PyTorch model of ``checkpoint`` (architecture from ``config`` or its tensors), eval mode."""
    from nanodet_export.nanodet_plus.resolve import resolve_config
    from nanodet_models import build_model, load_weights, read_checkpoint

    state = read_checkpoint(checkpoint).state_dict
    model = build_model(resolve_config(state, config=config))
    load_weights(model, state)
    return model.eval()


def synthetic_calibration(size: tuple[int, int], cache: Path, count: int = 16) -> Path:
    """A folder of ``count`` seeded synthetic images (seeds 0..count-1): the built-in model's calibration set."""
    from nanodet_infer.bench import synthetic_image

    folder = cache / f"calibration-synthetic-{size[0]}x{size[1]}-{count}"
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        path = folder / f"synthetic_{seed:02d}.png"
        if not path.is_file():
            cv2.imwrite(str(path), synthetic_image(size, seed=seed))
    return folder


def int8_models(models: dict[str, Path], calib_dir: Path) -> dict[str, Path]:
    """INT8 copies of ``{"onnx": f32.onnx, "openvino": f32.xml}`` (either may be absent), calibrated on ``calib_dir``.

    Cached next to each f32 model under ``int8-<digest>/`` (of the calibration set and the quantizer's
    settings); built with the exporter's own quantizer. Its agreement check is reported, not enforced: these
    rows measure speed, and the built-in seeded model's scores sit near the 0.35 agreement threshold (ONNX INT8
    keeps about half its detections there; the trained fixture keeps all, docs/export.md).
    """
    from nanodet_export.quantize import (
        ONNX_METHOD,
        OPENVINO_METHOD,
        Int8Request,
        find_calibration_images,
        quantize_file,
    )

    # the quantizer's settings are part of the key: a cached model made with other settings is not reused
    key = find_calibration_images(calib_dir, None).sha256 + ONNX_METHOD + OPENVINO_METHOD
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    out = {}
    for fmt, f32 in models.items():
        target = f32.parent / f"int8-{digest}" / f"{f32.stem}{f32.suffix}"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            report = quantize_file(f32, target, Int8Request(calib_images=calib_dir, force=True))
            agreement = report.agreement
            print(f"INT8 {fmt}: {agreement.matched} of {agreement.f32_detections} f32 detections kept at score "
                  f"{agreement.score_threshold:g} (agreement reported, not enforced, for the speed rows)", flush=True)
        out[fmt] = target
    return out


def accuracy(path: Path, backend: str, precision: str, ann: Path, images: Path) -> float:
    """COCO mAP of the model at upstream's evaluation settings (score 0.05, IoU 0.6, max 100), 1 thread."""
    from nanodet_export.quantize import EVAL_SETTINGS

    from nanodet_infer import Detector
    from nanodet_infer.evaluate import evaluate_coco

    detector = Detector(path, backend=backend, precision=precision, num_threads=1, **EVAL_SETTINGS)
    return float(evaluate_coco(detector, ann, images)["mAP"])


def throughput(
    detector: Any, images: list[np.ndarray], count: int, workers: int | None = None, time_limit_s: float | None = None
) -> dict[str, Any]:
    """Images/s of ``count`` images (``images`` cycled): synchronous calls, then ``detector.stream``.

    Both runs see the same images; the results are compared (``identical``). ``workers`` defaults to the
    CPU count. ``time_limit_s`` caps the synchronous run at half of it (at least ``2 * workers`` images);
    the stream then gets the same images.
    """
    workers = workers or os.cpu_count() or 1
    batch = [images[i % len(images)] for i in range(count)]
    list(detector.stream(batch[: 2 * workers], workers=workers))  # warm up (OpenVINO compiles its streams)
    start = time.perf_counter()
    sync = []
    for image in batch:
        sync.append(detector(image))
        if time_limit_s is not None and len(sync) >= 2 * workers and time.perf_counter() - start > time_limit_s / 2:
            break
    sync_s = time.perf_counter() - start
    count, batch = len(sync), batch[: len(sync)]
    start = time.perf_counter()
    streamed = list(detector.stream(batch, workers=workers))
    stream_s = time.perf_counter() - start
    identical = all(
        all(np.array_equal(x, y) for x, y in ((a.xyxy, b.xyxy), (a.scores, b.scores), (a.class_ids, b.class_ids)))
        for a, b in zip(sync, streamed, strict=True)
    )
    return {
        "workers": workers,
        "images": count,
        "sync_images_per_s": count / sync_s,
        "stream_images_per_s": count / stream_s,
        "speedup": sync_s / stream_s,
        "identical": identical,
    }
