"""Live video sources: cameras, device paths, network streams and image sequences, read on a background thread.

:class:`VideoSource` opens one source and yields its frames (BGR ``uint8 [H, W, 3]``) in one of two modes:

- **every frame** (the default for image sequences): frames wait in a short queue; when detection is slower
  than the source, the reader waits too, so a live source falls behind (its own buffers fill);
- **real time** (the default for cameras and streams): only the newest frame is kept; a frame not taken
  before the next one arrives is dropped and counted (:attr:`SourceStats.dropped`), so each result is at
  most one frame interval plus one detection old.

Every blocking step is bounded: OpenCV's open and read timeouts (``read_timeout``) and, as a backstop for a
driver that ignores them, a watchdog in the consumer. A live source that drops after sending frames is
reopened up to ``reconnects`` times with exponential backoff (0.5 s, 1 s, 2 s ... capped at 8 s); a source
that cannot be opened at all, stops answering, or stays lost raises a one-line :class:`StreamError`.
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .arguments import check_positive_int
from .errors import ImageReadError, InvalidArgumentError, StreamError
from .images import MAX_IMAGE_PIXELS
from .safetext import safe_text

STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt"})
"""URL schemes opened with OpenCV's FFmpeg backend (MJPEG / HLS over HTTP(S), MPEG-TS over UDP / TCP, RTSP, ...)."""

BACKOFF_S = (0.5, 8.0)
"""First and largest wait before a reconnect attempt; each attempt doubles the wait."""

_PRINTF = re.compile(r"%0?(\d*)d")
_OPEN_LOCK = threading.Lock()  # OPENCV_FFMPEG_CAPTURE_OPTIONS is process-wide: one open at a time sets it


def source_kind(spec: str) -> str | None:
    """What ``spec`` names: ``"camera"`` (an index such as ``0``), ``"device"`` (``/dev/video0``), ``"stream"``
    (a URL with a scheme of :data:`STREAM_SCHEMES`), ``"pattern"`` (an image sequence: ``frame_%04d.png`` or a
    glob such as ``frames/*.jpg``), or ``None`` (a plain file or folder path; :class:`VideoSource` also opens a
    video file, as kind ``"file"``)."""
    if spec.isdigit():
        return "camera"
    if spec.startswith("/dev/video"):
        return "device"
    if urlsplit(spec).scheme.lower() in STREAM_SCHEMES:
        return "stream"
    if not os.path.exists(spec) and (_PRINTF.search(spec) or glob.has_magic(spec)):
        return "pattern"
    return None


