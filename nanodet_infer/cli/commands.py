"""The ``nanodet-infer`` commands ``detect``, ``eval`` and ``bench``, and the entry point :func:`main`.

User errors print one line (``nanodet-infer: error: ...``) and exit with status 2; ``--verbose`` shows
the traceback instead. Ctrl-C and SIGTERM stop a run the same way (the ``--json`` rows so far are
written, temporary files removed) with status 130 / 143. Every output path is checked before the model
is loaded (:mod:`.outputs`). Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ImageReadError, InvalidArgumentError, NanoDetError
from ..paths import atomic_path, check_output_file, check_output_folder, is_within, real, write_json
from ..results import background_ids, foreground
from ..safetext import safe_text
from . import arguments
from .arguments import PROG, build_parser
from .drawing import draw_detections
from .live import run_live, wants_live
from .signals import exit_status, terminate_like_interrupt
from .sources import Source, collect_sources, output_paths, video_frames


def _summary(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {safe_text(name)}" for name, n in counts.most_common()) or "nothing"


def model_inputs(args: argparse.Namespace) -> list[Path]:
    """The files a command reads besides its images: the model (and an IR's ``.bin``), a class-names file."""
    model = Path(args.model)
    files = [model, model.with_suffix(".bin")] if model.suffix.lower() == ".xml" else [model]
    if args.class_names is not None and Path(args.class_names).is_file():
        files.append(Path(args.class_names))
    return files


# ---------------------------------------------------------------------------------------------- detect
@dataclass
class _Progress:
    """Running totals of a ``detect`` run."""

    rows: list[dict[str, Any]]
    images: int = 0
    detections: int = 0
    unreadable: int = 0


def _video_writer(temporary: Path, out_path: Path, fps: float, size: tuple[int, int]) -> Any:
    """A ``cv2.VideoWriter`` (mp4v) writing ``temporary``; ``out_path`` names it in the error."""
    import cv2

    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise ImageReadError(f"cannot write video {safe_text(out_path)} (no mp4v encoder in this OpenCV build)")
    return writer


def _detect_video(video: Any, source: Source, detector: Any, out_path: Path | None, args: argparse.Namespace,
                  progress: _Progress) -> None:
    """Detect on every frame of an opened video (:func:`video_frames`); write ``out_path`` once it is done.

    The annotated video is written under a temporary name and renamed at the end, so a run that fails
    or is stopped mid-way leaves no half-written ``.mp4``. A frame whose size differs from the video's (a stream
    that changes resolution) is detected at its own size and drawn scaled to the video's size (a warning says how
    many); a frame that does not decode is passed over (a warning says how many). A video without a single decodable
    frame raises :class:`ImageReadError` (no ``.mp4`` is left).
    """
    import cv2
    from tqdm import tqdm

    frames, count, fps, size = video
    per_class: Counter[str] = Counter()
    done = resized = undecodable = 0
    with contextlib.ExitStack() as stack:
        writer = None
        if out_path is not None:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            temporary = stack.enter_context(atomic_path(out_path, ".mp4"))
            writer = _video_writer(temporary, out_path, fps, size)
            stack.callback(writer.release)  # runs first: the file is complete before it is renamed
        bar = tqdm(frames, total=count or None, desc=safe_text(source.path.name), unit="frame",
                   disable=args.no_progress)
        for index, frame, found in _detect_in_order(detector, enumerate(bar), args.workers):
            if found is None:  # a frame that does not decode (video_frames): passed over
                undecodable += 1
                continue
            result = foreground(found)
            per_class.update(result.labels)
            for row in result.to_coco(progress.images):
                progress.rows.append({**row, "file_name": source.path.name, "path": str(source.path), "frame": index})
            if writer is not None:
                drawn = draw_detections(frame, result)
                if (drawn.shape[1], drawn.shape[0]) != size:
                    drawn, resized = cv2.resize(drawn, size, interpolation=cv2.INTER_AREA), resized + 1
                writer.write(drawn)
            progress.images += 1
            progress.detections += len(result)
            done += 1
        if done == 0:
            raise ImageReadError(f"video {safe_text(source.path)} has no decodable frame")
    if undecodable:
        tqdm.write(f"{PROG}: warning: {safe_text(source.path)}: {undecodable} frames do not decode; passed over",
                   file=sys.stderr)
    if resized:
        tqdm.write(f"{PROG}: warning: {safe_text(source.path)}: {resized} frames differ in size from the video's "
                   f"{size[0]}x{size[1]}; detected at their own size, drawn scaled", file=sys.stderr)
    tqdm.write(f"{safe_text(source.path)}: {done} frames; {_summary(per_class)}")


def _record_image(image: Any, result: Any, source: Source, out_path: Path | None, progress: _Progress) -> str:
    """Write the annotated copy of one loaded image to ``out_path``, then record its detections (a run stopped
    while the copy is written has no rows for it); the summary line."""
    import cv2

    result = foreground(result)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_path, out_path.suffix) as temporary:
            if not cv2.imwrite(str(temporary), draw_detections(image, result)):
                raise ImageReadError(f"could not write {safe_text(out_path)}; check that --save-dir is writable")
    for row in result.to_coco(progress.images):
        progress.rows.append({**row, "file_name": source.path.name, "path": str(source.path)})
    progress.images += 1
    progress.detections += len(result)
    return f"{safe_text(source.path)}: {len(result)} detections ({_summary(Counter(result.labels))})"


