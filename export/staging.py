"""Atomic output: write next to the destination, move into place only once checked.

Every output file is first written to a hidden temporary name in the destination directory (so the
final :func:`os.replace` is a same-filesystem rename) and only renamed to its real name by
:meth:`StagedOutput.commit`, which the exporter calls after the parity check passed. Leaving the
``with`` block without committing (an error, a failed check, Ctrl-C) deletes the temporaries, so a
half-written or unchecked model never appears under the requested name.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from types import TracebackType

from nanodet_infer.errors import InvalidArgumentError


class StagedOutput:
    """Temporary twins of ``finals`` (same directory, same suffixes, shared random stem)."""

    def __init__(self, finals: tuple[Path, ...]) -> None:
        directory = finals[0].parent
        if not directory.is_dir():
            raise InvalidArgumentError(
                f"output directory {str(directory)!r} does not exist; create it or choose another --out"
            )
        token = secrets.token_hex(4)
        self.finals = finals
        # Same stem for every file: an OpenVINO .xml finds its .bin by replacing the suffix.
        self.temps = tuple(p.with_name(f".{finals[0].stem}.{token}.partial{p.suffix}") for p in finals)
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
