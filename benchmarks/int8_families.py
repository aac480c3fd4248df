"""INT8 for every family, side by side: agreement, bare-inference speed-up on both engines, ΔmAP.

For each checkpoint given (``--model NAME=CKPT[,config=YML]``), one run exports it four times through
``nanodet_export.export_checkpoint``: f32 and ``--int8`` (calibrated on ``--calib-images``), each as ONNX
and as OpenVINO IR. It reports per format the INT8 step's own agreement check (INT8 vs the stable f32 detections
on the calibration images, at the family's default threshold), the bare-inference time of the f32 and INT8
files on the same network input (ONNX files on ONNX Runtime, IR files on OpenVINO at f32 inference
precision; 1 thread, runs interleaved, median; a file the agreement check refuses is written with
``force`` and marked ``passed: false``) and, with ``--eval-ann/--eval-images``, the f32 and INT8
COCO mAP at the family's evaluation settings (a trained checkpoint only: seeded weights detect noise).

    python benchmarks/int8_families.py --calib-images ../shared/fixtures/shapes-m-256/images \\
        --model yolov7-s=../shared/fixtures/yolov7-s/yolov7-s.pt --json int8.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = {"onnx": ".onnx", "openvino": ".xml"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="int8_families.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CKPT[,config=YML]")
    parser.add_argument("--calib-images", required=True, type=Path)
    parser.add_argument("--eval-ann", type=Path, help="COCO annotations (applies to models with a config)")
    parser.add_argument("--eval-images", type=Path)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per file (after 3 warm-up runs)")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def _model(text: str) -> tuple[str, Path, dict[str, Any]]:
    name, _, rest = text.partition("=")
    ckpt, *extras = rest.split(",")
    options: dict[str, Any] = {}
    for extra in extras:  # a file option (config=...) as a Path, a number as a number, else the text
        key, _, value = extra.partition("=")
        options[key] = Path(value) if key == "config" else int(value) if value.isdigit() else value
    return name, Path(ckpt), options


def bare_times(paths: dict[str, Path], backend: str, x: np.ndarray, runs: int,
               names: tuple[str, ...]) -> dict[str, float]:
    """Median milliseconds of one inference per file on ``backend`` (the exporter's own 1-thread f32 runners,
    :mod:`nanodet_export.parity`), runs interleaved."""
    from nanodet_export.parity import onnxruntime_runner, openvino_runner

    runner = onnxruntime_runner if backend == "onnxruntime" else openvino_runner
    run = {name: runner(path, names) for name, path in paths.items()}
    for _ in range(3):
        for call in run.values():
            call(x)
    times: dict[str, list[float]] = {name: [] for name in run}
    for _ in range(runs):
        for name, call in run.items():
            start = time.perf_counter()
            call(x)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(name: str, ckpt: Path, options: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One family's row: per format, agreement, f32/INT8 bare-inference ms and (with a config) mAP."""
    from nanodet_export import export_checkpoint
    from nanodet_export.quantize import Int8Request

    from nanodet_infer import Detector
    from nanodet_infer.errors import ExportError
    from nanodet_infer.images import load_image

    trained = "config" in options and args.eval_ann is not None
    request = Int8Request(
        calib_images=args.calib_images,
        eval_ann=args.eval_ann if trained else None,
        eval_images=args.eval_images if trained else None,
    )
    image = load_image(sorted(args.calib_images.iterdir())[0])
    row: dict[str, Any] = {"model": name}
    for fmt, suffix in FORMATS.items():
        f32 = export_checkpoint(ckpt, work / f"{name}-f32{suffix}", fmt=fmt, **options)
        start = time.perf_counter()
        target = work / f"{name}-int8{suffix}"
        try:
            int8 = export_checkpoint(ckpt, target, fmt=fmt, int8=request, **options)
        except ExportError:  # the agreement check refused it: measure the forced file, and say so
            int8 = export_checkpoint(ckpt, target, fmt=fmt, int8=replace(request, force=True), **options)
        backend = "onnxruntime" if fmt == "onnx" else "openvino"
        x = Detector(f32.path, backend=backend, num_threads=1).network_input(image)[None]
        ms = bare_times({"f32": f32.path, "int8": int8.path}, backend, x, args.runs, tuple(f32.output_shapes))
        agreement = int8.int8.agreement
        entry = {
            "family": int8.family,
            "passed": not int8.int8.forced,
            "export_int8_s": round(time.perf_counter() - start, 1),
            "matched": f"{agreement.matched}/{agreement.stable}",
            "f32_detections": agreement.f32_detections,
            "matched_fraction": round(agreement.matched_fraction, 3),
            "mean_iou": round(agreement.mean_iou, 3),
            "score_delta_mean": round(agreement.mean_score_delta, 3),
            "score_threshold": agreement.score_threshold,
            "float_layers": len(int8.metadata.calibration["float_layers"]),
            "restored": len(int8.int8.restored),  # operations accuracy control restored to float
            "plain_matched": (
                None if int8.int8.plain is None else f"{int8.int8.plain.matched}/{int8.int8.plain.stable}"
            ),
            "f32_ms": round(ms["f32"], 2),
            "int8_ms": round(ms["int8"], 2),
            "speedup": round(ms["f32"] / ms["int8"], 2),
        }
        if int8.int8.mean_ap:
            entry["f32_mAP"] = round(int8.int8.mean_ap["f32"]["mAP"], 4)
            entry["int8_mAP"] = round(int8.int8.mean_ap["int8"]["mAP"], 4)
            entry["delta_mAP_points"] = round((entry["int8_mAP"] - entry["f32_mAP"]) * 100, 2)
        row[fmt] = entry
        print(name, fmt, entry, flush=True)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-families-") as work:
        for text in args.model:
            name, ckpt, options = _model(text)
            rows.append(measure(name, ckpt, options, args, Path(work)))
    if args.json is not None:
        from nanodet_infer.paths import write_json

        write_json(args.json, {"calib_images": str(args.calib_images), "runs": args.runs, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
