"""Per-stage latency of an exported model on this machine (``nanodet-infer bench``), torch-free.

The building blocks are shared with the full benchmark ``benchmarks/latency.py`` (which adds the
built-in default model, the PyTorch comparison and the post-process study): timing with warm-up and
interleaving (:func:`measure_side_by_side`), the deterministic synthetic input
(:func:`synthetic_image`), and one engine's pair of measurements, our :class:`~nanodet_infer.Detector`
per stage next to bare ``backend.run`` on a pre-made tensor (:func:`engine_entries`, :func:`engine_row`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import ImageReadError
from .paths import IMAGE_SUFFIXES
from .safetext import safe_text

STAGES = ("preprocess", "inference", "postprocess", "end_to_end")
"""Stage names, in pipeline order, used as keys in every result."""

SYNTHETIC_SIZE = (1280, 720)  # (W, H), a 720p camera frame


# ---------------------------------------------------------------------------------------------- inputs
def synthetic_image(size: tuple[int, int] = SYNTHETIC_SIZE, seed: int = 0) -> np.ndarray:
    """A seeded BGR uint8 image ``[H, W, 3]``: a gradient, 40 filled shapes and sensor-like noise.

    Identical for identical ``(size, seed)`` on every machine (numpy's PCG64 and cv2's drawing).
    """
    width, height = size
    rng = np.random.default_rng(seed)
    ramp_x = np.linspace(40, 200, width, dtype=np.float32)[None, :]
    ramp_y = np.linspace(60, 160, height, dtype=np.float32)[:, None]
    image = np.stack([ramp_x + 0 * ramp_y, ramp_y + 0 * ramp_x, (ramp_x + ramp_y) / 2], axis=-1).astype(np.uint8)
    for _ in range(40):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        extent = int(rng.integers(height // 20, height // 4))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + extent, y + int(extent * rng.uniform(0.5, 2.0))), colour, -1)
        else:
            cv2.circle(image, (x, y), extent // 2, colour, -1)
    noise = rng.normal(0.0, 6.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


MAX_BENCH_IMAGES = 100
"""Most images ``bench --image FOLDER`` reads (the first by name): they are all held in memory while timing."""


def load_images(path: Path) -> list[np.ndarray]:
    """The images of a file or a folder (regular files by suffix, sorted by name, at most :data:`MAX_BENCH_IMAGES`),
    as BGR uint8 arrays, each read under the default pixel budget (:func:`~nanodet_infer.images.load_image`: a
    decoder bomb or an undecodable file raises its typed error naming it)."""
    from .images import load_image

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ImageReadError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {safe_text(path)}")
        files = files[:MAX_BENCH_IMAGES]
    else:
        files = [path]
    return [load_image(p) for p in files]


# ---------------------------------------------------------------------------------------------- timing
def summarize(samples_ms: list[float]) -> dict[str, float]:
    """``median``, ``p90``, ``p99``, ``mean``, ``min`` (milliseconds) and ``n`` of a list of samples."""
    if not samples_ms:
        return {"median": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan"),
                "min": float("nan"), "n": 0}
    data = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return {"median": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(data.mean()),
            "min": float(data.min()), "n": int(data.size)}


@dataclass
class Measurement:
    """Samples (ms) of one configuration, per stage; stages that were not measured stay empty."""

    name: str
    group: str
    facts: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})

    def stats(self) -> dict[str, dict[str, float]]:
        """Summary statistics of every measured stage."""
        return {stage: summarize(values) for stage, values in self.samples.items() if values}

    def median(self, stage: str = "end_to_end") -> float:
        """Median of one stage (NaN when it was not measured)."""
        return summarize(self.samples.get(stage, []))["median"]


@dataclass
class Entry:
    """One thing to time: ``call()``; ``stages(value)`` extracts per-stage ms from its return value."""

    measurement: Measurement
    call: Callable[[], Any]
    stages: Callable[[Any], dict[str, float]] | None = None


def measure_side_by_side(
    entries: list[Entry], *, iters: int, warmup: int, tick: Callable[[], None], block: int = 10,
    time_limit_s: float | None = None,
) -> int:
    """Time every entry ``iters`` times (after ``warmup`` untimed calls each), interleaved in blocks.

    Entries take turns in blocks of ``block`` calls, so load from other processes on a shared
    machine hits all of them alike and their *ratios* stay meaningful. Each call's wall time is
    appended to ``end_to_end``; the stages ``stages`` reports to their own lists. ``tick`` runs after
    every call (progress bar).

    ``time_limit_s`` caps the phase by time as well as by count: warm-up stops once a quarter of it is
    spent (each entry still gets one call), and no new round of blocks starts once it is spent (at least
    one round runs), so every entry keeps the same number of samples. Returns the timed calls per entry.
    """
    start_phase = time.perf_counter()

    def spent(fraction: float) -> bool:
        return time_limit_s is not None and time.perf_counter() - start_phase > time_limit_s * fraction

    for entry in entries:
        for i in range(warmup):
            if i and spent(0.25):
                break
            entry.call()
            tick()
    done = 0
    while done < iters and not (done and spent(1.0)):
        count = min(block, iters - done)
        for entry in entries:
            samples = entry.measurement.samples
            for _ in range(count):
                start = time.perf_counter()
                value = entry.call()
                samples["end_to_end"].append((time.perf_counter() - start) * 1e3)
                if entry.stages is not None:
                    for stage, ms in entry.stages(value).items():
                        samples[stage].append(ms)
                tick()
        done += count
    return done


# ---------------------------------------------------------------------------------------------- one engine
def bare_tensor(detector: Any, image: np.ndarray, batch: int) -> np.ndarray:
    """The preprocessed ``[B, 3, H, W]`` tensor of ``image`` repeated ``batch`` times (any family)."""
    one = detector.network_input(image)
    return np.ascontiguousarray(np.repeat(one[None], batch, axis=0))


def _stage_sums(results: list[Any]) -> dict[str, float]:
    return {
        "preprocess": sum(r.timings.preprocess_ms for r in results),
        "inference": sum(r.timings.inference_ms for r in results),
        "postprocess": sum(r.timings.postprocess_ms for r in results),
    }


def _bare_call(backend: Any, tensor: np.ndarray) -> Callable[[], Any]:
    if backend.input_shape[0] is None or tensor.shape[0] == 1:
        return lambda: backend.run(tensor)
    singles = [tensor[i : i + 1] for i in range(tensor.shape[0])]
    return lambda: [backend.run(t) for t in singles]


@dataclass
class EngineRun:
    """One engine at one thread count: its detector and the two measurements :func:`engine_entries` made."""

    label: str
    backend: str
    precision: str
    threads: int
    detector: Any
    ours: Measurement
    bare: Measurement
    entries: list[Entry]


INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "FakeQuantize"})
"""Op types of a quantized graph: ONNX QDQ nodes, OpenVINO's FakeQuantize."""


