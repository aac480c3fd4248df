"""``nanodet-infer detect`` on one camera, stream, image sequence (or, with the options below, one video file).

The source is read by :class:`~nanodet_infer.live.VideoSource`. Real-time mode (the default for cameras and
streams) detects on the newest frame, synchronously, and counts the frames it had to drop; every-frame mode
(the default for sequences and files) runs all frames through ``Detector.stream``. Outputs are written as the
run goes, and keep what was done at any stop (end, ``--max-frames``, ``--duration``, error, Ctrl-C, SIGTERM):

- ``--jsonl``: one JSON line per frame, flushed: ``source``, ``frame``, ``timestamp`` (when it was read, Unix
  seconds), ``latency_ms`` (read -> result), ``dropped`` (so far), ``image_size`` and ``rows`` (COCO rows with
  ``frame``, ``class_name`` and, with ``--track``, ``tracker_id``);
- ``--save-dir``: ``NAME.mp4``, finished (and renamed from its temporary name) whenever the run stops; in
  real-time mode a result is repeated over the frames dropped after it, so the video keeps the source's timing;
- ``--json`` (sequences and files only; refused for a live source, whose rows would grow without bound).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from ..errors import InvalidArgumentError
from ..live import Frame, VideoSource, source_kind
from ..paths import check_output_file, check_output_folder, real, temporary_name, write_json
from ..safetext import safe_text
from .arguments import PROG

LIVE_OPTIONS = ("jsonl", "track", "max_frames", "duration")
"""Options that make a single video file run here too (they need the frame-by-frame loop)."""


def add_live_options(parser: argparse.ArgumentParser) -> None:
    """The ``detect`` options for cameras, streams and image sequences."""
    group = parser.add_argument_group("cameras and streams (docs/streams.md)")
    group.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    group.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    mode = group.add_mutually_exclusive_group()
    mode.add_argument("--realtime", dest="realtime", action="store_true", default=None,
                      help="detect on the newest frame, dropping stale ones (default for cameras and streams)")
    mode.add_argument("--every-frame", dest="realtime", action="store_false",
                      help="detect on every frame, falling behind a faster source (default for files, sequences)")
    group.add_argument("--read-timeout", type=float, default=10.0,
                       help="seconds to wait for the source to open and for each frame (default 10)")
    group.add_argument("--reconnects", type=int, default=5,
                       help="times to reopen a camera or stream that dropped, waiting 0.5 s, 1 s, 2 s ... 8 s "
                       "between tries (default 5; 0: none)")
    rtsp = group.add_mutually_exclusive_group()
    rtsp.add_argument("--rtsp-tcp", dest="rtsp_transport", action="store_const", const="tcp", default=None,
                      help="RTSP with RTP interleaved over its TCP connection (what OpenCV's FFmpeg does by default)")
    rtsp.add_argument("--rtsp-udp", dest="rtsp_transport", action="store_const", const="udp",
                      help="RTSP with RTP over UDP (lower latency on a clean LAN; blocked by most NATs and firewalls)")
    group.add_argument("--jsonl", type=Path, default=None,
                       help="write one JSON line per frame as it is processed (source, frame, timestamp, rows)")
    group.add_argument("--track", action="store_true",
                       help="add a tracker_id to every row (ByteTrack; pip install nanodet-infer[track], see docs)")


def wants_live(args: argparse.Namespace) -> bool:
    """Whether this ``detect`` run goes through :func:`run_live`: a camera, stream or pattern among the paths,
    or a live-only option (:data:`LIVE_OPTIONS`)."""
    return any(source_kind(str(p)) for p in args.paths) or any(getattr(args, o) not in (None, False)
                                                                for o in LIVE_OPTIONS)


def output_stem(source: VideoSource) -> str:
    """File stem of a source's annotated video: ``camera0``, ``video0``, ``host_port_path`` of a URL, the file's
    stem; only ``[A-Za-z0-9._-]``."""
    if source.kind == "camera":
        raw = f"camera{source.spec}"
    elif source.kind == "stream":
        parts = urlsplit(source.spec)
        raw = "_".join(str(p) for p in (parts.hostname, parts.port, parts.path.strip("/")) if p)
    else:
        raw = Path(source.spec.replace("*", "").replace("%", "")).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("_.")[:120] or "stream"


class _VideoOut:
    """The annotated video, written frame by frame under a temporary name and renamed onto ``path`` by
    :meth:`finish` (a run that stops early keeps the frames written so far)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary = real(path).with_name(temporary_name(".mp4"))
        self.writer: Any = None
        self.size: tuple[int, int] = (0, 0)

    def write(self, image: Any, fps: float, copies: int) -> None:
        import cv2

        if self.writer is None:
            from .commands import _video_writer

            self.size = (image.shape[1], image.shape[0])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = _video_writer(self.temporary, self.path, fps if 0 < fps <= 240 else 30.0, self.size)
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        for _ in range(copies):
            self.writer.write(image)

    def finish(self) -> None:
        if self.writer is None:
            return
        self.writer.release()
        os.replace(self.temporary, real(self.path))


def _check_outputs(args: argparse.Namespace, source: VideoSource, video: Path | None) -> None:
    from .commands import model_inputs

    read = [*model_inputs(args), *map(Path, source.input_files())]
    if args.json is not None:
        if source.live:
            raise InvalidArgumentError(f"--json keeps a whole run in memory; for the {source.kind} {source.name} "
                                       "use --jsonl (one line per frame, written as it goes)")
        check_output_file(args.json, "--json", read, overwrite=args.overwrite)
    if args.jsonl is not None:
        check_output_file(args.jsonl, "--jsonl", read, overwrite=args.overwrite)
        if args.json is not None and real(args.json) == real(args.jsonl):
            raise InvalidArgumentError("--json and --jsonl name the same file; choose two names")
    if video is not None:
        check_output_folder(args.save_dir, "--save-dir", [video], read, overwrite=args.overwrite)


