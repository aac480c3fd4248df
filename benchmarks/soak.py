"""Soak test: one :class:`~nanodet_infer.Detector`, many calls, bounded memory.

``python benchmarks/soak.py [--calls 20000] [--backend onnxruntime|openvino] [--json out.json]`` runs one
detector (by default the upstream shapes model of ``tests/data`` with ``num_classes=3``, one engine
thread) for ``--calls`` calls, cycling over the fixture images (as arrays, and every tenth as a path)
and synthetic images of varied sizes and layouts (1x1, 33x17, 1x5000, grayscale, BGRA, non-contiguous,
read-only). Every ``--bad-every`` calls it also feeds a bad input (None, float, empty, HxWx2, a missing
path, ...) and checks that the documented error is raised. Every result is checked: finite, scores
sorted, boxes inside the image.

Resident memory is sampled after ``--warmup`` calls and at the end; the script prints calls/s and the
RSS growth, and exits 1 when the growth is ``>= --max-growth-mb`` (default 20) or any check failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanodet_infer import Detector  # noqa: E402
from nanodet_infer.errors import ImageReadError, InvalidImageError, NanoDetError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ROOT / "tests" / "data" / "shapes-m-256"
DEFAULT_MODEL = SHAPES / "upstream_export.onnx"


def rss_mb() -> float:
    """Resident set size of this process in MiB (psutil when installed, else ``/proc/self/statm``)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return psutil.Process().memory_info().rss / 2**20


def good_inputs() -> list[Any]:
    """The inputs cycled over: fixture images (arrays, some paths) and synthetic images of varied shapes."""
    paths = sorted((SHAPES / "images").glob("*.jpg"))
    arrays: list[Any] = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    read_only = wide[:300].copy()
    read_only.flags.writeable = False
    synthetic = [
        rng.integers(0, 256, (1, 1, 3), dtype=np.uint8),
        rng.integers(0, 256, (17, 33, 3), dtype=np.uint8),
        rng.integers(0, 256, (1, 5000, 3), dtype=np.uint8),
        rng.integers(0, 256, (480, 640), dtype=np.uint8),  # grayscale
        rng.integers(0, 256, (200, 300, 4), dtype=np.uint8),  # BGRA
        wide[::2, ::3],  # non-contiguous view
        read_only,
    ]
    return arrays + [str(p) for p in paths[:2]] + synthetic


def bad_inputs(tmp_missing: Path) -> list[tuple[Any, type[NanoDetError]]]:
    """Inputs that must raise, with the error class they must raise."""
    return [
        (None, InvalidImageError),
        (np.zeros((32, 32, 3), np.float32), InvalidImageError),
        (np.zeros((0, 10, 3), np.uint8), InvalidImageError),
        (np.zeros((16, 16, 2), np.uint8), InvalidImageError),
        (np.zeros((2, 16, 16, 3), np.uint8), InvalidImageError),
        (str(tmp_missing), ImageReadError),
    ]


def check_result(result: Any) -> str | None:
    """A problem with a :class:`Detections`, or None."""
    width, height = result.image_size
    xyxy, scores = result.xyxy, result.scores
    if not (np.isfinite(xyxy).all() and np.isfinite(scores).all()):
        return "non-finite box or score"
    if len(xyxy) and (
        xyxy[:, 0::2].min() < 0
        or xyxy[:, 0::2].max() > width
        or xyxy[:, 1::2].max() > height
        or xyxy[:, 1::2].min() < 0
    ):
        return "box outside the image"
    if np.any(np.diff(scores) > 0):
        return "scores not sorted"
    return None


def soak(detector: Callable[[Any], Any], calls: int, warmup: int, bad_every: int) -> dict[str, Any]:
    """Run the soak loop; returns the figures (see the module docstring)."""
    inputs = good_inputs()
    bad = bad_inputs(ROOT / "no-such-image-file.jpg")
    failures: list[str] = []
    bad_caught = 0
    rss_start = None
    start = time.perf_counter()
    timed_from = 0
    for call in range(calls):
        if call == warmup:
            gc.collect()
            rss_start = rss_mb()
            start, timed_from = time.perf_counter(), call
        if bad_every and call % bad_every == bad_every - 1:
            image, error = bad[(call // bad_every) % len(bad)]
            try:
                detector(image)
            except error:
                bad_caught += 1
            else:
                failures.append(f"call {call}: bad input did not raise {error.__name__}")
            continue
        problem = check_result(detector(inputs[call % len(inputs)]))
        if problem:
            failures.append(f"call {call}: {problem}")
    seconds = time.perf_counter() - start
    gc.collect()
    rss_end = rss_mb()
    if rss_start is None:
        rss_start = rss_end
    return {
        "calls": calls,
        "warmup": warmup,
        "timed_calls": calls - timed_from,
        "seconds": seconds,
        "calls_per_s": (calls - timed_from) / seconds if seconds > 0 else float("nan"),
        "bad_inputs_caught": bad_caught,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_growth_mb": rss_end - rss_start,
        "failures": failures[:20],
        "num_failures": len(failures),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(prog="soak.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="detector calls in all (default 20000)")
    parser.add_argument("--warmup", type=int, default=500, help="calls before the first RSS sample (default 500)")
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "openvino"))
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model file (default: the upstream shapes model of tests/data, num_classes=3)",
    )
    parser.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    parser.add_argument("--bad-every", type=int, default=50, help="a bad input every N calls (0: none)")
    parser.add_argument("--max-growth-mb", type=float, default=20.0, help="fail at this RSS growth (default 20)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.calls < 1 or not 0 <= args.warmup < args.calls or args.bad_every < 0 or args.threads < 1:
        parser.error("need --calls >= 1, 0 <= --warmup < --calls, --bad-every >= 0, --threads >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak test; 0 when memory stayed bounded and every check passed, else 1."""
    args = parse_args(argv)
    facts = {"num_classes": 3} if args.model is None else {}
    detector = Detector(
        args.model or DEFAULT_MODEL, backend=args.backend, num_threads=args.threads, score_threshold=0.05, **facts
    )
    figures = soak(detector, args.calls, args.warmup, args.bad_every)
    figures.update(
        backend=args.backend, model=str(args.model or DEFAULT_MODEL.relative_to(ROOT)), max_growth_mb=args.max_growth_mb
    )
    ok = figures["rss_growth_mb"] < args.max_growth_mb and figures["num_failures"] == 0
    print(
        f"soak {args.backend}: {figures['calls']} calls ({figures['bad_inputs_caught']} bad inputs caught), "
        f"{figures['calls_per_s']:.1f} calls/s after {args.warmup} warm-up calls\n"
        f"RSS {figures['rss_start_mb']:.1f} MiB -> {figures['rss_end_mb']:.1f} MiB "
        f"(growth {figures['rss_growth_mb']:+.2f} MiB, limit {args.max_growth_mb:g})\n"
        f"{'PASS' if ok else 'FAIL'}" + "".join(f"\n  {f}" for f in figures["failures"])
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
