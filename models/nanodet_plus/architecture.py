"""Inferring a :class:`ModelConfig` from checkpoint tensors when no config file is given.

Read from the weights: backbone kind (ShuffleNetV2 or GhostNet, from key names) and width, its output
stages, the GhostPAN's channels / kernel / depth / extra levels, the head's classes, tower and reg_max, and
the aux head. PReLU is recognised by its slope parameters. Not stored in weights, hence assumed as in
every upstream NanoDet-Plus config unless stated: LeakyReLU everywhere (``activation=`` states another),
bilinear upsampling, GroupNorm(32) in the aux head, val normalisation of upstream, keep_ratio False, input
320x320 (``input_size=`` states another). ``reg_max`` comes from ``head.distribution_project.project``
(``reg_max + 1`` entries) or from ``aux_head.gfl_reg`` (``4 * (reg_max + 1)`` outputs); with neither it is
assumed to be 7. The assumptions that mattered are listed in :attr:`ModelConfig.assumed`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from nanodet_infer.errors import CheckpointError, InvalidArgumentError

from .checkpoint import AUX_PREFIXES, is_optional
from .config import ModelConfig, default_class_names
from .ghostnet import BLOCK_STRIDES, block_channels
from .layers import check_activation
from .network import build_model
from .registry import resolve
from .shufflenetv2 import STAGE_CHANNELS, STAGE_STRIDES

ACTIVATION = "LeakyReLU"
DEFAULT_REG_MAX = 7
DEFAULT_INPUT_SIZE = (320, 320)
# Where each part's first activation keeps its parameter when that activation is PReLU.
PRELU_KEYS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone.conv1.2.weight", "backbone.act1.weight"),  # ShuffleNetV2, GhostNet
    "fpn": ("fpn.reduce_layers.0.act.weight",),
    "head": ("head.cls_convs.0.0.act.weight",),
    "aux_head": ("aux_head.cls_convs.0.act.weight",),
}


def config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    input_size: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    activation: str | None = None,
) -> ModelConfig:
    """The NanoDet-Plus architecture whose ``state_dict`` (prefixes stripped) this is.

    ``input_size`` is ``(W, H)``, default ``(320, 320)``; ``class_names`` default to COCO's names for 80
    classes, else ``class0 .. class{C-1}``; ``activation`` (an upstream ``act_layers`` name) is that of
    every part, by default PReLU when the weights hold PReLU slopes, else LeakyReLU (assumed). The
    result has ``inferred=True`` and lists in ``assumed`` each fact it assumed. The inferred model is
    built and its key layout checked against ``state_dict``. Raises :class:`CheckpointError` for a
    checkpoint of another architecture (or of another activation than ``activation``) and
    :class:`InvalidArgumentError` for an unknown ``activation`` or when ``class_names`` does not match the
    number of classes.
    """
    sd = state_dict
    if not any(k.startswith("fpn.reduce_layers.") for k in sd) or not any(k.startswith("head.gfl_cls.") for k in sd):
        raise CheckpointError(_foreign(sd))
    check_activation(activation)
    act, act_assumed = _activation(sd, activation)
    backbone, stages = _backbone(sd)
    fpn = _fpn(sd, [channels for channels, _ in stages.values()], act)
    # blocks with equal channels (GhostNet 3/4, 7/8) are indistinguishable: the deepest one is taken
    out_stages = [max(i for i, (channels, _) in stages.items() if channels == c) for c in fpn["in_channels"]]
    backbone.update(out_stages=out_stages, activation=act)
    levels = len(fpn["in_channels"]) + fpn["num_extra_level"]
    in_strides = [stages[i][1] for i in out_stages]
    strides = in_strides + [in_strides[-1] * 2 ** (i + 1) for i in range(fpn["num_extra_level"])]
    head = _head(sd, levels, strides, act)
    aux = _aux_head(sd, head, fpn["out_channels"], strides, act)
    num_classes = head["num_classes"]
    if class_names is None:
        class_names = default_class_names(num_classes)
    elif len(class_names) != num_classes:
        raise InvalidArgumentError(
            f"{len(class_names)} class names given but the checkpoint has {num_classes} classes; "
            "give exactly one name per class"
        )
    size = tuple(input_size) if input_size is not None else DEFAULT_INPUT_SIZE
    assumed = [
        *([f"activation {act}"] if act_assumed else []),
        "keep_ratio false",
        "normalisation upstream default",
        *([] if input_size is not None else [f"input size {size[0]}x{size[1]}"]),
        *([f"reg_max {DEFAULT_REG_MAX}"] if _reg_max_source(sd) is None else []),
        "upsampling bilinear",
    ]
    cfg = ModelConfig(
        backbone=resolve("backbone", backbone),
        fpn=resolve("fpn", fpn),
        head=resolve("head", head),
        aux_head=resolve("aux_head", aux),
        input_size=size,
        keep_ratio=False,
        class_names=tuple(class_names),
        inferred=True,
        assumed=tuple(assumed),
    )
    _check_layout(cfg, sd, act)
    return cfg


def _activation(sd: Mapping[str, torch.Tensor], stated: str | None) -> tuple[str, bool]:
    """``(activation of every part, whether it was assumed)``.

    PReLU keeps a slope per activation module, so its presence is read from the weights; any other
    activation leaves no trace and is ``stated`` or assumed to be :data:`ACTIVATION`.
    """
    parts = [part for part in PRELU_KEYS if part != "aux_head" or any(k.startswith(AUX_PREFIXES) for k in sd)]
    with_prelu = [part for part in parts if any(key in sd for key in PRELU_KEYS[part])]
    if with_prelu and len(with_prelu) != len(parts):
        raise CheckpointError(
            f"only the {', '.join(with_prelu)} of the checkpoint use PReLU (their activations hold slope "
            "parameters); mixed activations cannot be inferred: pass its training --config"
        )
    found = "PReLU" if with_prelu else None
    if stated is not None:
        if (stated == "PReLU") != (found == "PReLU"):
            holds = "holds PReLU slope parameters" if found else "holds no PReLU slope parameters"
            raise CheckpointError(
                f"--activation {stated} does not fit the checkpoint, which {holds}; pass the activation it was "
                "trained with, or its training --config"
            )
        return stated, False
    return (found, False) if found else (ACTIVATION, True)


def _foreign(sd: Mapping[str, Any]) -> str:
    keys = list(sd)
    if any(k.startswith(("model.", "avg_model.", "module.")) for k in keys):
        hint = "its keys still carry a prefix; read it with read_checkpoint()"
    elif any(k.startswith("fpn.lateral_convs.") for k in keys):
        hint = "it looks like a NanoDet (v1, PAN neck) checkpoint"
    elif any(k.startswith("backbone.") for k in keys):
        hint = "its neck/head are not GhostPAN + NanoDetPlusHead"
    else:
        hint = f"its keys ({', '.join(keys[:3])}, ...) are not a NanoDet model's"
    return (
        f"not a NanoDet-Plus checkpoint: {hint}. Only NanoDet-Plus (ShuffleNetV2/GhostNet + GhostPAN + "
        "NanoDetPlusHead) is supported"
    )


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"not a NanoDet-Plus checkpoint: key {key!r} is missing")
    return tuple(sd[key].shape)


def _count(sd: Mapping[str, Any], prefix: str) -> int:
    indices = {k[len(prefix) :].split(".", 1)[0] for k in sd if k.startswith(prefix)}
    return len([i for i in indices if i.isdigit()])


def _backbone(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], dict[int, tuple[int, int]]]:
    """Backbone section, and ``{stage index: (channels, stride)}`` of every selectable output stage."""
    if "backbone.stage2.0.branch1.0.weight" in sd:
        stages = [2 * _shape(sd, f"backbone.stage{i}.0.branch2.5.weight")[0] for i in (2, 3, 4)]
        size = next((s for s, ch in STAGE_CHANNELS.items() if list(ch[1:4]) == stages), None)
        if size is None:
            known = ", ".join(STAGE_CHANNELS)
            raise CheckpointError(f"ShuffleNetV2 stage channels {stages} match no model_size ({known})")
        with_last_conv = "backbone.stage4.conv5.0.weight" in sd
        if with_last_conv:
            stages[2] = _shape(sd, "backbone.stage4.conv5.0.weight")[0]
        section = {"name": "ShuffleNetV2", "model_size": size, "with_last_conv": with_last_conv}
        return section, {i: (c, STAGE_STRIDES[i]) for i, c in zip((2, 3, 4), stages, strict=True)}
    if "backbone.conv_stem.weight" in sd:
        last_rows = [f"backbone.blocks.{i}.{_count(sd, f'backbone.blocks.{i}.') - 1}" for i in range(9)]
        channels = [2 * _shape(sd, f"{row}.ghost2.primary_conv.0.weight")[0] for row in last_rows]
        channels.append(_shape(sd, "backbone.blocks.9.0.conv.weight")[0])
        candidates = (round(channels[9] / 960, 2), round(channels[9] / 960, 1))
        width = next((w for w in candidates if list(block_channels(w)) == channels), None)
        if width is None:
            raise CheckpointError(f"GhostNet block channels {channels} match no width_mult")
        return {"name": "GhostNet", "width_mult": width}, dict(enumerate(zip(channels, BLOCK_STRIDES, strict=True)))
    raise CheckpointError(_foreign(sd))


def _fpn(sd: Mapping[str, torch.Tensor], stage_channels: list[int], activation: str) -> dict[str, Any]:
    levels = _count(sd, "fpn.reduce_layers.")
    reduce = [_shape(sd, f"fpn.reduce_layers.{i}.conv.weight") for i in range(levels)]
    in_channels = [s[1] for s in reduce]
    unknown = [c for c in in_channels if c not in stage_channels]
    if unknown:
        raise CheckpointError(f"fpn input channels {unknown} match no backbone stage (stages: {stage_channels})")
    depthwise = "fpn.downsamples.0.depthwise.weight" in sd if levels > 1 else True
    kernel_key = "fpn.downsamples.0.depthwise.weight" if depthwise else "fpn.downsamples.0.conv.weight"
    block = "fpn.top_down_blocks.0" if levels > 1 else None
    section: dict[str, Any] = {
        "name": "GhostPAN",
        "in_channels": in_channels,
        "out_channels": reduce[0][0],
        "use_depthwise": depthwise,
        "num_extra_level": _count(sd, "fpn.extra_lvl_in_conv."),
        "activation": activation,
    }
    if block is not None:
        mid = 2 * _shape(sd, f"{block}.blocks.0.ghost1.primary_conv.0.weight")[0]
        section.update(
            kernel_size=_shape(sd, kernel_key)[-1],
            expand=mid / reduce[0][0] if mid % reduce[0][0] else mid // reduce[0][0],
            num_blocks=_count(sd, f"{block}.blocks."),
            use_res=f"{block}.reduce_conv.conv.weight" in sd,
        )
    return section


def _head(sd: Mapping[str, torch.Tensor], levels: int, strides: list[int], activation: str) -> dict[str, Any]:
    if _count(sd, "head.gfl_cls.") != levels:
        raise CheckpointError(f"head has {_count(sd, 'head.gfl_cls.')} levels but the fpn outputs {levels}")
    out_channels, feat_channels = _shape(sd, "head.gfl_cls.0.weight")[:2]
    reg_max = _reg_max(sd)
    num_classes = out_channels - 4 * (reg_max + 1)
    if num_classes < 1:
        raise CheckpointError(f"head.gfl_cls has {out_channels} outputs, too few for reg_max {reg_max}")
    depthwise = "head.cls_convs.0.0.depthwise.weight" in sd
    first = _shape(sd, "head.cls_convs.0.0.depthwise.weight" if depthwise else "head.cls_convs.0.0.conv.weight")
    with_norm = any(f"head.cls_convs.0.0.{n}.weight" in sd for n in ("dwnorm", "bn"))
    return {
        "name": "NanoDetPlusHead",
        "num_classes": num_classes,
        "input_channel": first[0] if depthwise else first[1],
        "feat_channels": feat_channels,
        "stacked_convs": _count(sd, "head.cls_convs.0."),
        "kernel_size": first[-1],
        "strides": strides,
        "conv_type": "DWConv" if depthwise else "Conv",
        "norm_cfg": {"type": "BN"} if with_norm else None,
        "reg_max": reg_max,
        "activation": activation,
    }


def _reg_max_source(sd: Mapping[str, torch.Tensor]) -> str | None:
    """The key ``reg_max`` can be read from, or None (then it is assumed)."""
    return next((k for k in ("head.distribution_project.project", "aux_head.gfl_reg.weight") if k in sd), None)


def _reg_max(sd: Mapping[str, torch.Tensor]) -> int:
    source = _reg_max_source(sd)
    if source == "head.distribution_project.project":
        return sd[source].numel() - 1
    if source is not None:
        return _shape(sd, source)[0] // 4 - 1
    return DEFAULT_REG_MAX


def _aux_head(
    sd: Mapping[str, torch.Tensor], head: dict[str, Any], fpn_out: int, strides: list[int], activation: str
) -> dict[str, Any]:
    section = {
        "name": "SimpleConvHead",
        "num_classes": head["num_classes"],
        "input_channel": 2 * fpn_out,
        "feat_channels": 2 * fpn_out,
        "stacked_convs": 4,
        "strides": strides,
        "activation": activation,
        "reg_max": head["reg_max"],
    }
    if any(k.startswith(AUX_PREFIXES) for k in sd):
        section.update(
            feat_channels=_shape(sd, "aux_head.gfl_cls.weight")[1],
            input_channel=_shape(sd, "aux_head.cls_convs.0.conv.weight")[1],
            stacked_convs=_count(sd, "aux_head.cls_convs."),
        )
    return section


def _check_layout(cfg: ModelConfig, sd: Mapping[str, torch.Tensor], activation: str) -> None:
    expected = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    wrong = sorted(
        k
        for k in set(expected) | set(sd)
        if expected.get(k) != (tuple(sd[k].shape) if k in sd else None) and not (k not in sd and is_optional(k, sd))
    )
    if wrong:
        raise CheckpointError(
            f"the checkpoint is not a NanoDet-Plus model this package can build: {len(wrong)} key(s) do not fit "
            f"the inferred architecture ({', '.join(wrong[:5])}; activation {activation}); pass its training --config"
        )
