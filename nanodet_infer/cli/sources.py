"""Inputs of ``nanodet-infer detect``: files and folders expanded into sources, videos opened, and the
name of each source's annotated copy under ``--save-dir``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ImageReadError
from ..paths import IMAGE_SUFFIXES
from ..safetext import safe_text

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


@dataclass(frozen=True)
class Source:
    """One input: an image file or a video file, ``path`` as the user gave it."""

    path: Path
    is_video: bool


@dataclass(frozen=True)
class Inputs:
    """What a ``detect`` run reads: its sources and the folders given on the command line."""

    sources: tuple[Source, ...]
    folders: tuple[Path, ...]


def collect_sources(paths: Sequence[str | Path]) -> Inputs:
    """Expand files and folders (images in a folder, sorted by name, not recursive) into sources.

    A file reached twice (listed twice, or through a link or a folder) is one source, taken where it is
    first reached.
    """
    sources: list[Source] = []
    folders: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def add(path: Path, is_video: bool) -> None:
        info = path.stat()
        if (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            sources.append(Source(path, is_video))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageReadError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {safe_text(path)}")
            folders.append(path)
            for image in found:
                add(image, False)
        elif path.is_file():
            add(path, path.suffix.lower() in VIDEO_SUFFIXES)
        else:
            raise ImageReadError(f"no such file or folder: {safe_text(path)}")
    return Inputs(tuple(sources), tuple(folders))


def annotated_name(path: Path) -> str:
    """File name of an annotated image: ``path``'s own name, with ``.jpg`` appended when OpenCV cannot write
    its suffix (no suffix, or one outside :data:`IMAGE_SUFFIXES` that OpenCV has no writer for)."""
    import cv2

    if path.suffix.lower() in IMAGE_SUFFIXES and cv2.haveImageWriter(path.name):
        return path.name
    return path.name + ".jpg"


NAME_MAX = 255
"""Longest file name (bytes) most file systems take; a longer output name is shortened (:func:`fit_name`)."""


def fit_name(name: str) -> str:
    """``name`` if it fits :data:`NAME_MAX` bytes, else its stem cut and tagged with 8 hex digits of its hash
    (``<cut stem>~1a2b3c4d<suffix>``): the same long name always gives the same short one."""
    if len(name.encode()) <= NAME_MAX:
        return name
    import hashlib

    path = Path(name)
    suffix = path.suffix if len(path.suffix.encode()) <= 16 else ""
    tag = "~" + hashlib.sha256(name.encode()).hexdigest()[:8]
    stem = name[: len(name) - len(suffix)]
    while len((stem + tag + suffix).encode()) > NAME_MAX:
        stem = stem[:-1]
    return stem + tag + suffix


def _output_name(source: Source, relative: Path) -> Path:
    return relative.with_name(fit_name(relative.stem + ".mp4" if source.is_video else annotated_name(relative)))


def output_paths(sources: Sequence[Source], save_dir: Path) -> dict[Source, Path]:
    """Where each source's annotated copy goes: unique, and traceable to the source.

    An image keeps its name (:func:`annotated_name`), a video becomes ``STEM.mp4``, directly in
    ``save_dir`` (``photos/a.jpg`` -> ``SAVE/a.jpg``); a name longer than :data:`NAME_MAX` bytes is shortened
    (:func:`fit_name`; the JSON rows keep the input's full ``path``). When two sources would get the same name
    (``day/a.jpg`` and ``night/a.jpg``), every output of the run instead mirrors its source's place below
    the sources' deepest common folder (``SAVE/day/a.jpg``, ``SAVE/night/a.jpg``). The rare clash left
    (``clip.avi`` and ``clip.mp4`` side by side) gets ``_1``, ``_2``.
    """
    names = [_output_name(source, Path(source.path.name)) for source in sources]
    if len(set(names)) < len(names):
        absolute = [Path(os.path.abspath(source.path)) for source in sources]
        common = Path(os.path.commonpath([str(path.parent) for path in absolute]))
        names = [_output_name(s, path.relative_to(common)) for s, path in zip(sources, absolute, strict=True)]
    planned: dict[Source, Path] = {}
    used: set[Path] = set()
    for source, name in zip(sources, names, strict=True):
        candidate = save_dir / name
        stem, suffix, k = candidate.stem, candidate.suffix, 1
        while candidate in used:
            candidate = candidate.with_name(f"{stem}_{k}{suffix}")
            k += 1
        used.add(candidate)
        planned[source] = candidate
    return planned


MAX_UNDECODABLE_FRAMES = 25
"""Consecutive frames that may fail to decode before a video is taken to end there (within its stated count)."""


def video_frames(path: Path) -> tuple[Iterator[Any], int, float, tuple[int, int]]:
    """Frames of a video (BGR uint8), its frame count as the container states it (0 if unknown), fps and
    (W, H). A frame that does not decode before the stated count is reached comes as an :class:`ImageReadError`
    in its place, and reading goes on (at most :data:`MAX_UNDECODABLE_FRAMES` in a row)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ImageReadError(f"cannot open video {safe_text(path)} (not a video, or no codec for it in OpenCV)")
    count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def frames() -> Iterator[Any]:
        try:
            index = failures = 0
            while True:
                ok, frame = capture.read()
                if ok:
                    failures = 0
                    yield frame
                elif index >= count or failures >= MAX_UNDECODABLE_FRAMES:
                    return
                else:
                    failures += 1
                    yield ImageReadError(f"frame {index} of {safe_text(path)} does not decode")
                index += 1
        finally:
            capture.release()

    return frames(), count, fps, size
