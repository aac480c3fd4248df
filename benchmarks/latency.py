"""Latency of nanodet-infer on this machine, per stage and backend, side by side with what users run otherwise.

``python benchmarks/latency.py`` (no arguments) builds the default model (see
:mod:`benchmarks.default_model`) and measures, in one run, with the configurations interleaved:

* our :class:`~nanodet_infer.Detector` per backend (ONNX Runtime, OpenVINO f32, OpenVINO bf16 where the
  CPU has it) at 1 thread and all threads: preprocess, inference, postprocess and end-to-end;
* bare ``backend.run`` on a pre-made tensor (overhead = end-to-end / bare);
* the family's PyTorch reference (when torch is installed): for NanoDet-Plus the training-side model + an
  upstream-style torch post-process (:mod:`benchmarks.torch_reference`), for a ``--checkpoint`` of another family
  its PyTorch deploy model + its reference post-process in torch (:mod:`benchmarks.family_reference`);
* the post-process alone: ours (candidate-first) vs an all-priors decode vs the torch post-process, at
  the deployment threshold and at 0.05 (the ~45k-candidate worst case), checking the results agree;
* INT8 rows for both backends (the measured f32 models quantized by the exporter's own code, calibrated on
  ``--int8-calib`` or, for the built-in model, its synthetic image; ``--no-int8`` skips them);
* throughput: ``Detector.stream`` with one worker per core against synchronous calls, 1-thread detectors;
* with ``--ann/--images``: an accuracy column, COCO mAP per engine at upstream's evaluation settings.

``--checkpoint`` (with ``--config`` for NanoDet-Plus) measures a checkpoint of any family (exported and cached
first) instead of the built-in model.

It prints Markdown (stdout) and shows a progress bar (stderr). The JSON schema is in docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report, speed  # noqa: E402
from nanodet_infer.bench import (  # noqa: E402
    SYNTHETIC_SIZE,
    Entry,
    Measurement,
    bare_tensor,
    engine_entries,
    engine_row,
    load_images,
    measure_side_by_side,
    synthetic_image,
)
from nanodet_infer.errors import BackendUnavailableError, NanoDetError  # noqa: E402

WORST_CASE_THRESHOLD = 0.05
POSTPROCESS_STUDY_FAMILY = "nanodet-plus"  # the post-process study times NanoDet-Plus's decoders
BOX_TOLERANCE_PX = 1e-3


# ---------------------------------------------------------------------------------------------- options
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="latency.py", description=__doc__.split("\n\n")[0],
        epilog="Without --model: the built-in seeded NanoDet-Plus-m 320 (80 classes), cached in $NANODET_CACHE.",
    )
    parser.add_argument("--model", type=Path, default=None, help=".onnx or OpenVINO .xml (default: built-in model)")
    parser.add_argument("--backend", default="all", choices=("all", "onnxruntime", "openvino"))
    parser.add_argument("--threads", default="1",
                        help="comma-separated thread counts, or 'all' for 1 and all logical cores (default: 1)")
    parser.add_argument("--size", default=None, help="W,H of the synthetic image (default 1280,720)")
    parser.add_argument("--image", type=Path, default=None, help="an image file or folder instead of the synthetic one")
    parser.add_argument("--batch", type=int, default=1, help="images per call (batched when the model allows)")
    parser.add_argument("--iters", type=int, default=150, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, default=15, help="untimed iterations per configuration")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="the Detector's score threshold (default: the model family's detection default)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a checkpoint of any family: export (cached) and measure it instead of the built-in one")
    parser.add_argument("--config", type=Path, default=None, help="a NanoDet-Plus checkpoint's training YAML")
    parser.add_argument("--int8-calib", type=Path, default=None,
                        help="calibration images for the INT8 rows (built-in model default: its synthetic image)")
    parser.add_argument("--no-int8", action="store_true", help="skip the INT8 rows")
    parser.add_argument("--ann", type=Path, default=None, help="COCO annotations: accuracy column (needs --images)")
    parser.add_argument("--images", type=Path, default=None, help="the images --ann refers to")
    parser.add_argument("--phase-seconds", type=float, default=20.0,
                        help="time cap of each measuring phase, as well as --iters (default 20; 0: no cap)")
    parser.add_argument("--stream-images", type=int, default=60,
                        help="images per throughput measurement (0: skip the throughput rows)")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON (docs/benchmark.md)")
    parser.add_argument("--plot", type=Path, default=None, help="write latency box plots per stage (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.batch < 1 or args.stream_images < 0 or args.phase_seconds < 0:
        parser.error("--iters and --batch must be >= 1, --warmup, --stream-images and --phase-seconds >= 0")
    if args.checkpoint is not None and args.model is not None:
        parser.error("--checkpoint and --model exclude each other")
    if (args.ann is None) != (args.images is None):
        parser.error("--ann and --images go together")
    try:
        args.threads = sorted({1, os.cpu_count() or 1}) if args.threads == "all" else _ints(args.threads)
        args.size = tuple(_ints(args.size)) if args.size else SYNTHETIC_SIZE
    except ValueError:
        parser.error("--threads and --size take comma-separated integers")
    if len(args.size) != 2 or min(args.size) < 1 or not args.threads or min(args.threads) < 1:
        parser.error("--size takes W,H and --threads positive integers")
    return args


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


# ---------------------------------------------------------------------------------------------- environment
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ov_capabilities() -> list[str]:
    try:
        import openvino as ov

        return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - OpenVINO absent or no CPU plugin: no OpenVINO rows
        return []


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def environment(torch: Any) -> dict[str, Any]:
    """Versions and CPU facts recorded with every result."""
    import cv2

    def version(module: str) -> str | None:
        try:
            return __import__(module).__version__
        except ImportError:
            return None

    return {
        "cpu": _cpu_name(), "logical_cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "opencv": cv2.__version__, "onnxruntime": version("onnxruntime"),
        "openvino": version("openvino"), "torch": torch.__version__ if torch is not None else None,
        "openvino_cpu_capabilities": _ov_capabilities(),
    }


# ---------------------------------------------------------------------------------------------- configurations
def engines(
    model: Path, choice: str, ov_model: Path | None, int8: dict[str, Path] | None = None
) -> list[tuple[str, str, str, Path]]:
    """``(label, backend, precision, path)`` per engine to measure; ``int8``: INT8 models by format."""
    out: list[tuple[str, str, str, Path]] = []
    int8 = int8 or {}
    if choice in ("all", "onnxruntime") and model.suffix.lower() == ".onnx":
        out.append(("onnxruntime f32", "onnxruntime", "f32", model))
        if "onnx" in int8:
            out.append(("onnxruntime int8", "onnxruntime", "f32", int8["onnx"]))
    capabilities = _ov_capabilities()
    if choice in ("all", "openvino") and capabilities:
        path = ov_model or model
        out.append(("openvino f32", "openvino", "f32", path))
        if "BF16" in capabilities:
            out.append(("openvino bf16", "openvino", "bf16", path))
        if "openvino" in int8:
            out.append(("openvino int8", "openvino", "f32", int8["openvino"]))
            if "BF16" in capabilities:  # the float parts (head tail, reorders) in bf16: the fastest INT8 run here
                out.append(("openvino int8 bf16", "openvino", "bf16", int8["openvino"]))
    return out


def _int8(args: argparse.Namespace, model: Path, ov_model: Path | None) -> dict[str, Path]:
    """The INT8 models of the run (none with ``--no-int8``, or for ``--model`` without ``--int8-calib``)."""
    from benchmarks.default_model import cache_root

    calib = args.int8_calib
    if args.no_int8 or (calib is None and args.model is not None):
        return {}
    if calib is None:
        calib = args.images or speed.synthetic_calibration(args.size, cache_root())
    f32 = {"onnx": model} if model.suffix.lower() == ".onnx" else {}
    if ov_model is not None:
        f32["openvino"] = ov_model
    return speed.int8_models(f32, calib)


# ---------------------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[Measurement]]:
    """Measure everything ``args`` asks for; returns the JSON document and the raw measurements."""
    from tqdm import tqdm

    torch = None if args.no_torch else _torch()
    notes: list[str] = []
    torch_model = None
    ov_model = None
    if args.checkpoint is not None:
        from nanodet_export.families import recognise

        from benchmarks.default_model import cache_root

        model_path, ov_model = speed.checkpoint_models(args.checkpoint, args.config, cache_root())
        name = args.checkpoint.name
        if torch is not None and recognise(args.checkpoint) in (None, POSTPROCESS_STUDY_FAMILY):
            torch_model = speed.checkpoint_torch_model(args.checkpoint, args.config)
        elif torch is not None:
            from benchmarks.family_reference import deploy_model

            torch_model = deploy_model(args.checkpoint)
    elif args.model is None:
        from benchmarks.default_model import PRESET, ensure_default_model, load_torch_model

        paths = ensure_default_model()
        model_path, ov_model, name = paths.onnx, paths.xml, f"{PRESET} (built-in, seeded)"
        if torch is not None:
            torch_model = load_torch_model(paths)
    else:
        model_path, name = args.model, args.model.name
        if torch is not None:
            notes.append("The PyTorch model row needs the built-in model's weights, so it is not measured for --model; "
                         "the PyTorch post-process comparison still runs.")
    if args.no_torch or torch is None:
        notes.append("PyTorch comparison skipped (" + ("--no-torch" if args.no_torch else "torch not installed") + ").")

    if args.image is not None:
        images, image_label = load_images(args.image), str(args.image)
    else:
        images = [synthetic_image(args.size)]
        image_label = f"synthetic {args.size[0]}x{args.size[1]} BGR (seed 0)"
    int8 = _int8(args, model_path, ov_model)
    if int8:
        notes.append("INT8 models: the measured f32 models quantized by nanodet_export.quantize, calibrated on "
                     + str(args.int8_calib or args.images or "16 seeded synthetic images") + ".")
    configs = engines(model_path, args.backend, ov_model, int8)
    if not configs:
        raise BackendUnavailableError(f"no installed backend can run {model_path} with --backend {args.backend}")

    rows: list[dict[str, Any]] = []
    measurements: list[Measurement] = []
    per_thread = len(configs) * 2 + (torch_model is not None)
    total = len(args.threads) * per_thread * (args.iters + args.warmup) + _pp_calls(args, torch is not None)
    bar = tqdm(total=total, desc="benchmark", unit="call", file=sys.stderr, disable=args.no_progress)
    cap = args.phase_seconds or None
    first_detector = None
    postprocess_cases: list[dict[str, Any]] = []
    phase: _Phase | None = None
    interrupted = False
    try:
        for threads in args.threads:
            runs = [engine_entries(label, backend, precision, path, threads, images, args.batch, args.score_threshold)
                    for label, backend, precision, path in configs]
            entries: list[Entry] = [entry for run in runs for entry in run.entries]
            first_detector = first_detector or runs[0].detector
            phase = _Phase(threads, runs, entries)
            if torch_model is not None:
                torch.set_num_threads(threads)
                phase.pipeline = _reference_pipeline(torch_model, first_detector)
                phase.reference = Measurement(f"PyTorch, {threads} thr", "pytorch", {"threads": threads})
                cycle = itertools.cycle(images)
                entries.append(Entry(phase.reference,
                                     lambda p=phase.pipeline, c=cycle: p([next(c) for _ in range(args.batch)]),
                                     lambda out: out[1]))
            done = measure_side_by_side(entries, iters=args.iters, warmup=args.warmup, tick=bar.update,
                                        time_limit_s=cap)
            bar.total -= len(entries) * (args.iters - done)
            rows.extend(phase.rows(images[0], args.batch))
            measurements.extend(e.measurement for e in entries)
            phase = None
        if first_detector.metadata.model_family == POSTPROCESS_STUDY_FAMILY:
            postprocess_cases = compare_postprocess(
                first_detector, model_path, images[0], args, torch is not None, bar.update, postprocess_cases
            )
        else:
            bar.total -= _pp_calls(args, torch is not None)
            notes.append(f"The post-process study compares {POSTPROCESS_STUDY_FAMILY} decoders; it is skipped for a "
                         f"{first_detector.metadata.model_family} model.")
        bar.close()
        _speed_columns(rows, configs, images, args)
    except KeyboardInterrupt:
        bar.close()
        if first_detector is None:
            raise
        interrupted = True
        if phase is not None:  # the side-by-side in progress: its samples so far
            rows.extend(phase.rows(images[0], args.batch))
            measurements.extend(e.measurement for e in phase.entries)
        notes.append("Interrupted (Ctrl-C): the tables hold what was measured until then; phases that had not "
                     "run are missing and the interrupted one may have fewer samples per configuration.")
    if cap:
        notes.append(f"Each measuring phase was capped at {args.phase_seconds:g} s as well as by --iters "
                     "(--phase-seconds); the n of each cell is in the JSON.")
    doc = {
        "schema": report.SCHEMA,
        "environment": environment(torch),
        "model": {"name": name, "path": str(model_path), "default": args.model is None and args.checkpoint is None,
                  "input_size": list(first_detector.metadata.input_size),
                  "num_classes": first_detector.metadata.num_classes},
        "settings": {"image": image_label, "image_size": [int(images[0].shape[1]), int(images[0].shape[0])],
                     "batch": args.batch, "iters": args.iters, "warmup": args.warmup, "threads": args.threads,
                     "score_threshold": first_detector.score_threshold, "iou_threshold": first_detector.iou_threshold,
                     "max_detections": first_detector.max_detections},
        "pipelines": rows,
        "postprocess": postprocess_cases,
        "notes": notes,
        "interrupted": interrupted,
    }
    return doc, measurements


@dataclass
class _Phase:
    """One thread count's side-by-side: the engines' runs, the PyTorch reference, the entries timed."""

    threads: int
    runs: list[Any]
    entries: list[Entry]
    reference: Measurement | None = None
    pipeline: Any = None

    def rows(self, image: np.ndarray, batch: int) -> list[dict[str, Any]]:
        """The ``pipelines`` rows of the engines (and PyTorch) that have samples."""
        measured = [run for run in self.runs if run.ours.samples["end_to_end"] and run.bare.samples["end_to_end"]]
        reference = self.reference if self.reference is not None and self.reference.samples["end_to_end"] else None
        torch_e2e = reference.median() if reference is not None else None
        out = []
        for run in measured:
            row = engine_row(run, image, batch)
            row["speedup_vs_pytorch"] = torch_e2e / run.ours.median() if torch_e2e else None
            out.append(row)
        if reference is not None:
            out.append({
                "engine": self.pipeline.label, "backend": "torch", "precision": "f32",
                "threads": self.threads, "stages_ms": reference.stats(), "bare_inference_ms": None,
                "overhead": None, "images_per_s": 1e3 * batch / torch_e2e, "speedup_vs_pytorch": 1.0,
                "detections": len(self.pipeline([image])[0][0][0]),
            })
        return out


def _reference_pipeline(model: Any, detector: Any) -> Any:
    """The PyTorch row's pipeline: NanoDet-Plus's training model + upstream's post-process, else the family's own
    (:mod:`benchmarks.family_reference`); both return ``(results, stage_ms)``."""
    if detector.metadata.model_family == POSTPROCESS_STUDY_FAMILY:
        from benchmarks.torch_reference import TorchPipeline

        return TorchPipeline(model, detector.metadata, detector.score_threshold)
    from benchmarks.family_reference import FamilyPipeline

    return FamilyPipeline(model, detector)


def _speed_columns(
    rows: list[dict[str, Any]], configs: list[tuple[str, str, str, Path]], images: list[np.ndarray],
    args: argparse.Namespace,
) -> None:
    """Add ``map`` (with ``--ann``) and, to the 1-thread rows, ``throughput`` (``Detector.stream``)."""
    from nanodet_infer import Detector

    by_label = {label: (backend, precision, path) for label, backend, precision, path in configs}
    for row in rows:
        if row["engine"] not in by_label:
            continue
        backend, precision, path = by_label[row["engine"]]
        if args.ann is not None and row["threads"] == min(args.threads):
            row["map"] = speed.accuracy(path, backend, precision, args.ann, args.images)
        if args.stream_images and row["threads"] == 1:
            detector = Detector(path, backend=backend, precision=precision, num_threads=1,
                                score_threshold=args.score_threshold)
            row["throughput"] = speed.throughput(detector, images, args.stream_images,
                                                 time_limit_s=args.phase_seconds or None)


def _pp_calls(args: argparse.Namespace, with_torch: bool) -> int:
    per_case = (2 + with_torch)
    return per_case * (args.iters + args.warmup) + per_case * (_worst_iters(args) + 2)


def _worst_iters(args: argparse.Namespace) -> int:
    return max(3, args.iters // 15)


def compare_postprocess(
    detector: Any, path: Path, image: np.ndarray, args: argparse.Namespace, with_torch: bool, tick: Callable[[], None],
    cases: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Ours vs all-priors decode vs torch post-process on one image's outputs of the model at ``path``, 1 thread.

    Each threshold's case is appended to ``cases`` as soon as it is measured (kept when interrupted)."""
    from nanodet_infer.backends import create_backend
    from nanodet_infer.families.nanodet_plus.decode import make_priors
    from nanodet_infer.families.nanodet_plus.postprocess import postprocess
    from nanodet_infer.model_spec import resolve_model_spec

    meta = detector.metadata
    tensor = bare_tensor(detector, image, 1)
    backend = create_backend(path, "onnxruntime" if path.suffix.lower() == ".onnx" else "openvino", num_threads=1)
    spec = resolve_model_spec(backend)
    outputs = [output[0] for output in backend.run(tensor)]
    scores, boxes = (np.ascontiguousarray(a) for a in spec.layout.split_outputs(outputs, spec.metadata))
    canvas = (tensor.shape[3], tensor.shape[2])
    priors = make_priors(canvas, meta.strides, meta.prior_offset)
    thresholds = [(detector.score_threshold, args.iters, args.warmup)]
    if detector.score_threshold != WORST_CASE_THRESHOLD:  # the run's threshold is not already the worst case
        thresholds.append((WORST_CASE_THRESHOLD, _worst_iters(args), 2))
    for threshold, iters, warmup in thresholds:
        options = {"reg_max": meta.reg_max, "score_threshold": threshold, "iou_threshold": detector.iou_threshold,
                   "max_detections": detector.max_detections, "canvas_size": canvas}
        ours = Measurement(f"ours, score>{threshold}", "postprocess")
        full = Measurement(f"all-priors, score>{threshold}", "postprocess")
        entries = [Entry(ours, lambda o=options: postprocess(scores, boxes, priors, **o)),
                   Entry(full, lambda o=options: postprocess(scores, boxes, priors, candidate_first=False, **o))]
        torch_run = None
        if with_torch:
            import torch

            from benchmarks.torch_reference import torch_postprocess

            torch.set_num_threads(1)
            joint = torch.from_numpy(np.concatenate([scores, boxes], axis=1))
            torch_run = Measurement(f"PyTorch, score>{threshold}", "postprocess")
            entries.append(Entry(torch_run, lambda o=options, j=joint: torch_postprocess(
                j, num_classes=meta.num_classes, strides=meta.strides, scores_are_logits=False, **o)))
        measure_side_by_side(entries, iters=iters, warmup=warmup, tick=tick, time_limit_s=args.phase_seconds or None)
        mine = postprocess(scores, boxes, priors, **options)
        reference = postprocess(scores, boxes, priors, candidate_first=False, **options)
        case = {
            "score_threshold": threshold, "candidates": int((scores > np.float32(threshold)).sum()),
            "detections": len(mine[0]), "ours_ms": ours.stats()["end_to_end"],
            "all_priors_ms": full.stats()["end_to_end"], "all_priors_over_ours": full.median() / ours.median(),
            "all_priors_identical": all(np.array_equal(a, b) for a, b in zip(mine, reference, strict=True)),
            "pytorch_ms": None, "pytorch_over_ours": None, "pytorch_matches": None,
        }
        if torch_run is not None:
            theirs = entries[-1].call()
            case.update(pytorch_ms=torch_run.stats()["end_to_end"],
                        pytorch_over_ours=torch_run.median() / ours.median(),
                        pytorch_matches=same_detections(mine, theirs))
        cases.append(case)
    return cases


