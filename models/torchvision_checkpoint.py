"""torchvision detection checkpoints: safe reading, architecture recognition, strict loading.

Formats: ``torch.save(model.state_dict())`` (an ``OrderedDict``) and the ``{'model': state_dict,
'optimizer': ..., 'lr_scheduler': ..., 'args': Namespace, 'epoch': ...}`` that torchvision's
``references/detection/train.py`` writes. Both are read with ``torch.load(weights_only=True)``; the
only class allowed beyond torch's own list is ``argparse.Namespace`` (train.py's ``args``: plain
attributes, no code); :func:`~.checkpoint.check_archive` bounds the file first. A ``module.``
(DistributedDataParallel) prefix is stripped, and floating tensors
are cast to float32 (e.g. a checkpoint stored in fp16).

Recognised architectures (:data:`ARCHITECTURES`): ``ssd300_vgg16``, ``ssdlite320_mobilenet_v3_large``
and ``retinanet_resnet50_fpn`` (v1). Other torchvision detectors (Faster/Mask/Keypoint R-CNN, FCOS,
RetinaNet v2, SSD with another backbone) are refused with a one-line :class:`CheckpointError` that
names what was found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from nanodet_infer.errors import CheckpointError

from .checkpoint import SCRIPT_ARGS, file_sha256, float32_weights, key_problems, load_archive, weights_entry
from .torchvision_common import NormChoice
from .torchvision_retinanet import RetinaNet
from .torchvision_ssd import ssd300_vgg16, ssdlite320_mobilenet_v3_large

ARCHITECTURES = ("ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn")
#: runtime family of each architecture (metadata ``model_family``)
FAMILIES = {"ssd300_vgg16": "ssd", "ssdlite320_mobilenet_v3_large": "ssd", "retinanet_resnet50_fpn": "retinanet"}

_SSD_CLS = "head.classification_head.module_list."
_RETINA_CLS = "head.classification_head.cls_logits.weight"
_SSDLITE_C5 = "backbone.features.1.3.0.weight"
# torchvision renamed RetinaNet head and FPN keys when it added norm layers (module _version 2); its
# _load_from_state_dict upgrades the old names, and so do we.
_LEGACY = (
    (re.compile(r"^(head\.(?:classification|regression)_head\.conv\.)(\d+)\.(weight|bias)$"), 2),
    (re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.)(\d+)\.(weight|bias)$"), 1),
)


@dataclass(frozen=True)
class TorchvisionCheckpoint:
    """Weights read from a torchvision checkpoint file.

    ``state_dict``: float32 tensors with torchvision's keys. ``source_format``: ``'state_dict'`` or
    ``'train.py'`` (``{'model': ...}``). ``stored_dtype``: the floating dtype(s) in the file, e.g.
    ``'float16'``. ``sha256``: hex digest of the file.
    """

    state_dict: dict[str, torch.Tensor]
    source_format: Literal["state_dict", "train.py"]
    stored_dtype: str
    sha256: str


@dataclass(frozen=True)
class TorchvisionModel:
    """A built and loaded model, with what was read from the checkpoint and what was assumed."""

    model: nn.Module
    architecture: str
    family: str
    num_classes: int
    norm: NormChoice | None
    """The backbone's normalisation layer (None for SSD300-VGG16, which has none)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Architecture facts read from the tensors (e.g. ``reduced_tail``), JSON-ready."""

    @property
    def assumed(self) -> tuple[str, ...]:
        """Facts the checkpoint does not store, in words (empty when nothing was assumed)."""
        if self.norm is None or self.norm.eps_given:
            return ()
        return (f"backbone norm {self.norm.describe(provenance=False)}",)


def read_torchvision_checkpoint(path: str | Path, *, trust: bool = False) -> TorchvisionCheckpoint:
    """Read a torchvision detection checkpoint onto the CPU (see the module docstring for formats).

    Raises :class:`~nanodet_infer.errors.ModelLoadError` for a missing file,
    :class:`~nanodet_infer.errors.UnsafeCheckpointError` when it needs full unpickling and ``trust``
    is False, and :class:`CheckpointError` when it holds no torchvision state dict.
    """
    path = Path(path)
    state_dict, source_format = _extract(load_archive(path, trust=trust, allowed=SCRIPT_ARGS), path)
    weights, dtypes = float32_weights(state_dict, path)
    return TorchvisionCheckpoint(weights, source_format, dtypes, file_sha256(path))


def _extract(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], Literal["state_dict", "train.py"]]:
    weights, nested = weights_entry(
        obj, "model", path, "pass torch.save(model.state_dict()) or torchvision's train.py checkpoint"
    )
    fmt: Literal["state_dict", "train.py"] = "train.py" if nested else "state_dict"
    weights = {str(k).removeprefix("module."): v for k, v in weights.items()}
    if not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(
            f"{path}: the model state dict is empty or holds non-tensors; pass a torchvision checkpoint"
        )
    return weights, fmt


def upgrade_legacy_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename pre-``_version 2`` RetinaNet head / FPN keys (``conv.2.weight`` → ``conv.1.0.weight``,
    ``inner_blocks.0.weight`` → ``inner_blocks.0.0.weight``) as torchvision's loader does."""
    out = {}
    for key, value in state_dict.items():
        for pattern, step in _LEGACY:
            match = pattern.match(key)
            if match:
                key = f"{match[1]}{int(match[2]) // step}.0.{match[3]}"
                break
        out[key] = value
    return out