def redact(url: str) -> str:
    """``url`` without a password (``rtsp://user:secret@cam/`` -> ``rtsp://user:***@cam/``), safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return safe_text(url)
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return safe_text(urlunsplit(parts._replace(netloc=netloc)))


@dataclass(frozen=True)
class Frame:
    """One frame read from a source: ``index`` counts every frame read (dropped ones included, from 0),
    ``timestamp`` is the wall-clock time it was read (``time.time()``, seconds), ``image`` BGR uint8 ``[H, W, 3]``."""

    index: int
    timestamp: float
    image: np.ndarray


@dataclass
class SourceStats:
    """Counters of a :class:`VideoSource`: frames ``read``, ``delivered`` to the consumer, ``dropped`` in real-time
    mode (read, then replaced by a newer frame before it was taken), ``reconnects`` that succeeded, ``unreadable``
    files skipped in a glob sequence."""

    read: int = 0
    delivered: int = 0
    dropped: int = 0
    reconnects: int = 0
    unreadable: int = 0


def pattern_files(pattern: str) -> list[str]:
    """The files an image pattern names, in reading order: a printf pattern (``f_%04d.png``: ``%04d`` matches 4 or
    more digits, ``%d`` any digits) in numeric order of its numbers, gaps allowed; a glob (``frames/*.jpg``) sorted
    by name."""
    if not _PRINTF.search(pattern):
        return sorted(glob.glob(pattern))
    regex, wildcard, end = "", "", 0
    for number in _PRINTF.finditer(pattern):
        literal = pattern[end:number.start()]
        regex += re.escape(literal) + rf"(\d{{{int(number.group(1) or 1)},}})"
        wildcard += glob.escape(literal) + "*"
        end = number.end()
    regex += re.escape(pattern[end:])
    wildcard += glob.escape(pattern[end:])
    found = []
    for path in glob.glob(wildcard):
        match = re.fullmatch(regex, path)
        if match:
            found.append((tuple(int(n) for n in match.groups()), path))
    return [path for _, path in sorted(found)]


class _FileSequence:
    """The files of an image pattern (:func:`pattern_files`), read like a ``cv2.VideoCapture``: each through
    :func:`~nanodet_infer.images.load_image` with the pixel budget (undecodable or oversized files skipped)."""

    def __init__(self, pattern: str, stats: SourceStats, max_pixels: int) -> None:
        self._files = deque(pattern_files(pattern))
        self._stats = stats
        self._max_pixels = max_pixels

    def isOpened(self) -> bool:  # noqa: N802 - the cv2.VideoCapture interface
        return bool(self._files)

    def read(self) -> tuple[bool, Any]:
        from .images import load_image

        while self._files:
            try:  # the header's pixel budget first, as for any image file (a decoder bomb counts as unreadable)
                return True, load_image(self._files.popleft(), self._max_pixels)
            except ImageReadError:
                self._stats.unreadable += 1
        return False, None

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        self._files.clear()


@dataclass
class _Mailbox:
    """Frames handed from the reader thread to the consumer, and the reader's last word (an end or an error)."""

    realtime: bool
    capacity: int
    frames: deque[Frame] = field(default_factory=deque)
    final: BaseException | None = None
    ended: bool = False
    deadline: float = float("inf")
    condition: threading.Condition = field(default_factory=threading.Condition)


class VideoSource:
    """A camera, device, network stream or image sequence (:func:`source_kind`), iterated as frames.

    ``source``: a camera index (``0``), a device path, a URL (``rtsp://``, ``http(s)://`` MJPEG or HLS,
    ``udp://`` / ``tcp://`` MPEG-TS, ...) or an image pattern. ``realtime``: newest frame only, dropping stale ones
    (default: ``True`` for cameras and streams, ``False`` for image sequences). ``read_timeout``: seconds to wait
    for the source to open and for each frame. ``reconnects``: attempts to reopen a live source that dropped
    (``0``: none). ``max_frames`` / ``duration``: stop after this many delivered frames / seconds.
    ``rtsp_transport``: ``"tcp"`` or ``"udp"`` for RTSP (default: FFmpeg's choice).

    Iterating gives the images (so a source can be passed to :meth:`Detector.stream`); :meth:`frames` gives
    :class:`Frame` objects with their index and timestamp. A source is read once; :meth:`close` (or leaving the
    ``with`` block, or the loop ending) stops the reader. :attr:`stats` counts reads, drops and reconnects.
    """

    def __init__(
        self,
        source: str | int,
        *,
        realtime: bool | None = None,
        read_timeout: float = 10.0,
        reconnects: int = 5,
        max_frames: int | None = None,
        duration: float | None = None,
        rtsp_transport: str | None = None,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        spec = str(source)
        kind = source_kind(spec) or ("file" if os.path.isfile(spec) else None)
        if kind is None:
            raise InvalidArgumentError(
                f"{safe_text(spec)!r} is not a camera index, device, stream URL or image pattern "
                f"(schemes: {', '.join(sorted(STREAM_SCHEMES))}) or video file; check the spelling"
            )
        if not (isinstance(read_timeout, (int, float)) and 0 < read_timeout <= 3600):
            raise InvalidArgumentError(f"read_timeout must be seconds in (0, 3600], got {read_timeout!r}")
        if not (isinstance(reconnects, int) and 0 <= reconnects <= 1000):
            raise InvalidArgumentError(f"reconnects must be an integer in [0, 1000], got {reconnects!r}")
        if duration is not None and not (isinstance(duration, (int, float)) and duration > 0):
            raise InvalidArgumentError(f"duration must be seconds > 0, got {duration!r}")
        if rtsp_transport not in (None, "tcp", "udp"):
            raise InvalidArgumentError(f"rtsp_transport must be 'tcp' or 'udp', got {rtsp_transport!r}")
        self.spec, self.kind = spec, kind
        self.max_image_pixels = max_image_pixels
        self.name = redact(spec) if kind == "stream" else safe_text(spec)
        self.live = kind not in ("pattern", "file")
        self.realtime = self.live if realtime is None else bool(realtime)
        self.read_timeout = float(read_timeout)
        self.reconnects = reconnects
        self.max_frames = None if max_frames is None else check_positive_int("max_frames", max_frames)
        self.duration = None if duration is None else float(duration)
        self.rtsp_transport = rtsp_transport
        self.fps = 0.0
        """Frame rate the source states (0 when it states none); known once the first frame has arrived."""
        self.stats = SourceStats()
        self._mailbox = _Mailbox(self.realtime, capacity=8)
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------ consumer side
    def __iter__(self) -> Iterator[np.ndarray]:
        return (frame.image for frame in self.frames())

    def input_files(self) -> list[str]:
        """The files this source reads, which no output may overwrite: a video file, or every file an image
        pattern can match (``%04d`` read as ``*``); none for a camera or stream."""
        if self.kind == "file":
            return [self.spec]
        if self.kind == "pattern":
            return pattern_files(self.spec)
        return []

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frames(self) -> Iterator[Frame]:
        """Start reading and yield :class:`Frame` objects until the source ends (image sequences), ``max_frames``
        or ``duration`` is reached, or the iteration stops; raises :class:`StreamError` as described above."""
        if self._reader is not None:
            raise InvalidArgumentError(f"{self.name} is already being read; open a new VideoSource")
        self._mailbox.deadline = time.monotonic() + self._step_s()
        self._reader = threading.Thread(target=self._read, name="nanodet-source", daemon=True)
        self._reader.start()
        started = time.monotonic()
        try:
            while self.max_frames is None or self.stats.delivered < self.max_frames:
                if self.duration is not None and time.monotonic() - started >= self.duration:
                    return
                frame = self._take(started)
                if frame is None:
                    return
                self.stats.delivered += 1
                yield frame
        finally:
            self.close()

    def _take(self, started: float) -> Frame | None:
        """The next frame, ``None`` at the end (or when ``duration`` is up); the reader's error is raised here.
        Waits no longer than the reader's own bound on its current step (:meth:`_post`) allows."""
        box = self._mailbox
        with box.condition:
            while True:
                if box.frames:
                    frame = box.frames.popleft()
                    box.condition.notify_all()
                    return frame
                if box.final is not None:
                    raise box.final
                if box.ended:
                    return None
                now = time.monotonic()
                if now > box.deadline:
                    raise StreamError(f"{self.name} sent no frame for {self._step_s():.0f} s and its reader does not "
                                      "answer; check the source (or raise --read-timeout)")
                wait = box.deadline - now
                if self.duration is not None:
                    wait = min(wait, started + self.duration - now)
                    if wait <= 0:
                        return None
                box.condition.wait(min(wait, 0.25))

    def _step_s(self) -> float:
        """The longest one open or read may take before the consumer gives up on the reader."""
        return 2 * self.read_timeout + 1.0

    def close(self) -> None:
        """Stop the reader (it releases the capture within its current read, at most ``read_timeout``)."""
        self._stop.set()
        with self._mailbox.condition:
            self._mailbox.condition.notify_all()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=1.0)  # a read blocked in OpenCV finishes on its own; the thread is a daemon

    # ------------------------------------------------------------------ reader side
    def _post(self, *, frame: Frame | None = None, final: BaseException | None = None, ended: bool = False,
              pause: float = 0.0) -> None:
        """Hand over a frame (or the last word) and tell the consumer how long the reader's next step may take:
        :meth:`_step_s`, plus ``pause`` before it (a backoff wait)."""
        box = self._mailbox
        with box.condition:
            box.deadline = time.monotonic() + pause + self._step_s()
            if frame is not None:
                if box.realtime:
                    self.stats.dropped += len(box.frames)
                    box.frames.clear()
                else:
                    while len(box.frames) >= box.capacity and not self._stop.is_set():
                        box.condition.wait(0.25)
                    box.deadline = time.monotonic() + self._step_s()
                box.frames.append(frame)
            box.final = box.final or final
            box.ended = box.ended or ended
            box.condition.notify_all()

    def _open(self) -> Any:
        """An opened capture, or ``None``."""
        import cv2

        if self.kind == "pattern":  # read here, never by OpenCV's image-sequence reader (no pixel budget there)
            return _FileSequence(self.spec, self.stats, self.max_image_pixels)
        timeout_ms = int(self.read_timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        if self.kind == "camera":
            capture = cv2.VideoCapture(int(self.spec), cv2.CAP_ANY, params)
        elif self.kind == "device":
            capture = cv2.VideoCapture(self.spec, cv2.CAP_V4L2, params)
        elif self.kind == "file":
            capture = cv2.VideoCapture(self.spec)
        else:
            with _OPEN_LOCK:
                previous = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
                if self.rtsp_transport is not None:
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{self.rtsp_transport}"
                try:
                    capture = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, params)
                finally:
                    if self.rtsp_transport is not None:
                        if previous is None:
                            os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                        else:
                            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = previous
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def _read(self) -> None:
        """The reader thread: open, read until the source ends or drops, reconnect with backoff while allowed."""
        try:
            failures = 0
            while not self._stop.is_set():
                self._post()  # an open attempt counts as activity for the consumer's watchdog
                capture = self._open()
                if capture is None and self.stats.read == 0:
                    self._post(final=StreamError(self._open_failure()))
                    return
                if capture is not None:
                    if failures:
                        self.stats.reconnects += 1
                    got = self._drain(capture)
                    if not self.live or self._stop.is_set():
                        self._post(ended=True)
                        return
                    failures = 0 if got else failures
                failures += 1
                if failures > self.reconnects:
                    self._post(final=StreamError(
                        f"lost {self.name} after {self.stats.read} frames and could not reopen it in "
                        f"{self.reconnects} attempts; check the source (or raise --reconnects)"))
                    return
                pause = min(BACKOFF_S[0] * 2 ** (failures - 1), BACKOFF_S[1])
                self._post(pause=pause)
                self._stop.wait(pause)
        except Exception as exc:  # never die silently: the consumer raises it
            self._post(final=StreamError(f"reading {self.name} failed: {safe_text(exc)}"))

    def _open_failure(self) -> str:
        if self.kind == "file":
            return f"cannot open video {self.name} (not a video, or no codec for it in OpenCV)"
        if self.kind == "pattern":
            return f"no image matches {self.name}; check the pattern (frame_%04d.png or a glob such as frames/*.jpg)"
        return (f"cannot open {self.name} (no answer, refused or not a video within {self.read_timeout:g} s); check "
                "the address and that the source is running")

    def _drain(self, capture: Any) -> bool:
        """Read ``capture`` until it ends or fails (or the source is closed); whether any frame came."""
        import cv2

        got = False
        try:
            if not self.fps:
                self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            while not self._stop.is_set():
                ok, image = capture.read()
                if not ok or image is None:
                    return got
                got = True
                frame = Frame(self.stats.read, time.time(), image)
                self.stats.read += 1
                self._post(frame=frame)
        finally:
            capture.release()
        return got
