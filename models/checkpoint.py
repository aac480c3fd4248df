"""Reading upstream training checkpoints safely, and strict weight loading.

Formats: a Lightning ``.ckpt`` (``state_dict`` with ``model.*`` and, with EMA, ``avg_model.*`` keys),
upstream's ``.pth`` (``{"state_dict": weights}`` without prefix) and a bare state dict; a ``module.``
(DataParallel) prefix is tolerated. Files are read with ``torch.load(weights_only=True)``; a checkpoint
that needs full unpickling (which can run arbitrary code) is refused unless ``trust=True``.
"""

from __future__ import annotations

import hashlib
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from nanodet_infer.errors import CheckpointError, ModelLoadError, UnsafeCheckpointError

AUX_PREFIXES = ("aux_fpn.", "aux_head.")
PROJECT_KEY = "head.distribution_project.project"  # linspace(0, reg_max, reg_max + 1), a constant
EMA_PREFIX = "avg_model."
MODEL_PREFIX = "model."
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"})
_SHOWN = 5


@dataclass(frozen=True)
class Checkpoint:
    """Weights read from a checkpoint file.

    ``state_dict``: tensors keyed like :class:`~.detector.NanoDetPlus` (``backbone.*``, ``fpn.*``, ...;
    prefixes stripped). ``source_format``: ``'lightning'`` (``model.``/``avg_model.`` keys), ``'pth'``
    (``{"state_dict": ...}`` without prefix) or ``'state_dict'`` (the file is the mapping itself).
    ``used_ema``: the EMA weights (``avg_model.*``) were chosen over ``model.*``, as upstream does.
    ``sha256``: hex digest of the file.
    """

    state_dict: dict[str, torch.Tensor]
    source_format: Literal["lightning", "pth", "state_dict"]
    used_ema: bool
    sha256: str


def read_checkpoint(path: str | Path, *, trust: bool = False) -> Checkpoint:
    """Read the weights of an upstream NanoDet checkpoint (``.ckpt``/``.pth``) onto the CPU.

    Raises :class:`ModelLoadError` when the file is missing or unreadable, :class:`UnsafeCheckpointError`
    when it can only be read by full unpickling and ``trust`` is False, and :class:`CheckpointError` when
    it is not a checkpoint (truncated, corrupt, or holding no tensors).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist (or is not a file); check the path")
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc}") from exc
    obj = _load(path, trust)
    state_dict, source_format, used_ema = _extract(obj, path)
    return Checkpoint(state_dict, source_format, used_ema, digest)


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state_dict`` into ``model`` strictly.

    Every key of the model must be present with the same shape, and no other key may be present, except
    the keys :func:`is_optional` allows to be absent (the model keeps its own values for those). Raises
    :class:`CheckpointError` listing the offending keys and the likely cause.
    """
    expected = model.state_dict()
    problems = key_problems(expected, state_dict, optional=lambda key: is_optional(key, state_dict))
    if problems:
        raise CheckpointError(
            f"checkpoint does not fit the model: {'; '.join(problems)}. {_likely_cause(expected, state_dict)}"
        )
    model.load_state_dict(dict(state_dict), strict=False)  # completeness was checked above


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
        f"{label} {len(keys)} key(s): {', '.join(keys[:_SHOWN])}{', ...' if len(keys) > _SHOWN else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch in", mismatched))
        if keys
    ]


def is_optional(key: str, state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the model may keep its own value for ``key`` when ``state_dict`` lacks it.

    True for the constant ``head.distribution_project.project`` buffer, and for every aux key when
    ``state_dict`` holds no aux key at all (deploy-only checkpoints).
    """
    if key == PROJECT_KEY:
        return True
    return key.startswith(AUX_PREFIXES) and not any(k.startswith(AUX_PREFIXES) for k in state_dict)


def _likely_cause(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str:
    if any(k.startswith("head.gfl_cls.") and k in given and given[k].shape != v.shape for k, v in expected.items()):
        return (
            "The head's output channels differ: the number of classes (or reg_max) is not the one the "
            "checkpoint was trained with; pass its training --config or omit --config to infer it."
        )
    if any(k.startswith(("model.", "avg_model.", "module.")) and k not in expected for k in given):
        return "The keys still carry a prefix; read the file with read_checkpoint()."
    return (
        "The checkpoint was trained with another architecture (backbone size, fpn channels, ...); pass "
        "its training --config, or omit --config to infer the architecture from the checkpoint."
    )


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load(path: Path, trust: bool) -> Any:
    try:
        with warnings.catch_warnings():
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


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:  # torch's weights-only boilerplate: keep only its actual finding
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    reason = text.splitlines()[0][:160] if text else type(exc).__name__
    return CheckpointError(
        f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another kind of file: {reason}); "
        "pass the .ckpt or .pth written by NanoDet training"
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


def _extract(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], Literal["lightning", "pth", "state_dict"], bool]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        weights, fmt = obj["state_dict"], "pth"
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        weights, fmt = obj, "state_dict"
    else:
        raise CheckpointError(
            f"{path} holds no state_dict of tensors; pass the .ckpt or .pth written by NanoDet training"
        )
    used_ema = any(str(k).startswith(EMA_PREFIX) for k in weights)
    if used_ema or any(str(k).startswith(MODEL_PREFIX) for k in weights):
        prefix = EMA_PREFIX if used_ema else MODEL_PREFIX
        weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        fmt = "lightning"
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    bad = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if not weights or bad:
        raise CheckpointError(
            f"{path}: the state_dict {'is empty' if not weights else f'has non-tensor entries ({bad[:_SHOWN]})'}; "
            "pass the .ckpt or .pth written by NanoDet training"
        )
    return weights, fmt, used_ema
