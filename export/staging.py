"""Atomic output: write next to the destination, move into place only once checked.

Every output file is first written to a short hidden temporary name (unique per process, independent
of the final name's length) in the destination directory (so the final :func:`os.replace` is a
same-filesystem rename) and only renamed to its real name by :meth:`StagedOutput.commit`, which the
exporter calls after the parity check passed. Leaving the ``with`` block without committing (an error,
a failed check, Ctrl-C, SIGTERM) deletes the temporaries, so a half-written or unchecked model never
appears under the requested name. A final name that is a symbolic link is written through: its target
is replaced, the link stays.

``nanodet-export`` checks every output path (:func:`output_files`) with
:mod:`nanodet_infer.paths` before it reads the checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from nanodet_infer.errors import InvalidArgumentError
from nanodet_infer.paths import real, temporary_name


def output_files(out: str | Path, suffixes: Sequence[str]) -> tuple[Path, ...]:
    """Every file an export to ``out`` writes: ``out`` and its companions (``suffixes[1:]``, e.g. the
    IR's ``.bin``), in that order."""
    out = Path(out)
    return (out, *(out.with_suffix(suffix) for suffix in suffixes[1:]))


class StagedOutput:
    """Temporary twins of ``finals`` (in the main file's directory, same suffixes, shared random stem)."""

    def __init__(self, finals: tuple[Path, ...]) -> None:
        directory = real(finals[0]).parent
        if not directory.is_dir():
            raise InvalidArgumentError(
                f"output directory {str(finals[0].parent)!r} does not exist; create it or choose another --out"
            )
        stem = temporary_name()
        self.finals = tuple(real(p) for p in finals)  # a link is written through
        # Same stem for every file: an OpenVINO .xml finds its .bin by replacing the suffix.
        self.temps = tuple(directory / f"{stem}{p.suffix}" for p in finals)
        self._committed = False

    @property
    def temp(self) -> Path:
        """The temporary path of the main file (``.onnx`` or ``.xml``)."""
        return self.temps[0]

    def commit(self) -> None:
        """Move every temporary onto its final name (the main file last)."""
        try:
            for temp, final in reversed(tuple(zip(self.temps, self.finals, strict=True))):
                os.replace(temp, final)
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot write {str(self.finals[0])!r}: {exc.strerror}; check the destination is writable"
            ) from exc
        self._committed = True

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed:
            for temp in self.temps:
                temp.unlink(missing_ok=True)