def _results(detector: Any, source: VideoSource, workers: int | None) -> Iterator[tuple[Frame, Any]]:
    """``(frame, Detections)``: synchronously on the newest frame in real-time mode, else through
    ``Detector.stream`` (frames in order, ``workers`` at once); background detections dropped, as ``detect``
    does for files (:func:`nanodet_infer.results.foreground`), so neither the tracker nor the outputs see them."""
    from ..results import foreground
    from .commands import _detect_in_order

    if source.realtime:
        for frame in source.frames():
            yield frame, foreground(detector(frame.image))
        return
    for frame, _image, result in _detect_in_order(detector, ((f, f.image) for f in source.frames()), workers):
        yield frame, foreground(result)


def _tracked(results: Iterator[tuple[Frame, Any]], source: VideoSource) -> Iterator[tuple[Frame, Any]]:
    """The results with ``tracker_ids`` (a ByteTrack at the source's frame rate, made at the first frame)."""
    from ..tracking import ByteTrack

    tracker = None
    for frame, result in results:
        if tracker is None:
            tracker = ByteTrack(frame_rate=source.fps if 0 < source.fps <= 240 else 30.0)
        yield frame, tracker.update(result)


def open_source(args: argparse.Namespace) -> VideoSource:
    """The one source of a live ``detect`` run, from the command line (refusing several paths)."""
    if len(args.paths) != 1:
        raise InvalidArgumentError(
            "a camera, stream or image pattern (or --jsonl/--track/--max-frames/--duration) takes exactly one "
            f"input, got {len(args.paths)}; run one command per source"
        )
    if args.ray:
        raise InvalidArgumentError("--ray reads image files only; drop it for a camera, stream or sequence")
    return VideoSource(args.paths[0], realtime=args.realtime, read_timeout=args.read_timeout,
                       reconnects=args.reconnects, max_frames=args.max_frames, duration=args.duration,
                       rtsp_transport=args.rtsp_transport, max_image_pixels=args.max_image_pixels)


def _quiet_video_logs() -> None:
    """Keep OpenCV's and FFmpeg's own log lines (timeouts, refused connections) off the terminal: the run reports
    them as one-line errors itself. A user's ``OPENCV_FFMPEG_LOGLEVEL`` is kept."""
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when the first capture opens
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def run_live(args: argparse.Namespace) -> int:
    """``nanodet-infer detect SOURCE`` for one :class:`VideoSource`; returns the exit status."""
    from tqdm import tqdm

    from . import arguments
    from .drawing import draw_detections

    _quiet_video_logs()
    source = open_source(args)
    video = None if args.save_dir is None else args.save_dir / f"{output_stem(source)}.mp4"
    _check_outputs(args, source, video)
    if args.track:
        from ..tracking import ByteTrack

        ByteTrack()  # the missing extra is reported before the model loads
    detector = arguments.make_detector(args)
    rows: list[dict[str, Any]] = []
    done, detections, previous = 0, 0, -1
    started = time.perf_counter()
    with ExitStack() as stack:
        stack.callback(source.close)
        if args.json is not None:
            stack.callback(lambda: write_json(args.json, rows))
        out = None
        if video is not None:
            out = _VideoOut(video)
            stack.callback(out.finish)
        lines: TextIO | None = None
        if args.jsonl is not None:
            lines = stack.enter_context(open(args.jsonl, "w", encoding="utf-8"))
        bar = stack.enter_context(tqdm(desc=source.name, unit="frame", disable=args.no_progress))
        results = _results(detector, source, args.workers)
        for frame, result in _tracked(results, source) if args.track else results:
            frame_rows = [{**row, "frame": frame.index, "class_name": name}
                          for row, name in zip(result.to_coco(frame.index), result.labels, strict=True)]
            if lines is not None:
                record = {"source": source.name, "frame": frame.index, "timestamp": frame.timestamp,
                          "latency_ms": (time.time() - frame.timestamp) * 1e3, "dropped": source.stats.dropped,
                          "image_size": list(result.image_size), "rows": frame_rows}
                lines.write(json.dumps(record) + "\n")
                lines.flush()
            if args.json is not None:
                rows.extend(frame_rows)
            if out is not None:
                out.write(draw_detections(frame.image, result), source.fps, frame.index - previous)
            previous = frame.index
            done += 1
            detections += len(result)
            elapsed = time.perf_counter() - started
            bar.update()
            bar.set_postfix_str(f"{done / elapsed:.1f} fps, {source.stats.dropped} dropped", refresh=False)
    elapsed = time.perf_counter() - started
    stats = source.stats
    print(f"{source.name}: {done} frames in {elapsed:.1f} s ({done / elapsed if elapsed else 0.0:.1f} fps), "
          f"{detections} detections, {stats.dropped} dropped ({'real time' if source.realtime else 'every frame'}), "
          f"{stats.reconnects} reconnects"
          + (f"; annotated video {safe_text(video)}" if video is not None and done else "")
          + (f"; frames in {safe_text(args.jsonl)}" if args.jsonl is not None else ""))
    if stats.unreadable:
        print(f"{PROG}: error: {stats.unreadable} images of {source.name} could not be read; the others were "
              "processed", file=sys.stderr)
        return 2
    return 0