def _detect_in_order(detector: Any, entries: Iterable[tuple[Any, Any]], workers: int | None
                     ) -> Iterator[tuple[Any, Any, Any]]:
    """``(tag, image)`` entries -> ``(tag, image, Detections)`` in input order, detected by ``detector.stream``.

    The decoded image comes back with its result (for the annotated copy); the stream reads at most
    ``2 * workers`` entries ahead. An entry whose image is an exception (an input that could not be read) is
    never sent to the detector: it comes back in its own place with ``None`` for the detections.
    """
    waiting: deque[tuple[Any, Any]] = deque()

    def images() -> Iterator[Any]:
        for tag, image in entries:
            waiting.append((tag, image))
            if not isinstance(image, Exception):
                yield image

    def skipped() -> Iterator[tuple[Any, Any, None]]:
        while waiting and isinstance(waiting[0][1], Exception):
            yield (*waiting.popleft(), None)

    for result in detector.stream(images(), workers=workers):
        yield from skipped()
        yield (*waiting.popleft(), result)
    yield from skipped()


def _read_images(sources: Iterable[Source], max_pixels: int) -> Iterator[tuple[Source, Any]]:
    """``(source, decoded image)``, or ``(source, ImageReadError)`` for a file that cannot be read or declares more
    than ``max_pixels`` pixels (never decoded)."""
    from ..images import load_image

    for source in sources:
        try:
            yield source, load_image(source.path, max_pixels)
        except ImageReadError as exc:
            yield source, exc


def _warn_unreadable(exc: ImageReadError, progress: _Progress) -> None:
    from tqdm import tqdm

    progress.unreadable += 1
    tqdm.write(f"{PROG}: warning: {safe_text(exc)}; skipped", file=sys.stderr)


def _run_sources(sources: Sequence[Source], detector: Any, planned: dict[Source, Path], args: argparse.Namespace,
                 progress: _Progress) -> None:
    """Detect on every source, in order: each run of consecutive images, and each video's frames, through
    ``detector.stream``; an unreadable input is a warning on stderr (counted), not the end of the run."""
    from tqdm import tqdm

    images = [s for s in sources if not s.is_video]
    with tqdm(total=len(images), desc="images", unit="img", disable=args.no_progress or not images) as bar:
        for is_video, group in itertools.groupby(sources, key=lambda s: s.is_video):
            if is_video:
                for source in group:
                    try:
                        _detect_video(video_frames(source.path), source, detector, planned.get(source), args,
                                      progress)
                    except ImageReadError as exc:  # not a video, no frame, no encoder: the next input
                        _warn_unreadable(exc, progress)
                continue
            for source, image, result in _detect_in_order(detector, _read_images(group, args.max_image_pixels),
                                                          args.workers):
                if result is None:
                    _warn_unreadable(image, progress)
                else:
                    line = _record_image(image, result, source, planned.get(source), progress)
                    if len(images) <= 20:
                        tqdm.write(line)
                bar.update()


def _check_detect_outputs(args: argparse.Namespace, sources: Sequence[Source], folders: Sequence[Path],
                          planned: dict[Source, Path]) -> None:
    read = [*(s.path for s in sources), *model_inputs(args)]
    if args.save_dir is not None:
        check_output_folder(args.save_dir, "--save-dir", planned.values(), read, folders, overwrite=args.overwrite)
    if args.json is not None:
        if args.save_dir is not None and is_within(real(args.json).parent, args.save_dir):
            real(args.json).parent.mkdir(parents=True, exist_ok=True)  # inside the checked --save-dir
        check_output_file(args.json, "--json", read, overwrite=args.overwrite)
        if any(real(path) == real(args.json) for path in planned.values()):
            raise InvalidArgumentError(
                f"--json '{safe_text(args.json)}' is also the path of an annotated copy; choose another name"
            )


def _check_ray_options(args: argparse.Namespace, sources: Sequence[Source]) -> None:
    """What ``--ray`` cannot do, refused before any work (no model loaded, no ``--json`` written)."""
    for option, value in (("--save-dir", args.save_dir), ("--workers", args.workers)):
        if value is not None:
            raise InvalidArgumentError(f"{option} is not supported with --ray; drop it (or drop --ray)")
    videos = [s.path for s in sources if s.is_video]
    if videos:
        raise InvalidArgumentError(
            f"videos are not supported with --ray ({safe_text(videos[0])}); run them without --ray"
        )


