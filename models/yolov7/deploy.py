"""Training → deploy conversion as upstream's ``tools/reparameterization.ipynb`` + ``attempt_load``.

1. :func:`deploy_yaml`: the training YAML with its head replaced by ``Detect`` on the lead inputs
   (an ``IAuxDetect``'s auxiliary layers, the last ``nl`` layers before it, are dropped) — what
   upstream's ``cfg/deploy/*.yaml`` are.
2. :func:`to_deploy`: build that model, copy every same-name same-shape tensor, put the lead head convs
   into ``Detect`` with ImplicitA/ImplicitM folded in (``W' = W * im``, ``b' = (b + Σ_c W[:, c] ia[c]) * im``),
   then fold every Conv+BN and re-parameterize every RepConv (:meth:`~.model.YOLOv7.fuse`).

The result computes the training model's eval output up to float32 rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from nanodet_infer.errors import CheckpointError

from .heads import IDetect
from .model import YOLOv7

_TRAIN_HEADS = ("IDetect", "IAuxDetect")


def deploy_yaml(train: Mapping[str, Any]) -> dict[str, Any]:
    """The deploy YAML dict of a training YAML dict (a deploy YAML is returned unchanged)."""
    d = copy.deepcopy(dict(train))
    *layers, (sources, number, name, args) = d["head"]
    if name == "Detect":
        return d
    if name not in _TRAIN_HEADS:
        raise CheckpointError(f"the last layer is {name!r}, not Detect/IDetect/IAuxDetect; check the YAML")
    if name == "IAuxDetect":
        nl = len(sources) // 2
        first = len(d["backbone"]) + len(layers) - nl  # global index of the first aux layer
        if sorted(sources[nl:]) != list(range(first, first + nl)) or any(f >= first for f in sources[:nl]):
            raise CheckpointError(
                "IAuxDetect's auxiliary inputs are not the last layers before it, as in upstream's YAMLs; "
                "this exporter cannot derive the deploy model"
            )
        layers, sources = layers[: len(layers) - nl], sources[:nl]
    d["head"] = [*layers, [sources, number, "Detect", args]]
    return d


@torch.no_grad()
def to_deploy(model: YOLOv7) -> YOLOv7:
    """The fused deploy model (``Detect`` head, eval mode) of a training :class:`YOLOv7` with weights."""
    head = model.head
    deploy = YOLOv7(deploy_yaml(model.yaml))
    target = deploy.state_dict()
    source = model.state_dict()
    shared = {k: v for k, v in source.items() if k in target and v.shape == target[k].shape}
    prefix = f"model.{len(deploy.model) - 1}."
    if isinstance(head, IDetect):
        old = f"model.{len(model.model) - 1}."
        shared = {k: v for k, v in shared.items() if not k.startswith(old)}
        for i, (weight, bias) in enumerate(head.lead_convs_folded()):
            shared[f"{prefix}m.{i}.weight"], shared[f"{prefix}m.{i}.bias"] = weight, bias
        shared[f"{prefix}anchors"], shared[f"{prefix}anchor_grid"] = head.anchors, head.anchor_grid
    missing = sorted(set(target) - set(shared))
    if missing:
        raise CheckpointError(f"deploy conversion left {len(missing)} tensor(s) unset, e.g. {missing[0]}")
    deploy.load_state_dict(shared)
    return deploy.fuse().eval()
