"""Name -> class registries (as in upstream configs) and :class:`Component`, one configured part.

Each part of the network is chosen by its upstream ``name`` and built from its upstream options:
``build("backbone", Component("ShuffleNetV2", {...}))``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

from nanodet_infer.errors import InvalidArgumentError

from .ghost_pan import GhostPAN
from .ghostnet import GhostNet
from .nanodet_plus_head import NanoDetPlusHead
from .shufflenetv2 import ShuffleNetV2
from .simple_conv_head import SimpleConvHead

REGISTRIES: dict[str, dict[str, type[nn.Module]]] = {
    "backbone": {"ShuffleNetV2": ShuffleNetV2, "GhostNet": GhostNet},
    "fpn": {"GhostPAN": GhostPAN},
    "head": {"NanoDetPlusHead": NanoDetPlusHead},
    "aux_head": {"SimpleConvHead": SimpleConvHead},
}

# Upstream options that do not change the network (training-only, or unused by upstream's own code).
IGNORED_OPTIONS: dict[str, frozenset[str]] = {
    "backbone": frozenset({"pretrain", "kernal_size"}),
    "fpn": frozenset(),
    "head": frozenset({"loss", "assigner_cfg", "conv_cfg"}),
    "aux_head": frozenset({"loss", "assigner_cfg", "conv_cfg"}),
}

# Deprecated upstream option names -> their current name, per (kind, class name). Upstream's GhostNet
# still takes ``act`` and, when it is not None, uses it instead of ``activation`` (with a warning).
RENAMED_OPTIONS: dict[tuple[str, str], dict[str, str]] = {("backbone", "GhostNet"): {"act": "activation"}}


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Component:
    """One part of the network: the upstream class ``name`` and its complete, read-only options."""

    name: str
    options: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _freeze(self.options))

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __getitem__(self, key: str) -> Any:
        return self.options[key]

    def to_dict(self) -> dict[str, Any]:
        """Upstream-style ``{"name": ..., **options}`` with plain lists and dicts (JSON/YAML-ready)."""
        return {"name": self.name, **_thaw(self.options)}


def resolve(kind: str, raw: Any) -> Component:
    """Validate an upstream config section (``{"name": ..., **options}``) and fill in the defaults.

    Raises :class:`InvalidArgumentError` for an unknown name or option, or a missing required option.
    """
    registry = REGISTRIES[kind]
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise InvalidArgumentError(f"config section model.arch.{kind} must be a mapping with a 'name'; got {raw!r}")
    name = raw["name"]
    if name not in registry:
        raise InvalidArgumentError(
            f"unsupported {kind} {name!r}; this package builds {', '.join(registry)} "
            "(NanoDet-Plus: ShuffleNetV2/GhostNet + GhostPAN + NanoDetPlusHead + SimpleConvHead)"
        )
    options = _renamed(kind, name, {k: v for k, v in raw.items() if k != "name" and k not in IGNORED_OPTIONS[kind]})
    signature = inspect.signature(registry[name])
    try:
        bound = signature.bind(**options)
    except TypeError as exc:
        known = ", ".join(signature.parameters)
        raise InvalidArgumentError(f"{kind} {name}: {exc}; its options are: {known}") from exc
    bound.apply_defaults()
    return Component(name, dict(bound.arguments))


def _renamed(kind: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with deprecated names replaced as upstream does (a non-None old value wins)."""
    for old, new in RENAMED_OPTIONS.get((kind, name), {}).items():
        value = options.pop(old, None)
        if value is not None:
            options[new] = value
    return options


def build(kind: str, component: Component) -> nn.Module:
    """Instantiate ``component`` from the ``kind`` registry."""
    try:
        return REGISTRIES[kind][component.name](**_thaw(component.options))
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, InvalidArgumentError):
            raise
        raise InvalidArgumentError(f"cannot build {kind} {component.name} from {component.to_dict()}: {exc}") from exc
