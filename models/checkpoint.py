"""Reading training checkpoints safely, for every family's reader: the archive bounds, the weights-only load,
the strict-fit check and the float32 cast.

:func:`load_archive` is ``torch.load(weights_only=True)`` after :func:`check_archive` has bounded what the file can
make us inflate; a checkpoint that needs full unpickling (which can run arbitrary code) is refused with
:class:`~nanodet_infer.errors.UnsafeCheckpointError` unless ``trust=True``. The family readers
(``nanodet_plus/checkpoint.py``, ``yolov7/checkpoint.py``, ``torchvision_checkpoint.py``, ``detr/checkpoint.py``)
take the weights out of what it returns.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch

from nanodet_infer.errors import CheckpointError, ModelLoadError, UnsafeCheckpointError

from .tensor_bounds import check_tensors

_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"})
SCRIPT_ARGS: tuple[type, ...] = (argparse.Namespace,)
"""What torchvision's and DETR's training scripts pickle beside the weights (their ``args``: plain attributes,
nothing called): the ``allowed`` of :func:`load_archive` for those checkpoints."""
SHOWN = 5
"""Keys named per problem in an error message."""

MAX_CHECKPOINT_BYTES = 4 << 30
"""Largest checkpoint accepted: total uncompressed size of a zip's entries, or a legacy file's size (4 GiB)."""
MAX_EXPANSION = 8
"""Largest ratio of a zip checkpoint's total uncompressed size to its file size. ``torch.save`` stores its
entries uncompressed (ratio < 1); a re-zipped checkpoint deflates float weights by well under 2x."""
MAX_ENTRIES = 100_000
"""Most entries in a zip checkpoint (``torch.save`` writes one per tensor storage plus a few; real ones: < 5,000)."""
MAX_CENTRAL_DIRECTORY = 16 << 20
"""Largest zip central directory read (bounds the memory of listing the entries; real ones: < 1 MB)."""
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what torch's zip reader (miniz) inflates
_MAX_NAME = 1024
_MAX_NAME_PARTS = 8


def check_archive(path: str | Path) -> None:
    """Refuse a checkpoint file that would make ``torch.load`` inflate or hold too much, before torch reads it.

    A zip checkpoint (``torch.save`` since torch 1.6; any file that starts with a zip entry or ends with a zip
    directory) is judged by its end-of-central-directory record and central directory alone, nothing is
    inflated: at most :data:`MAX_CENTRAL_DIRECTORY` bytes of directory and :data:`MAX_ENTRIES` entries; entry
    names relative, without ``..``, backslashes or control characters, unique, at most 8 levels deep and
    all under one top-level folder (torch's archive name); stored or deflated, not encrypted; total
    uncompressed size at most :data:`MAX_EXPANSION` times the file size and :data:`MAX_CHECKPOINT_BYTES`.
    A legacy (pre-1.6, non-zip) checkpoint is a pickle followed by raw storages that nothing inflates: only
    its size is bounded by :data:`MAX_CHECKPOINT_BYTES`.

    Raises :class:`ModelLoadError` when the file is missing or unreadable and :class:`CheckpointError`
    naming the first limit exceeded. :func:`load_archive` calls it; readers that sniff a file first call it too.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist (or is not a file); check the path")
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            if f.read(4) == b"PK\x03\x04" or zipfile.is_zipfile(f):
                _check_zip(path, f, size)
    except OSError as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc}") from exc
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"checkpoint {path} is {_mib(size)}, above the {_mib(MAX_CHECKPOINT_BYTES)} limit of a legacy "
            "(non-zip) checkpoint; pass a checkpoint of the supported models"
        )