def engine_label(path: Path, backend: str, precision: str) -> str:
    """``"<backend> <precision>"`` of a measured engine, ``int8`` for a quantized model file."""
    from .backends import inspect_model

    quantized = any(op in INT8_OPS for _, op in inspect_model(path).op_types)
    return f"{backend} {'int8' if quantized else precision}"


def engine_entries(
    label: str, backend: str, precision: str, path: Path, threads: int, images: list[np.ndarray], batch: int,
    score_threshold: float | None,
) -> EngineRun:
    """A :class:`~nanodet_infer.Detector` on ``images`` (cycled, ``batch`` per call, per-stage times) and bare
    ``backend.run`` on the first image's tensor, ready for :func:`measure_side_by_side`. ``score_threshold``
    None: the model family's default; ``backend`` may be ``"auto"`` (the run names the engine chosen);
    ``label`` empty: :func:`engine_label`."""
    from .backends import create_backend
    from .detector import Detector

    detector = Detector(path, backend=backend, num_threads=threads, precision=precision,
                        score_threshold=score_threshold)
    backend = detector.backend_name
    label = label or engine_label(path, backend, precision)
    engine = create_backend(path, backend, num_threads=threads, precision=precision)
    tensor = bare_tensor(detector, images[0], batch)
    cycle = itertools.cycle(images)
    ours = Measurement(f"{label}, {threads} thr", "ours", {"engine": label, "threads": threads})
    bare = Measurement(f"{label}, {threads} thr, bare", "bare", {"engine": label, "threads": threads})
    entries = [Entry(ours, lambda: detector.detect_batch([next(cycle) for _ in range(batch)]), _stage_sums),
               Entry(bare, _bare_call(engine, tensor))]
    return EngineRun(label, backend, precision, threads, detector, ours, bare, entries)


