"""File and path rules the command lines and the exporter share: image suffixes, and output files checked
before any work, written atomically or streamed.

The rules (docs/robustness.md, "Outputs"):

- an output is never one of the command's inputs (compared by file identity, not by spelling:
  ``os.path.samefile`` / ``realpath``), whatever ``--overwrite`` says;
- an existing output file is replaced only with ``--overwrite``;
- every output is checked before the work starts: not a folder, its folder exists and is writable;
- a regular file is written under a short temporary name in its target's folder (unique per process:
  pid + random) and renamed into place when complete; a symbolic link is written *through* (its
  target is replaced, the link stays); a pipe, terminal or other character device (``/dev/stdout``,
  ``>(jq .)``) is streamed into, with no rename.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError
from .safetext import safe_text

#: File suffixes read as images (folder expansion of ``nanodet-infer``, calibration folders of ``--int8``).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def temporary_name(suffix: str = "") -> str:
    """A hidden file name unique to this process: ``.nd-<pid>-<random>.tmp<suffix>`` (about 30 bytes).

    It does not contain the final name, so a legal 255-byte final name never overflows ``NAME_MAX``.
    """
    return f".nd-{os.getpid():x}-{secrets.token_hex(4)}.tmp{suffix}"


def is_stream(path: Path) -> bool:
    """Whether ``path`` is written by streaming: a FIFO, socket or character device, or under ``/dev``."""
    if os.path.abspath(path).startswith("/dev/"):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def real(path: str | Path) -> Path:
    """``path`` with every symbolic link resolved (an absolute path; need not exist)."""
    return Path(os.path.realpath(path))


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (``samefile`` when both exist, else equal resolved paths)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return real(a) == real(b)


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it, after resolving links."""
    inner, outer = real(path), real(folder)
    return inner == outer or outer in inner.parents


def check_writable_folder(folder: Path, option: str) -> None:
    """:class:`InvalidArgumentError` unless ``folder`` exists and a file can be created in it (tried)."""
    if not folder.is_dir():
        raise InvalidArgumentError(
            f"{option}: output directory '{safe_text(folder)}' does not exist; create it or choose another path"
        )
    probe = folder / temporary_name()
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise InvalidArgumentError(
            f"{option}: cannot write in '{safe_text(folder)}' ({exc.strerror}); choose a writable folder"
        ) from None
    probe.unlink()


def _check_target(path: Path, option: str, inputs: Iterable[Path], overwrite: bool) -> None:
    """Not an input (ever), not a folder, not an existing file unless ``overwrite``."""
    shown = safe_text(path)
    for source in inputs:
        if same_file(path, source):
            raise InvalidArgumentError(
                f"{option} '{shown}' is the input '{safe_text(source)}'; it would be overwritten: choose another name"
            )
    target = real(path)
    if target.is_dir():
        raise InvalidArgumentError(f"{option} '{shown}' is a directory; give a file name")
    if target.exists() and not overwrite:
        raise InvalidArgumentError(f"{option} '{shown}' already exists; pass --overwrite to replace it")


def check_output_file(path: Path, option: str, inputs: Iterable[Path] = (), *, overwrite: bool = False) -> None:
    """Check an output file before any work: not an input, not a folder, replaced only with ``overwrite``,
    and its (link-resolved) folder writable. Streams (:func:`is_stream`) pass unchecked."""
    if is_stream(path):
        return
    _check_target(path, option, inputs, overwrite)
    check_writable_folder(real(path).parent, option)


def check_output_folder(
    folder: Path,
    option: str,
    files: Iterable[Path],
    inputs: Iterable[Path] = (),
    input_folders: Iterable[Path] = (),
    *,
    overwrite: bool = False,
) -> None:
    """Check an output folder and the ``files`` to be written below it, before any work.

    The folder is not a file and not one of ``input_folders`` (its outputs would replace and mix with
    the inputs; a folder *below* an input folder is fine, folders are not read recursively); each file
    passes the checks of :func:`check_output_file`; the folder, or its nearest existing ancestor, is
    writable.
    """
    shown = safe_text(folder)
    if real(folder).exists() and not real(folder).is_dir():
        raise InvalidArgumentError(f"{option} '{shown}' is not a directory; give a folder")
    for source in input_folders:
        if same_file(folder, source):
            raise InvalidArgumentError(
                f"{option} '{shown}' is the input folder '{safe_text(source)}'; choose a folder outside the inputs"
            )
    inputs = tuple(inputs)
    for path in files:
        _check_target(path, option, inputs, overwrite)
    existing = real(folder)
    while not existing.exists():
        existing = existing.parent
    check_writable_folder(existing, option)


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``'s target; rename it onto the target when the block ends
    normally, delete it otherwise. ``suffix`` ends the temporary name (writers that pick a format by it)."""
    target = real(path)
    temporary = target.with_name(temporary_name(suffix))
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON: streamed into a pipe or device, else atomically (:func:`atomic_path`).

    Readers never see a half-written file; on any error ``path`` is left as it was and no temporary
    file remains.
    """
    if is_stream(path):
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
        return
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