def same_detections(a: Sequence[np.ndarray], b: Sequence[np.ndarray], atol: float = BOX_TOLERANCE_PX) -> bool:
    """Whether two ``(xyxy, scores, class_ids)`` results hold the same detections (any order of ties)."""
    if len(a[1]) != len(b[1]):
        return False

    def canonical(result: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        xyxy, scores, classes = (np.asarray(v) for v in result)
        order = np.lexsort((xyxy[:, 1], xyxy[:, 0], classes, -scores))
        return xyxy[order], scores[order], classes[order]

    (ba, sa, ca), (bb, sb, cb) = canonical(a), canonical(b)
    return bool(np.array_equal(ca, cb) and np.allclose(sa, sb, rtol=0, atol=1e-6) and np.allclose(ba, bb, atol=atol))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print Markdown; write ``--json`` / ``--plot``. Returns the exit status."""
    args = parse_args(argv)
    try:
        doc, measurements = run(args)
    except NanoDetError as exc:
        print(f"latency.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latency.py: interrupted before anything was measured", file=sys.stderr)
        return 130
    print(report.markdown(doc))
    if args.json is not None:
        report.write_json(doc, args.json)
        print(f"\nJSON written to {args.json}")
    if args.plot is not None:
        problem = report.plot(measurements, args.plot)
        if problem:
            print(f"latency.py: {problem}", file=sys.stderr)
        else:
            print(f"\nPlot written to {args.plot}")
    return 130 if doc["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