def engine_row(run: EngineRun, image: np.ndarray, batch: int) -> dict[str, Any]:
    """The result row of a measured :class:`EngineRun` (keys as in docs/benchmark.md, without PyTorch)."""
    e2e = run.ours.median()
    return {
        "engine": run.label, "backend": run.backend, "precision": run.precision, "threads": run.threads,
        "stages_ms": run.ours.stats(), "bare_inference_ms": run.bare.stats()["end_to_end"],
        "overhead": e2e / run.bare.median(), "images_per_s": 1e3 * batch / e2e,
        "detections": len(run.detector(image)),
    }


# ---------------------------------------------------------------------------------------------- command
def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Per-stage latency of an exported model on this machine: our Detector "
        "(preprocess, inference, postprocess, end-to-end) next to bare inference on the same tensor. "
        "The full study (built-in model, PyTorch comparison) is benchmarks/latency.py in a source checkout.")
    parser.add_argument("--model", "-m", type=Path, required=True, help=".onnx or OpenVINO .xml")
    parser.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "openvino"),
                        help="default auto: as detect (OpenVINO if installed, an INT8 .onnx on ONNX Runtime)")
    parser.add_argument("--precision", default="f32", choices=("f32", "bf16", "f16"))
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--size", default=None, help="W,H of the synthetic image (default 1280,720)")
    parser.add_argument("--image", type=Path, default=None, help="an image file or folder instead of the synthetic one")
    parser.add_argument("--batch", type=int, default=1, help="images per call (batched when the model allows)")
    parser.add_argument("--iters", type=int, default=100, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations first")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="the Detector's score threshold (default: the model family's detection default)")
    parser.add_argument("--json", type=Path, default=None, help="write the result row as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "nanodet-infer bench") -> int:
    """Measure one model on one engine; print a Markdown table; ``--json`` the row. Returns the exit status.

    Bad options raise :class:`~nanodet_infer.errors.InvalidArgumentError` (the caller prints it).
    """
    from tqdm import tqdm

    from .cli.arguments import parse_size
    from .errors import InvalidArgumentError
    from .paths import check_output_file, write_json

    args = _parser(prog).parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.batch < 1 or args.threads < 1:
        raise InvalidArgumentError("--iters, --batch and --threads must be >= 1 and --warmup >= 0")
    size = parse_size(args.size, "--size") if args.size else SYNTHETIC_SIZE
    if args.json is not None:
        check_output_file(args.json, "--json", [args.model], overwrite=args.overwrite)
    images = load_images(args.image) if args.image is not None else [synthetic_image(size)]
    run = engine_entries("", args.backend, args.precision, args.model, args.threads, images, args.batch,
                         args.score_threshold)
    label = run.label
    with tqdm(total=2 * (args.iters + args.warmup), desc="bench", unit="call", file=sys.stderr,
              disable=args.no_progress) as bar:
        measure_side_by_side(run.entries, iters=args.iters, warmup=args.warmup, tick=bar.update)
    row = engine_row(run, images[0], args.batch)
    stages = row["stages_ms"]
    print(f"{safe_text(args.model)}: {images[0].shape[1]}x{images[0].shape[0]} input, batch {args.batch}, "
          f"{args.iters} iterations after {args.warmup} warm-up on {os.cpu_count()} logical cores; median ms")
    print("| engine | threads | preprocess | inference | postprocess | end-to-end | bare inference | e2e / bare | "
          "images/s | detections |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cells = " | ".join(f"{stages[stage]['median']:.2f}" for stage in STAGES)
    print(f"| {label} | {args.threads} | {cells} | {row['bare_inference_ms']['median']:.2f} | "
          f"{row['overhead']:.2f}× | {row['images_per_s']:.1f} | {row['detections']} |")
    if args.json is not None:
        write_json(args.json, row)
    return 0