def _check_zip(path: Path, f: BinaryIO, size: int) -> None:
    directory = _central_directory_size(f, size)
    if directory is None:
        raise _corrupt(path, zipfile.BadZipFile("a zip archive without its directory"))
    if directory > MAX_CENTRAL_DIRECTORY:
        raise _refused(path, f"its zip directory is {directory} bytes (limit {MAX_CENTRAL_DIRECTORY})")
    try:
        entries = zipfile.ZipFile(f).infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise _corrupt(path, exc) from exc
    if len(entries) > MAX_ENTRIES:
        raise _refused(path, f"it has {len(entries)} entries (limit {MAX_ENTRIES})")
    names = [info.filename for info in entries]
    problem = next(filter(None, map(_entry_problem, entries)), None)
    if problem is None and len(set(names)) != len(names):
        problem = "two entries of one name"
    if problem is None and (len({n.split("/", 1)[0] for n in names}) > 1 or any("/" not in n for n in names)):
        problem = "entries outside one top-level folder, which torch.save never writes"
    if problem is not None:
        raise _corrupt(path, zipfile.BadZipFile(problem))
    total = sum(info.file_size for info in entries)
    if total > min(MAX_CHECKPOINT_BYTES, MAX_EXPANSION * size):
        raise _refused(
            path,
            f"it inflates to {_mib(total)} from {_mib(size)} (limit: {MAX_EXPANSION}x the file size, "
            f"at most {_mib(MAX_CHECKPOINT_BYTES)})",
        )


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """What is wrong with one zip entry's name or storage, or None."""
    name, parts = info.filename, info.filename.split("/")
    if (
        len(name) > _MAX_NAME
        or len(parts) > _MAX_NAME_PARTS
        or name.startswith("/")
        or ".." in parts
        or any(c == "\\" or ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        return f"an entry named {name[:80]!r}"
    if info.flag_bits & 1:
        return f"entry {name[:80]!r} is encrypted"
    if info.compress_type not in _ZIP_METHODS:
        return f"entry {name[:80]!r} uses compression method {info.compress_type}"
    return None


def _central_directory_size(f: BinaryIO, size: int) -> int | None:
    """The central directory's size from the end-of-central-directory record (zip64 too); None without one."""
    tail_size = min(size, 22 + 0xFFFF)  # the record (22 bytes) and a comment of at most 64 KiB
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    directory = int.from_bytes(tail[at + 12 : at + 16], "little")
    locator = tail[at - 20 : at] if at >= 20 else b""
    if directory == 0xFFFFFFFF and locator[:4] == b"PK\x06\x07":  # zip64: the record the locator points at
        f.seek(int.from_bytes(locator[8:16], "little"))
        record = f.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 56:
            return None
        directory = int.from_bytes(record[40:48], "little")
    return directory


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _refused(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is refused before inflating it: {reason}; pass the .ckpt or .pth written by training"
    )


def key_problems(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    *,
    optional: Callable[[str], bool] = lambda key: False,
) -> list[str]:
    """What keeps ``given`` from loading strictly into a model whose state dict is ``expected``.

    One phrase per kind of problem (missing keys, unexpected keys, shape mismatches), each naming a
    few keys; empty when it fits. Keys for which ``optional`` is true may be missing.
    """
    missing = [k for k in expected if k not in given and not optional(k)]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k} (checkpoint {list(given[k].shape)}, model {list(expected[k].shape)})"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    return [
        f"{label} {len(keys)} key(s): {', '.join(keys[:SHOWN])}{', ...' if len(keys) > SHOWN else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch in", mismatched))
        if keys
    ]


def load_archive(path: Path, *, trust: bool = False, allowed: Sequence[type] = ()) -> Any:
    """``torch.load`` of ``path`` onto the CPU after :func:`check_archive`: weights only, with the classes in
    ``allowed`` admitted beyond torch's allowlist (e.g. ``argparse.Namespace``, the ``args`` torchvision's and
    DETR's training scripts pickle: plain attributes, nothing called); everything with ``trust``.

    Raises :class:`ModelLoadError` when the file is missing or unreadable, :class:`UnsafeCheckpointError` when it
    can only be read by full unpickling and ``trust`` is False, and :class:`CheckpointError` when it is truncated,
    corrupt or refused by :func:`check_archive`.
    """
    check_archive(path)  # missing file, zip bombs, odd member names: refused before torch reads anything
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(allowed)):
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it reads fine
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust and (" GLOBAL " in str(exc) or _is_code_pickle(path)):
            raise UnsafeCheckpointError(
                f"checkpoint {path} can only be read by full unpickling, which can run arbitrary code; "
                "if you trust its source, pass --trust-checkpoint (Python: trust=True)"
            ) from exc
        raise _corrupt(path, exc) from exc
    except MemoryError:
        raise
    except Exception as exc:  # torch/zipfile raise many types for damaged files
        raise _corrupt(path, exc) from exc


def weights_entry(obj: Any, key: str, path: Path, fix: str) -> tuple[Mapping[Any, Any], bool]:
    """The weights a loaded checkpoint ``obj`` holds: ``(obj[key], True)`` when it is a mapping under ``key``
    (e.g. ``{"state_dict": ...}``), ``(obj, False)`` when ``obj`` is itself a mapping of tensors; else
    :class:`CheckpointError` saying ``path`` holds no state dict and ``fix``."""
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
        return obj[key], True
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, False
    raise CheckpointError(f"{path} holds no state dict of tensors; {fix}")


def float32_weights(state_dict: Mapping[str, torch.Tensor], source: object) -> tuple[dict[str, torch.Tensor], str]:
    """``state_dict`` with floating tensors cast to float32, after :func:`~.tensor_bounds.check_tensors` (so a
    view that declares more than its storage never allocates), and the stored float dtypes joined by ``/``."""
    check_tensors(state_dict, source)
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state_dict.values() if v.is_floating_point()})
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}, "/".join(dtypes)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:  # torch's weights-only boilerplate: keep only its actual finding
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    reason = text.splitlines()[0][:160] if text else type(exc).__name__
    return CheckpointError(
        f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another kind of file: {reason}); "
        "pass the checkpoint file written by training"
    )


def _is_code_pickle(path: Path) -> bool:
    """Whether the file's pickle parses completely and would import or call objects (never executes it)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return False
                data = archive.read(member)
        else:
            data = path.read_bytes()
        return any(op.name in _CODE_OPCODES for op, _, _ in pickletools.genops(data))
    except Exception:
        return False


