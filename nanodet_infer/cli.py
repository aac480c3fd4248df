"""``nanodet-infer``: detect on images/folders/videos, benchmark, and COCO-evaluate an exported model.

Commands::

    nanodet-infer detect PATH... --model M [--save-dir DIR] [--json FILE] [options]
    nanodet-infer eval --model M --ann instances.json --images DIR [--json FILE] [options]
    nanodet-infer bench [benchmarks/latency.py options]

User errors print one line (``nanodet-infer: error: ...``) and exit with status 2; ``--verbose`` shows
the traceback instead. Nothing here imports torch: ``bench`` runs ``benchmarks/latency.py`` from a
source checkout (it is not part of a wheel install) and that script imports torch only for its own
comparison columns.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ImageReadError, InvalidArgumentError, NanoDetError

PROG = "nanodet-infer"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


# ---------------------------------------------------------------------------------------------- parser
def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def _size(text: str) -> tuple[int, int]:
    values = _int_list(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected W,H, got {text!r}")
    return values[0], values[1]


def _add_model_options(parser: argparse.ArgumentParser, *, score_threshold: float) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", required=True, help="exported model (.onnx or OpenVINO .xml)")
    group.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "openvino"))
    group.add_argument("--score-threshold", type=float, default=score_threshold)
    group.add_argument("--iou-threshold", type=float, default=0.6)
    group.add_argument("--max-detections", type=int, default=100)
    group.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    group.add_argument("--precision", default="f32", choices=("f32", "bf16", "f16"))
    ratio = group.add_mutually_exclusive_group()
    ratio.add_argument("--keep-ratio", dest="keep_ratio", action="store_true", default=None,
                       help="letterbox (keep aspect ratio); default: what the model was trained with")
    ratio.add_argument("--stretch", dest="keep_ratio", action="store_false", help="stretch to the input size")
    group.add_argument("--single-label", action="store_true", help="one class per box (argmax) instead of multi-label")
    group.add_argument("--allow-control-flow", action="store_true",
                       help="accept a model with Loop/Scan/TensorIterator (refused by default: can hang the engine)")
    foreign = parser.add_argument_group("foreign models (no nanodet metadata, e.g. upstream's export_onnx.py output)")
    foreign.add_argument("--num-classes", type=int, default=None)
    foreign.add_argument("--class-names", default=None,
                         help="comma-separated names, or a UTF-8 text file with one name per line")
    foreign.add_argument("--reg-max", type=int, default=None)
    foreign.add_argument("--strides", type=_int_list, default=None, help="e.g. 8,16,32,64")
    foreign.add_argument("--input-size", type=_size, default=None, help="W,H")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nanodet-infer`` (exposed for docs and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", help="show tracebacks on errors")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Detect with, benchmark and COCO-evaluate an exported NanoDet-Plus model (ORT / OpenVINO).",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{detect,eval,bench}")

    detect = sub.add_parser(
        "detect",
        parents=[common],
        help="detect objects in images, folders and videos",
        description="Detect objects in images, folders of images and videos.",
        epilog="An input that cannot be read (not a decodable image, a video OpenCV cannot open) prints a "
        "one-line warning on stderr and is skipped; the other inputs are still processed and the exit status is "
        "then 2. Any other error stops the run with exit status 2 (--json still holds the rows found so far).",
    )
    detect.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder of images, or video file")
    _add_model_options(detect, score_threshold=0.35)
    out = detect.add_argument_group("output")
    out.add_argument("--save-dir", type=Path, default=None,
                     help="write annotated images here under their own names (a name with no suffix, or one "
                     "OpenCV cannot write, gets .jpg appended: photo -> photo.jpg) and videos as NAME.mp4")
    out.add_argument("--json", type=Path, default=None,
                     help="write COCO result rows here (atomically; also when the run stops on an error)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluate = sub.add_parser("eval", parents=[common], help="COCO box mAP on an annotated image folder")
    _add_model_options(evaluate, score_threshold=0.05)
    evaluate.add_argument("--ann", type=Path, required=True, help="COCO instances JSON")
    evaluate.add_argument("--images", type=Path, required=True, help="folder the annotation file names refer to")
    evaluate.add_argument("--json", type=Path, default=None,
                          help="also write the stats (and result rows) here (atomically)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")

    sub.add_parser(
        "bench",
        parents=[common],
        add_help=False,
        help="latency benchmark (benchmarks/latency.py; source checkout only); `bench --help` for its options",
    )
    return parser


# ---------------------------------------------------------------------------------------------- detector
def _class_names(text: str | None) -> list[str] | None:
    """``--class-names``: a UTF-8 text file with one name per line, or comma-separated names."""
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"--class-names file {path} is not UTF-8 text; give a UTF-8 text file with one name per line"
            ) from None
        names = [line.strip() for line in content.splitlines() if line.strip()]
    else:
        names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise InvalidArgumentError(f"--class-names {text!r} names no class")
    return names


def make_detector(args: argparse.Namespace) -> Any:
    """Build a :class:`~nanodet_infer.Detector` from parsed command-line options."""
    from .detector import Detector

    facts: dict[str, Any] = {}
    names = _class_names(args.class_names)
    if names is not None:
        facts["class_names"] = names
    for key in ("num_classes", "reg_max", "strides", "input_size"):
        value = getattr(args, key)
        if value is not None:
            facts[key] = tuple(value) if isinstance(value, list) else value
    return Detector(
        args.model,
        backend=args.backend,
        score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold,
        max_detections=args.max_detections,
        num_threads=args.threads,
        precision=args.precision,
        keep_ratio=args.keep_ratio,
        multi_label=not args.single_label,
        allow_control_flow=args.allow_control_flow,
        **facts,
    )


# ---------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Source:
    """One input: an image file or a video file."""

    path: Path
    is_video: bool


def collect_sources(paths: Sequence[str | Path]) -> list[Source]:
    """Expand files and folders (images in a folder, sorted by name, not recursive) into sources."""
    sources: list[Source] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageReadError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {path}")
            sources.extend(Source(p, False) for p in found)
        elif path.is_file():
            sources.append(Source(path, path.suffix.lower() in VIDEO_SUFFIXES))
        else:
            raise ImageReadError(f"no such file or folder: {path}")
    return sources


def _video_frames(path: Path) -> tuple[Iterator[Any], int, float, tuple[int, int]]:
    """Frames of a video (BGR uint8), its frame count (0 if unknown), fps and (W, H)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ImageReadError(f"cannot open video {path} (not a video, or no codec for it in OpenCV)")
    count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def frames() -> Iterator[Any]:
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()

    return frames(), count, fps, size


