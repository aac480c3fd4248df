"""Looking inside a checkpoint's pickle without executing it: which globals and strings it names.

Used to recognise a checkpoint's family cheaply and safely (no tensor is read, nothing is imported; a
zip archive is first bounded by :func:`~.checkpoint.check_archive`, so nothing oversized is inflated).
"""

from __future__ import annotations

import pickletools
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .checkpoint import check_archive

#: A plain (non-zip) pickle larger than this is not scanned: legacy torch files keep tensors inline.
MAX_PLAIN_PICKLE = 64 << 20


@dataclass(frozen=True)
class PickleNames:
    """``globals``: ``module.name`` of every class/function the pickle names; ``strings``: its text
    constants (dict keys, attribute names, ...)."""

    globals: frozenset[str]
    strings: frozenset[str]


_NONE = PickleNames(frozenset(), frozenset())


def pickle_names(path: str | Path) -> PickleNames:
    """The names in ``path``'s pickle (a torch zip checkpoint's ``data.pkl``, or a plain pickle file);
    empty when the file is missing, refused by :func:`~.checkpoint.check_archive`, or not a pickle that parses.

    Each family's ``recognise`` asks for the same file: the answer is kept for the last few files, keyed by
    resolved path, size and modification time (a changed file is read again)."""
    try:
        stat = Path(path).stat()
        resolved = str(Path(path).resolve())
    except (OSError, ValueError):
        return _NONE
    return _read_names(resolved, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _read_names(path: str, size: int, mtime_ns: int) -> PickleNames:
    """:func:`pickle_names` of ``path`` (``size`` and ``mtime_ns`` only key the cache)."""
    found: set[str] = set()
    strings: list[str] = []
    try:
        check_archive(path)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(member) if member else b""
        else:
            if Path(path).stat().st_size > MAX_PLAIN_PICKLE:
                return _NONE
            data = Path(path).read_bytes()
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                strings.append(arg)
            if op.name == "GLOBAL":
                found.add(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # refused, not a pickle, truncated, unreadable: nothing recognisable
        return _NONE
    return PickleNames(frozenset(found), frozenset(strings))
