"""Reading NanoDet-Plus training checkpoints, and loading them strictly into :class:`~.network.NanoDetPlus`.

Formats: a Lightning ``.ckpt`` (``state_dict`` with ``model.*`` and, with EMA, ``avg_model.*`` keys),
upstream's ``.pth`` (``{"state_dict": weights}`` without prefix) and a bare state dict; a ``module.``
(DataParallel) prefix is tolerated. The file is read by :func:`~..checkpoint.load_archive` (bounded, weights
only unless ``trust``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from nanodet_infer.errors import CheckpointError, ModelLoadError

from ..checkpoint import SHOWN, file_sha256, key_problems, load_archive, weights_entry
from ..tensor_bounds import check_tensors

AUX_PREFIXES = ("aux_fpn.", "aux_head.")
PROJECT_KEY = "head.distribution_project.project"  # linspace(0, reg_max, reg_max + 1), a constant
EMA_PREFIX = "avg_model."
MODEL_PREFIX = "model."


@dataclass(frozen=True)
class Checkpoint:
    """Weights read from a checkpoint file.

    ``state_dict``: tensors keyed like :class:`~.network.NanoDetPlus` (``backbone.*``, ``fpn.*``, ...;
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
    it is not a checkpoint (truncated, corrupt, or holding no tensors) or :func:`check_archive` refuses it.
    """
    path = Path(path)
    obj = load_archive(path, trust=trust)
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc}") from exc
    state_dict, source_format, used_ema = _extract(obj, path)
    check_tensors(state_dict, path)
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


def _extract(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], Literal["lightning", "pth", "state_dict"], bool]:
    weights, nested = weights_entry(obj, "state_dict", path, "pass the .ckpt or .pth written by NanoDet training")
    fmt: Literal["lightning", "pth", "state_dict"] = "pth" if nested else "state_dict"
    used_ema = any(str(k).startswith(EMA_PREFIX) for k in weights)
    if used_ema or any(str(k).startswith(MODEL_PREFIX) for k in weights):
        prefix = EMA_PREFIX if used_ema else MODEL_PREFIX
        weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        fmt = "lightning"
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    bad = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if not weights or bad:
        raise CheckpointError(
            f"{path}: the state_dict {'is empty' if not weights else f'has non-tensor entries ({bad[:SHOWN]})'}; "
            "pass the .ckpt or .pth written by NanoDet training"
        )
    return weights, fmt, used_ema