# ---------------------------------------------------------------------------------------------- drawing
def _colour(class_id: int) -> tuple[int, int, int]:
    """A fixed, well-spread BGR colour per class id."""
    import cv2
    import numpy as np

    hsv = np.uint8([[[(class_id * 47) % 180, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_detections(image: Any, detections: Any) -> Any:
    """A copy of ``image`` (BGR uint8) with boxes and ``name score`` labels drawn on it."""
    import cv2

    canvas = image.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    for box, score, class_id, name in zip(
        detections.xyxy, detections.scores, detections.class_ids, detections.labels, strict=True
    ):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        colour = _colour(int(class_id))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        label = f"{name} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, 1)
        top = max(y1 - th - base, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw, top + th + base), colour, -1)
        cv2.putText(canvas, label, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas


def _unique_path(directory: Path, name: str, used: set[Path]) -> Path:
    candidate = directory / name
    stem, suffix, k = candidate.stem, candidate.suffix, 1
    while candidate in used:
        candidate = directory / f"{stem}_{k}{suffix}"
        k += 1
    used.add(candidate)
    return candidate


def annotated_name(path: Path) -> str:
    """File name of an annotated image: ``path``'s own name, with ``.jpg`` appended when OpenCV cannot write
    its suffix (no suffix, or one outside :data:`IMAGE_SUFFIXES` that OpenCV has no writer for)."""
    import cv2

    if path.suffix.lower() in IMAGE_SUFFIXES and cv2.haveImageWriter(path.name):
        return path.name
    return path.name + ".jpg"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically: a temporary file in ``path``'s folder, then ``os.replace``.

    Readers never see a half-written file; on any error the temporary file is removed and ``path`` is
    left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- commands
def _summary(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts.most_common()) or "nothing"


@dataclass
class _Progress:
    """Running totals of a ``detect`` run."""

    rows: list[dict[str, Any]]
    used: set[Path]
    images: int = 0
    detections: int = 0
    unreadable: int = 0


def _open_video_writer(out_path: Path, fps: float, size: tuple[int, int]) -> tuple[Any, Path]:
    """A ``cv2.VideoWriter`` on a hidden temporary name next to ``out_path``, and that name."""
    import cv2

    temporary = out_path.with_name(f".{out_path.stem}.partial{out_path.suffix}")
    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        temporary.unlink(missing_ok=True)
        raise ImageReadError(f"cannot write video {out_path} (no mp4v encoder in this OpenCV build)")
    return writer, temporary


def _detect_video(video: Any, source: Source, detector: Any, args: argparse.Namespace, progress: _Progress) -> None:
    """Detect on every frame of an opened video (:func:`_video_frames`); write ``NAME.mp4`` once it is done.

    The annotated video is written under a temporary name and renamed at the end, so a run that fails
    mid-way leaves no half-written ``.mp4``.
    """
    from tqdm import tqdm

    frames, count, fps, size = video
    out_path = writer = temporary = None
    if args.save_dir is not None:
        out_path = _unique_path(args.save_dir, source.path.stem + ".mp4", progress.used)
        writer, temporary = _open_video_writer(out_path, fps, size)
    bar = tqdm(frames, total=count or None, desc=source.path.name, unit="frame", disable=args.no_progress)
    per_class: Counter[str] = Counter()
    try:
        for index, frame in enumerate(bar):
            result = detector(frame)
            per_class.update(result.labels)
            for row in result.to_coco(progress.images):
                progress.rows.append({**row, "file_name": source.path.name, "frame": index})
            if writer is not None:
                writer.write(draw_detections(frame, result))
            progress.images += 1
            progress.detections += len(result)
        if writer is not None:
            writer.release()
            os.replace(temporary, out_path)
    finally:
        if writer is not None:
            writer.release()
            temporary.unlink(missing_ok=True)
    tqdm.write(f"{source.path}: {bar.n} frames; {_summary(per_class)}")


def _detect_image(image: Any, source: Source, detector: Any, args: argparse.Namespace, progress: _Progress) -> str:
    """Detect on one loaded image; write its annotated copy (:func:`annotated_name`); the summary line."""
    import cv2

    result = detector(image)
    for row in result.to_coco(progress.images):
        progress.rows.append({**row, "file_name": source.path.name})
    if args.save_dir is not None:
        out_path = _unique_path(args.save_dir, annotated_name(source.path), progress.used)
        if not cv2.imwrite(str(out_path), draw_detections(image, result)):
            raise ImageReadError(f"could not write {out_path}; check that --save-dir is writable")
    progress.images += 1
    progress.detections += len(result)
    return f"{source.path}: {len(result)} detections ({_summary(Counter(result.labels))})"


def _read_source(source: Source) -> Any:
    """The decoded image, or the opened video, of ``source``; :class:`ImageReadError` if it cannot be read."""
    from .images import load_image

    return _video_frames(source.path) if source.is_video else load_image(source.path)


def _run_sources(sources: list[Source], detector: Any, args: argparse.Namespace, progress: _Progress) -> None:
    """Detect on every source; an unreadable one is a warning on stderr (counted), not the end of the run."""
    from tqdm import tqdm

    images = [s for s in sources if not s.is_video]
    with tqdm(total=len(images), desc="images", unit="img", disable=args.no_progress or not images) as bar:
        for source in sources:
            try:
                data = _read_source(source)
            except ImageReadError as exc:
                progress.unreadable += 1
                tqdm.write(f"{PROG}: warning: {exc}; skipped", file=sys.stderr)
                if not source.is_video:
                    bar.update()
                continue
            if source.is_video:
                _detect_video(data, source, detector, args, progress)
                continue
            line = _detect_image(data, source, detector, args, progress)
            if len(images) <= 20:
                tqdm.write(line)
            bar.update()


def run_detect(args: argparse.Namespace) -> int:
    """``nanodet-infer detect``: returns the exit status (2 when an input could not be read)."""
    sources = collect_sources(args.paths)
    detector = make_detector(args)
    if args.save_dir is not None:
        args.save_dir.mkdir(parents=True, exist_ok=True)
    progress = _Progress(rows=[], used=set())
    started = time.perf_counter()
    try:
        _run_sources(sources, detector, args, progress)
    finally:
        if args.json is not None:
            write_json(args.json, progress.rows)
    elapsed = time.perf_counter() - started
    rate = progress.images / elapsed if elapsed > 0 else 0.0
    print(f"{progress.images} images/frames, {progress.detections} detections, {rate:.1f} images/s"
          + (f"; annotated output in {args.save_dir}" if args.save_dir is not None else "")
          + (f"; COCO results in {args.json}" if args.json is not None else ""))
    if progress.unreadable:
        print(f"{PROG}: error: {progress.unreadable} of {len(sources)} inputs could not be read "
              "(see the warnings above); the others were processed", file=sys.stderr)
        return 2
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """``nanodet-infer eval``: prints the COCO numbers; returns the exit status."""
    from .evaluate import STAT_NAMES, evaluate_coco

    detector = make_detector(args)
    stats = evaluate_coco(detector, args.ann, args.images, progress=not args.no_progress)
    for name in STAT_NAMES:
        print(f"{name:<10} {stats[name]:.4f}")
    print(f"{stats['num_images']} images, {stats['num_detections']} detections")
    if args.json is not None:
        write_json(args.json, stats)
    return 0


def _load_benchmarks() -> Any:
    """``benchmarks.latency`` from the source tree this package was installed from (editable installs)."""
    import importlib
    import importlib.util

    root = Path(__file__).resolve().parent.parent / "benchmarks"
    if not (root / "latency.py").is_file():
        return None
    if "benchmarks" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "benchmarks", root / "__init__.py", submodule_search_locations=[str(root)]
        )
        if spec is None or spec.loader is None:
            return None
        package = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks"] = package
        spec.loader.exec_module(package)
    return importlib.import_module("benchmarks.latency")


def run_bench(extra: Sequence[str]) -> int:
    """``nanodet-infer bench``: run ``benchmarks/latency.py`` with ``extra`` arguments."""
    latency = _load_benchmarks()
    if latency is None:
        print(
            f"{PROG}: error: the benchmark lives in the source tree (benchmarks/latency.py) and is not part of "
            'a wheel install; clone the repository and run: pip install -e ".[all]" && nanodet-infer bench',
            file=sys.stderr,
        )
        return 2
    return int(latency.main(list(extra)) or 0)


# ---------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nanodet-infer``; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        return _guarded(lambda: run_bench(extra), args.verbose)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    command = run_detect if args.command == "detect" else run_eval
    return _guarded(lambda: command(args), args.verbose)


def _guarded(call: Any, verbose: bool) -> int:
    """Run ``call``; turn user errors into one line on stderr and exit status 2."""
    try:
        return call()
    except (NanoDetError, OSError) as exc:
        if verbose:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