def _run_on_ray(sources: Sequence[Source], detector: Any, args: argparse.Namespace, progress: _Progress) -> None:
    """``detect --ray``: the images on Ray Data (:mod:`nanodet_infer.scale_out`) with ``detector``'s settings;
    the same rows as locally."""
    from ..scale_out import detect_with_ray

    options = arguments.detector_options(args)
    options.update({name: getattr(detector, name) for name in arguments.SETTING_OPTIONS})
    threads = options.pop("num_threads")
    run = detect_with_ray([s.path for s in sources], args.model, actors=args.actors, threads=threads,
                          batch_size=args.batch_size, address=args.ray_address, progress=not args.no_progress,
                          connect_timeout=args.ray_timeout, verbose=args.verbose, **options)
    for _path, message in run.errors:
        print(f"{PROG}: warning: {safe_text(message)}; skipped", file=sys.stderr)
    background = set(background_ids(detector.metadata.class_names))
    rows = [row for row in run.rows if row["category_id"] not in background]
    progress.rows.extend(rows)
    progress.images, progress.detections, progress.unreadable = run.images, len(rows), len(run.errors)


def run_detect(args: argparse.Namespace) -> int:
    """``nanodet-infer detect``: returns the exit status (2 when an input could not be read)."""
    if wants_live(args):
        return run_live(args)
    inputs = collect_sources(args.paths)
    planned = output_paths(inputs.sources, args.save_dir) if args.save_dir is not None else {}
    _check_detect_outputs(args, inputs.sources, inputs.folders, planned)
    if args.ray:
        _check_ray_options(args, inputs.sources)
        from ..scale_out import check_ray_address

        check_ray_address(args.ray_address, args.ray_timeout)  # before the model loads
    detector = arguments.make_detector(args)  # a model that does not load stops the run here, also with --ray
    progress = _Progress(rows=[])
    started = time.perf_counter()
    try:
        if args.ray:
            _run_on_ray(inputs.sources, detector, args, progress)
        else:
            _run_sources(inputs.sources, detector, planned, args, progress)
    finally:
        if args.json is not None:
            write_json(args.json, progress.rows)
    elapsed = time.perf_counter() - started
    rate = progress.images / elapsed if elapsed > 0 else 0.0
    print(f"{progress.images} images/frames, {progress.detections} detections, {rate:.1f} images/s"
          + (f"; annotated output in {safe_text(args.save_dir)}" if args.save_dir is not None else "")
          + (f"; COCO results in {safe_text(args.json)}" if args.json is not None else ""))
    if progress.unreadable:
        print(f"{PROG}: error: {progress.unreadable} of {len(inputs.sources)} inputs could not be read "
              "(see the warnings above); the others were processed", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------------------------- eval
def run_eval(args: argparse.Namespace) -> int:
    """``nanodet-infer eval``: prints the COCO numbers; returns the exit status."""
    from ..evaluate import STAT_NAMES, evaluate_coco, image_files, load_ground_truth

    gt = load_ground_truth(args.ann)
    if args.json is not None:
        images = [args.images / name for _, name in image_files(gt, args.ann)]
        check_output_file(args.json, "--json", [args.ann, *model_inputs(args), *images], overwrite=args.overwrite)
    detector = arguments.make_detector(args, evaluation=True)
    stats = evaluate_coco(detector, gt, args.images, progress=not args.no_progress, workers=args.workers)
    for note in stats["notes"]:
        print(f"note: {safe_text(note)}")
    for name in STAT_NAMES:
        print(f"{name:<10} {stats[name]:.4f}")
    print(f"{stats['num_images']} images, {stats['num_detections']} detections")
    if args.json is not None:
        write_json(args.json, stats)
    return 0


# ---------------------------------------------------------------------------------------------- bench
def run_bench(extra: Sequence[str]) -> int:
    """``nanodet-infer bench``: per-stage latency of a model file (:mod:`nanodet_infer.bench`)."""
    from ..bench import main as bench_main

    return bench_main(list(extra), prog=f"{PROG} bench")


# ---------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nanodet-infer``; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        return _guarded(lambda: run_bench(extra), args.verbose)
    if args.command == "serve":
        from ..serve.command import main as serve_main

        return serve_main([*(["--verbose"] if args.verbose else []), *extra], _guarded)
    if extra:
        subcommand = arguments.subcommand_parser(parser, args.command)
        message = arguments.unknown_options_message(extra, subcommand)
        print(f"{PROG} {args.command}: error: {message}; see {PROG} {args.command} --help", file=sys.stderr)
        return 2
    command = run_detect if args.command == "detect" else run_eval
    return _guarded(lambda: command(args), args.verbose)


def _guarded(call: Callable[[], int], verbose: bool) -> int:
    """Run ``call`` with SIGTERM handled like Ctrl-C; user errors become one line on stderr and status 2."""
    try:
        with terminate_like_interrupt():
            return call()
    except (NanoDetError, OSError) as exc:
        if verbose:
            raise
        print(f"{PROG}: error: {safe_text(' '.join(str(exc).split()))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        status, word = exit_status(exc)
        print(f"{PROG}: {word}", file=sys.stderr)
        return status
