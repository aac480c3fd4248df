"""DETR checkpoints read without executing code, and the architecture read from their tensors.

Layouts: the hub / release layout ``{'model': state_dict}`` (fp32 or fp16) and the training layout official
``main.py`` writes, ``{'model', 'optimizer', 'lr_scheduler', 'epoch', 'args'}``, whose ``args`` is a pickled
``argparse.Namespace``. Both are read with ``torch.load(weights_only=True)``; the one class admitted beyond
torch's own allowlist is ``argparse.Namespace`` (rebuilt from its attribute dict, nothing is called), so a
payload hidden in ``args`` (any other global) is refused, never run. :func:`~..checkpoint.check_archive`
bounds the file first (:func:`~..checkpoint.load_archive`).

Architecture (:class:`~.model.DetrArchitecture`) from the tensors: the backbone from the layer block counts and
block type, DC5 from ``args.dilation`` (it changes no tensor shape: default False without ``args``), hidden size
from ``query_embed``, encoder/decoder depth, FFN width, ``pre_norm`` from ``transformer.encoder.norm``, queries,
classes from ``class_embed``. ``nheads`` changes no shape either: ``args.nheads``, else DETR's default 8.
Refused with a one-line :class:`CheckpointError`: segmentation (``masks=True``: ``bbox_attention`` /
``mask_head`` keys), Deformable / Conditional DETR, mmdetection checkpoints, other backbones.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from nanodet_infer.errors import CheckpointError

from ..checkpoint import SCRIPT_ARGS, file_sha256, float32_weights, key_problems, load_archive
from ..torchvision_resnet import BLOCKS, BOTTLENECK
from .model import DETR, DetrArchitecture, build_detr

SUPPORTED = (
    "supported: facebookresearch/detr detection checkpoints (hub {'model': ...} or main.py's checkpoint.pth) "
    "with a ResNet-18/34/50/101 backbone (DC5 included)"
)


@dataclass(frozen=True)
class DetrConfig:
    """What a DETR checkpoint says about itself: the architecture and where each fact came from."""

    arch: DetrArchitecture
    sources: dict[str, str] = field(default_factory=dict)
    """fact → ``'tensors'``, ``'args'`` or ``'default'`` (assumed: the checkpoint does not store it)."""

    @property
    def assumed(self) -> tuple[str, ...]:
        return tuple(
            f"{k}={getattr(self.arch, k)!r} (DETR's default)" for k, v in self.sources.items() if v == "default"
        )


@dataclass(frozen=True)
class DetrCheckpoint:
    """A read DETR checkpoint: float32 ``state_dict`` (official keys), ``config``, ``source_format``
    (``'hub'`` or ``'main.py'``), ``stored_dtype`` (e.g. ``'float16'``), ``args`` (the Namespace's dict or
    None), ``sha256`` of the file."""

    state_dict: dict[str, torch.Tensor]
    config: DetrConfig
    source_format: Literal["hub", "main.py"]
    stored_dtype: str
    args: dict[str, Any] | None
    sha256: str

    def build(self) -> DETR:
        """The eval-mode model with these weights (strict: every key, no extra)."""
        model = build_detr(self.config.arch)
        problems = key_problems(model.state_dict(), self.state_dict)
        if problems:
            raise CheckpointError(
                f"DETR checkpoint does not match its inferred architecture: {'; '.join(problems)}; {SUPPORTED}"
            )
        model.load_state_dict(self.state_dict, strict=True)
        return model


def read_detr_checkpoint(path: str | Path, *, trust: bool = False) -> DetrCheckpoint:
    """Read a DETR checkpoint onto the CPU and infer its architecture (see the module docstring)."""
    path = Path(path)
    weights, fmt, args = _extract(load_archive(path, trust=trust, allowed=SCRIPT_ARGS), path)
    state_dict, dtypes = float32_weights(weights, path)  # the views checked against their storage first
    config = infer_config(state_dict, args, path)
    return DetrCheckpoint(state_dict, config, fmt, dtypes, args, file_sha256(path))


def _extract(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], Literal["hub", "main.py"], dict[str, Any] | None]:
    if isinstance(obj, Mapping) and "state_dict" in obj and "meta" in obj:
        raise CheckpointError(f"{path} is an mmdetection checkpoint (state_dict + meta); {SUPPORTED}")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        raise CheckpointError(f"{path} holds no DETR model state dict (no 'model' entry); {SUPPORTED}")
    weights = {str(k).removeprefix("module."): v for k, v in obj["model"].items()}
    if not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: the 'model' entry is empty or holds non-tensors; {SUPPORTED}")
    args = obj.get("args")
    if args is not None and not isinstance(args, argparse.Namespace):
        raise CheckpointError(f"{path}: 'args' is a {type(args).__name__}, not main.py's argparse.Namespace")
    fmt: Literal["hub", "main.py"] = "main.py" if args is not None or "optimizer" in obj else "hub"
    return weights, fmt, None if args is None else dict(vars(args))


_LAYER = re.compile(r"^backbone\.0\.body\.layer(\d)\.(\d+)\.")
_ENC = re.compile(r"^transformer\.encoder\.layers\.(\d+)\.")
_DEC = re.compile(r"^transformer\.decoder\.layers\.(\d+)\.")


def _count(pattern: re.Pattern[str], keys: list[str], group: int = 1) -> dict[str, int]:
    found: dict[str, int] = {}
    for key in keys:
        match = pattern.match(key)
        if match:
            name = match.group(1) if group == 2 else "n"
            index = int(match.group(group))
            found[name] = max(found.get(name, -1), index)
    return {k: v + 1 for k, v in found.items()}


def infer_config(sd: Mapping[str, torch.Tensor], args: Mapping[str, Any] | None, path: Path) -> DetrConfig:
    """The architecture from the tensors (``args`` for what no shape shows); :class:`CheckpointError` otherwise."""
    keys = list(sd)
    _refuse_other_models(keys, args, path)
    args = args or {}
    stages = {}
    for key in keys:
        match = _LAYER.match(key)
        if match:
            stages[int(match.group(1))] = max(stages.get(int(match.group(1)), 0), int(match.group(2)) + 1)
    blocks = tuple(stages.get(i, 0) for i in (1, 2, 3, 4))
    bottleneck = "backbone.0.body.layer1.0.conv3.weight" in sd
    backbone = next((n for n, b in BLOCKS.items() if b == blocks and (n in BOTTLENECK) == bottleneck), None)
    if backbone is None:
        raise CheckpointError(
            f"{path}: backbone with {blocks} blocks per stage is not a ResNet-18/34/50/101; {SUPPORTED}"
        )
    dilation = bool(args.get("dilation", False))
    if dilation and backbone not in BOTTLENECK:
        raise CheckpointError(f"{path}: DC5 (dilation) needs a Bottleneck ResNet (50/101), not {backbone}; {SUPPORTED}")
    try:
        queries, hidden = sd["query_embed.weight"].shape
        logits = sd["class_embed.weight"].shape[0]
        ffn = (
            sd["transformer.encoder.layers.0.linear1.weight"].shape[0]
            if "transformer.encoder.layers.0.linear1.weight" in sd
            else sd["transformer.decoder.layers.0.linear1.weight"].shape[0]
        )
    except KeyError as exc:
        raise CheckpointError(f"{path}: no DETR key {exc.args[0]!r}; {SUPPORTED}") from None
    nheads = args.get("nheads")
    if nheads is not None and (not isinstance(nheads, int) or nheads < 1 or hidden % nheads):
        raise CheckpointError(f"{path}: args.nheads={nheads!r} does not divide hidden size {hidden}")
    arch = DetrArchitecture(
        backbone=backbone,
        dilation=dilation,
        hidden_dim=int(hidden),
        nheads=int(nheads or 8),
        enc_layers=_count(_ENC, keys).get("n", 0),
        dec_layers=_count(_DEC, keys).get("n", 0),
        dim_feedforward=int(ffn),
        pre_norm="transformer.encoder.norm.weight" in sd,
        num_queries=int(queries),
        num_classes=int(logits) - 1,
    )
    if arch.dec_layers < 1:
        raise CheckpointError(f"{path}: the checkpoint has no decoder layers; {SUPPORTED}")
    facts_from_args = {"dilation": "dilation" in args, "nheads": nheads is not None}
    sources = {k: "args" if v else "default" for k, v in facts_from_args.items()}
    for name in (
        "backbone",
        "hidden_dim",
        "enc_layers",
        "dec_layers",
        "dim_feedforward",
        "pre_norm",
        "num_queries",
        "num_classes",
    ):
        sources[name] = "tensors"
    _check_args_agree(arch, args, path)
    return DetrConfig(arch, sources)


def _refuse_other_models(keys: list[str], args: Mapping[str, Any] | None, path: Path) -> None:
    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("detr.") or has("bbox_attention.") or has("mask_head.") or (args or {}).get("masks"):
        raise CheckpointError(f"{path} is a DETR segmentation checkpoint (masks=True), not supported; {SUPPORTED}")
    if any("sampling_offsets" in k for k in keys) or has("transformer.level_embed"):
        raise CheckpointError(f"{path} is a Deformable DETR checkpoint, not supported; {SUPPORTED}")
    if any("ca_qpos_proj" in k or "ref_point_head" in k for k in keys):
        raise CheckpointError(f"{path} is a Conditional DETR checkpoint, not supported; {SUPPORTED}")
    if has("bbox_head.") or has("neck."):
        raise CheckpointError(f"{path} is an mmdetection checkpoint, not supported; {SUPPORTED}")
    if not has("backbone.0.body.") or not has("transformer."):
        raise CheckpointError(
            f"{path} holds no facebookresearch/detr keys (backbone.0.body.*, transformer.*); {SUPPORTED}"
        )


def _check_args_agree(arch: DetrArchitecture, args: Mapping[str, Any], path: Path) -> None:
    for name in ("backbone", "hidden_dim", "enc_layers", "dec_layers", "dim_feedforward", "pre_norm", "num_queries"):
        if name in args and args[name] != getattr(arch, name):
            raise CheckpointError(
                f"{path}: args.{name}={args[name]!r} but the tensors say {getattr(arch, name)!r}; inconsistent file"
            )
