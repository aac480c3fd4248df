"""From checkpoint + options to the :class:`ModelConfig` to export, with every check on user input."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nanodet_models import ModelConfig, config_from_state_dict, load_config
from nanodet_models import preset as load_preset
from torch import Tensor, nn

from nanodet_infer.errors import CheckpointError, InvalidArgumentError

from ..writer import check_input_multiple


def resolve_config(
    state_dict: Mapping[str, Tensor],
    *,
    config: str | Path | None = None,
    preset: str | None = None,
    input_size: tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    activation: str | None = None,
) -> ModelConfig:
    """The architecture to export: ``config`` YAML, ``preset`` name, or inferred from the tensors.

    A config or preset must agree with the checkpoint on ``num_classes`` and ``reg_max``
    (:class:`CheckpointError` otherwise; any other disagreement surfaces when the weights are loaded
    strictly); ``input_size`` ``(W, H)`` and ``class_names`` override it. ``activation`` states the
    activation of an inferred architecture (a checkpoint does not store it) and is refused with a
    config or preset, which name their own.
    """
    if config is not None and preset is not None:
        raise InvalidArgumentError("give either --config or --preset, not both")
    if config is None and preset is None:
        return config_from_state_dict(state_dict, input_size=input_size, class_names=class_names, activation=activation)
    if activation is not None:
        raise InvalidArgumentError(
            "--activation applies only when the architecture is inferred from the checkpoint; "
            "the --config/--preset names its own activation: drop --activation"
        )
    cfg = load_config(Path(config)) if config is not None else load_preset(preset)
    source = f"config {str(config)!r}" if config is not None else f"preset {preset!r}"
    try:
        found = config_from_state_dict(state_dict)
    except CheckpointError:  # unrecognised layout: the strict weight loading explains what does not fit
        return with_overrides(cfg, input_size=input_size, class_names=class_names)
    for name in ("num_classes", "reg_max"):
        if getattr(cfg, name) != getattr(found, name):
            raise CheckpointError(
                f"{source} has {name}={getattr(cfg, name)} but the checkpoint's head has "
                f"{name}={getattr(found, name)}; pass the config the checkpoint was trained with"
            )
    return with_overrides(cfg, input_size=input_size, class_names=class_names)


def with_overrides(
    cfg: ModelConfig, *, input_size: tuple[int, int] | None = None, class_names: Sequence[str] | None = None
) -> ModelConfig:
    """``cfg`` with a new ``input_size`` ``(W, H)`` and/or ``class_names`` (one per class).

    A given ``input_size`` is no longer an assumption: it leaves ``cfg.assumed``.
    """
    changes: dict[str, Any] = {}
    if input_size is not None:
        changes["input_size"] = (int(input_size[0]), int(input_size[1]))
        changes["assumed"] = tuple(fact for fact in cfg.assumed if not fact.startswith("input size "))
    if class_names is not None:
        if len(class_names) != cfg.num_classes:
            raise InvalidArgumentError(
                f"{len(class_names)} class names given for a model with {cfg.num_classes} classes; "
                "give exactly one name per class"
            )
        changes["class_names"] = tuple(class_names)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def size_multiple(cfg: ModelConfig) -> int:
    """What W and H must be multiples of: the largest backbone stride (32 for every upstream config).

    The neck upsamples each backbone level x2 onto the one below, so those maps must halve exactly;
    the extra stride-64 level comes from a padded stride-2 conv and rounds up (416 / 64 = 6.5 -> 7).
    """
    return max(cfg.strides[: len(cfg.fpn["in_channels"])])


def check_input_size(size_wh: tuple[int, ...], cfg: ModelConfig) -> None:
    """Raise :class:`InvalidArgumentError` unless ``size_wh`` is two positive multiples of the stride."""
    check_input_multiple(size_wh, size_multiple(cfg), "the largest backbone stride")


def architecture_summary(cfg: ModelConfig, deploy: nn.Module) -> dict[str, Any]:
    """JSON-ready summary of the exported architecture for the metadata (for humans).

    Upstream's ``model.arch`` sections of the deployed parts (the training-only ``aux_head`` is left
    out), ``inferred`` (read from the checkpoint's tensors, no config) with, if so, the ``assumed``
    facts, a one-line ``summary`` and the deploy model's parameter count.
    """
    arch = cfg.architecture()
    arch.pop("aux_head")
    backbone = arch["backbone"]
    variant = backbone.get("model_size") or (f"x{backbone['width_mult']}" if "width_mult" in backbone else "")
    arch["summary"] = (
        f"{backbone['name']} {variant} + {arch['fpn']['name']}({arch['fpn']['out_channels']}) + {arch['head']['name']}"
    ).replace("  ", " ")
    arch["deploy_parameters"] = sum(p.numel() for p in deploy.parameters())
    return json.loads(json.dumps(arch))