def identify(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The torchvision builder that made ``state_dict`` (one of :data:`ARCHITECTURES`).

    Raises :class:`CheckpointError` naming the architecture found when it is another one.
    """
    keys = set(state_dict)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("roi_heads.") or has("rpn."):
        kind = (
            "Mask R-CNN"
            if has("roi_heads.mask_")
            else "Keypoint R-CNN"
            if has("roi_heads.keypoint_")
            else "Faster R-CNN"
        )
        raise _unsupported(f"a torchvision {kind} (two-stage: rpn/roi_heads keys)")
    if has("head.regression_head.bbox_ctrness"):
        raise _unsupported("a torchvision FCOS (head.regression_head.bbox_ctrness)")
    if _RETINA_CLS in keys:
        if has("head.classification_head.conv.0.1."):
            raise _unsupported("RetinaNet v2 (retinanet_resnet50_fpn_v2: GroupNorm in the head)")
        p6 = state_dict.get("backbone.fpn.extra_blocks.p6.weight")
        if p6 is not None and p6.shape[1] != 256:
            raise _unsupported(f"RetinaNet with P6 computed from C5 ({p6.shape[1]} channels: the v2 FPN)")
        blocks = 1 + max(
            (int(m[1]) for k in keys if (m := re.match(r"backbone\.body\.layer3\.(\d+)\.", k))), default=-1
        )
        if blocks != 6:
            raise _unsupported(f"RetinaNet with a ResNet whose layer3 has {blocks} blocks (ResNet-50 has 6)")
        return "retinanet_resnet50_fpn"
    if has(_SSD_CLS):
        if "backbone.scale_weight" in keys:
            return "ssd300_vgg16"
        if _SSDLITE_C5 in keys:
            return "ssdlite320_mobilenet_v3_large"
        raise _unsupported("an SSD with a backbone other than VGG16 (ssd300) or MobileNetV3-Large (ssdlite320)")
    raise CheckpointError(
        "the checkpoint is not a torchvision SSD300-VGG16, SSDLite320-MobileNetV3 or RetinaNet-ResNet50-FPN "
        "(no head.classification_head keys); pass one of those checkpoints"
    )


def _unsupported(found: str) -> CheckpointError:
    return CheckpointError(
        f"the checkpoint is {found}; nanodet-export supports torchvision ssd300_vgg16, "
        "ssdlite320_mobilenet_v3_large and retinanet_resnet50_fpn (v1)"
    )


def norm_choice(
    state_dict: Mapping[str, torch.Tensor], prefix: str, default_eps: float, bn_eps: float | None
) -> NormChoice:
    """The backbone's norm layer: ``BatchNorm2d`` if the checkpoint has ``num_batches_tracked`` keys under
    ``prefix``, else ``FrozenBatchNorm2d``; eps ``bn_eps`` when given, else ``default_eps`` (assumed)."""
    tracked = any(k.startswith(prefix) and k.endswith(".num_batches_tracked") for k in state_dict)
    eps = default_eps if bn_eps is None else float(bn_eps)
    return NormChoice("batchnorm" if tracked else "frozen", eps, eps_given=bn_eps is not None)


def build_torchvision_model(state_dict: Mapping[str, torch.Tensor], *, bn_eps: float | None = None) -> TorchvisionModel:
    """Recognise, build and strictly load ``state_dict`` (float32 tensors, torchvision keys); eval mode.

    ``bn_eps`` states the backbone norm's eps, which no checkpoint stores. Without it: SSDLite's
    ``BatchNorm2d(eps=0.001)`` (its builder's), RetinaNet's 1e-5 (torchvision's ``BatchNorm2d`` and
    ``FrozenBatchNorm2d`` default; torchvision's own COCO weights were trained with eps 0.0). It is
    refused for SSD300-VGG16, which has no norm layers. Raises :class:`CheckpointError`.
    """
    state_dict = upgrade_legacy_keys(state_dict)
    arch = identify(state_dict)
    details: dict[str, Any] = {}
    norm: NormChoice | None = None
    if arch == "ssd300_vgg16":
        if bn_eps is not None:
            raise CheckpointError("ssd300_vgg16 has no BatchNorm layers: drop --bn-eps")
        num_classes = state_dict[_SSD_CLS + "0.weight"].shape[0] // 4
        model: nn.Module = ssd300_vgg16(num_classes)
    elif arch == "ssdlite320_mobilenet_v3_large":
        num_classes = state_dict[_SSD_CLS + "0.1.weight"].shape[0] // 6
        reduced_tail = state_dict[_SSDLITE_C5].shape[0] == 480
        details["reduced_tail"] = reduced_tail
        norm = norm_choice(state_dict, "backbone.", 0.001, bn_eps)
        model = ssdlite320_mobilenet_v3_large(num_classes, reduced_tail=reduced_tail, norm=norm)
    else:
        num_classes = state_dict[_RETINA_CLS].shape[0] // 9
        norm = norm_choice(state_dict, "backbone.body.", 1e-5, bn_eps)
        model = RetinaNet(num_classes, norm=norm)
    load_strict(model, state_dict, arch)
    return TorchvisionModel(model.eval(), arch, FAMILIES[arch], num_classes, norm, details)


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], architecture: str) -> None:
    """Copy ``state_dict`` into ``model``; every key and shape must match (:class:`CheckpointError` else)."""
    problems = key_problems(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(
            f"checkpoint does not fit torchvision {architecture}: {'; '.join(problems)}; "
            "pass a checkpoint saved from that builder (num_classes may differ, nothing else)"
        )
    model.load_state_dict(dict(state_dict), strict=True)
