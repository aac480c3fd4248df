"""``ModelConfig``: the architecture and data facts of one NanoDet-Plus model.

Sources: an upstream training YAML (:func:`load_config`), a named preset stored as upstream YAML in
``configs/`` (:func:`preset`), or the checkpoint tensors themselves (:func:`~.architecture.config_from_state_dict`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nanodet_infer.errors import InvalidArgumentError
from nanodet_infer.families.nanodet_plus.decode import num_priors
from nanodet_infer.families.nanodet_plus.section import UPSTREAM_MEAN_BGR, UPSTREAM_STD_BGR

from .layers import check_activation
from .registry import Component, resolve

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PRESETS: tuple[str, ...] = (
    "nanodet-plus-m_320",
    "nanodet-plus-m_416",
    "nanodet-plus-m-1.5x_320",
    "nanodet-plus-m-1.5x_416",
)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build, feed and describe one NanoDet-Plus model.

    ``backbone``/``fpn``/``head``/``aux_head`` are the resolved upstream ``model.arch`` sections (every
    option present, defaults filled in). ``input_size`` is ``(W, H)`` exactly as upstream's
    ``input_size: [w, h]``; ``mean``/``std`` are per BGR channel on the 0-255 scale; ``keep_ratio`` is the
    validation resize mode (upstream ``data.val.keep_ratio``). ``inferred``: the architecture was read
    from checkpoint tensors rather than a config; ``assumed`` then lists the facts that are not stored in
    a checkpoint and were assumed (e.g. ``"activation LeakyReLU"``), for logs and metadata. Both record
    provenance only and take no part in equality.
    """

    backbone: Component
    fpn: Component
    head: Component
    aux_head: Component
    input_size: tuple[int, int] = (320, 320)
    keep_ratio: bool = False
    mean: tuple[float, float, float] = UPSTREAM_MEAN_BGR
    std: tuple[float, float, float] = UPSTREAM_STD_BGR
    class_names: tuple[str, ...] = ()
    inferred: bool = field(default=False, compare=False)
    assumed: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        size = _int_list(self.input_size, "input_size", length=2)
        object.__setattr__(self, "input_size", tuple(size))
        object.__setattr__(self, "mean", _normalisation(self.mean, "mean"))
        object.__setattr__(self, "std", _normalisation(self.std, "std"))
        if 0.0 in self.std:
            raise InvalidArgumentError(f"normalize stds must be non-zero, got {list(self.std)}")
        if not isinstance(self.keep_ratio, bool):
            raise InvalidArgumentError(f"keep_ratio must be true or false, got {self.keep_ratio!r}")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "assumed", tuple(self.assumed))
        self._validate()

    def _validate(self) -> None:
        for key in ("num_classes", "reg_max"):
            _positive_int(self.head[key], f"head.{key}")
        for part in (self.backbone, self.fpn, self.head, self.aux_head):
            check_activation(part.options.get("activation"))
        if len(self.class_names) != self.num_classes:
            raise InvalidArgumentError(
                f"{len(self.class_names)} class_names but head.num_classes is {self.num_classes}; "
                "give exactly one name per class"
            )
        aux = self.aux_head
        if aux["num_classes"] != self.num_classes or aux["reg_max"] != self.reg_max:
            raise InvalidArgumentError(
                f"aux_head (num_classes {aux['num_classes']}, reg_max {aux['reg_max']}) disagrees with head "
                f"(num_classes {self.num_classes}, reg_max {self.reg_max}); make them equal in the config"
            )
        self._validate_levels()

    def _validate_levels(self) -> None:
        """fpn inputs and extra levels, and head/aux_head strides: types, order and level count."""
        in_channels = _int_list(self.fpn["in_channels"], "fpn.in_channels")
        extra = self.fpn["num_extra_level"]
        if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
            raise InvalidArgumentError(f"fpn.num_extra_level must be a non-negative integer, got {extra!r}")
        levels = len(in_channels) + extra
        for key, part in (("head", self.head), ("aux_head", self.aux_head)):
            strides = _int_list(part["strides"], f"{key}.strides")
            if strides != sorted(set(strides)):
                raise InvalidArgumentError(f"{key}.strides must be strictly ascending, got {strides!r}")
            if len(strides) != levels:
                raise InvalidArgumentError(
                    f"{key}.strides {strides} has {len(strides)} entries but the fpn outputs {levels} "
                    f"levels (in_channels + num_extra_level); fix {key}.strides"
                )

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return int(self.head["num_classes"])

    @property
    def reg_max(self) -> int:
        """Each box side is a distribution over ``reg_max + 1`` bins."""
        return int(self.head["reg_max"])

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride of each output level, ascending (NanoDet-Plus: 8, 16, 32, 64)."""
        return tuple(int(s) for s in self.head["strides"])

    def num_priors(self, width: int | None = None, height: int | None = None) -> int:
        """Number of output rows N for a ``width`` x ``height`` input (default: ``input_size``)."""
        return num_priors((width or self.input_size[0], height or self.input_size[1]), self.strides)

    def architecture(self) -> dict[str, Any]:
        """JSON-ready upstream-style ``model.arch`` summary (for metadata and logs).

        ``inferred`` tells whether it was read from checkpoint tensors; if so, ``assumed`` lists what
        was assumed because a checkpoint does not store it.
        """
        arch: dict[str, Any] = {
            "name": "NanoDetPlus",
            "backbone": self.backbone.to_dict(),
            "fpn": self.fpn.to_dict(),
            "head": self.head.to_dict(),
            "aux_head": self.aux_head.to_dict(),
            "inferred": self.inferred,
        }
        if self.inferred:
            arch["assumed"] = list(self.assumed)
        return arch


def _positive_int(value: Any, name: str) -> int:
    """``value`` if it is an int >= 1 (not a bool), else :class:`InvalidArgumentError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    return value


def _int_list(value: Any, name: str, *, length: int | None = None) -> list[int]:
    """``value`` as a list of positive ints (of ``length`` entries when given), else InvalidArgumentError."""
    shape = f"a list of {length}" if length else "a non-empty list of"
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) or not value:
        raise InvalidArgumentError(f"{name} must be {shape} positive integers, got {value!r}")
    if length is not None and len(value) != length:
        raise InvalidArgumentError(f"{name} must be {shape} positive integers, got {list(value)!r}")
    return [_positive_int(v, name) for v in value]


def _normalisation(value: Any, name: str) -> tuple[float, float, float]:
    """Three finite numbers (one per BGR channel), else :class:`InvalidArgumentError`."""
    ok = isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 3
    if not ok or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise InvalidArgumentError(f"normalize {name} must be 3 numbers (B, G, R), got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """COCO's 80 names (as upstream configs spell them) for 80 classes, else ``class0 .. class{C-1}``."""
    if num_classes == 80:
        return preset(PRESETS[0]).class_names
    return tuple(f"class{i}" for i in range(num_classes))


def config_from_dict(data: Any, source: str = "config") -> ModelConfig:
    """Build a :class:`ModelConfig` from a parsed upstream YAML document (see :func:`load_config`)."""
    arch = _section(data, ("model", "arch"), source)
    if arch.get("name", "NanoDetPlus") != "NanoDetPlus":
        raise InvalidArgumentError(
            f"{source}: model.arch.name is {arch.get('name')!r}; only NanoDetPlus models are supported"
        )
    parts = {}
    for kind in ("backbone", "fpn", "head", "aux_head"):
        if kind not in arch:
            raise InvalidArgumentError(f"{source}: model.arch.{kind} is missing; pass the upstream training config")
        parts[kind] = resolve(kind, arch[kind])
    data_cfg = _mapping(data.get("data"), "data", source)
    val = _mapping(data_cfg.get("val") or data_cfg.get("train"), "data.val", source)
    pipeline = _mapping(val.get("pipeline"), "data.val.pipeline", source)
    normalize = pipeline.get("normalize", [UPSTREAM_MEAN_BGR, UPSTREAM_STD_BGR])
    if isinstance(normalize, str) or not (isinstance(normalize, Sequence) and len(normalize) == 2):
        raise InvalidArgumentError(f"{source}: data.val.pipeline.normalize must be [[mean x3], [std x3]]")
    num_classes = parts["head"]["num_classes"]
    names = data.get("class_names")
    if names is None:
        names = default_class_names(num_classes) if isinstance(num_classes, int) else ()
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise InvalidArgumentError(f"{source}: class_names must be a list of names")
    return ModelConfig(
        **parts,
        input_size=val.get("input_size", (320, 320)),
        keep_ratio=val.get("keep_ratio", True),
        mean=normalize[0],
        std=normalize[1],
        class_names=tuple(str(n) for n in names),
    )


def load_config(path: str | Path) -> ModelConfig:
    """Read an upstream NanoDet training YAML (``model.arch``, ``data.val``, ``class_names``).

    Reads ``data.val.input_size`` ([W, H]), ``data.val.keep_ratio`` (upstream default True) and
    ``data.val.pipeline.normalize`` (upstream values when absent); training-only options (``loss``,
    ``pretrain``, ...) are ignored. Missing ``class_names`` default to :func:`default_class_names`.
    Raises :class:`InvalidArgumentError` for a missing/unreadable file, invalid YAML or an unsupported or
    inconsistent architecture.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read config {path}: {exc}; pass an upstream NanoDet .yml") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InvalidArgumentError(f"config {path} is not valid YAML{line}; pass an upstream NanoDet .yml") from exc
    return config_from_dict(data, str(path))


@functools.cache
def preset(name: str) -> ModelConfig:
    """The named upstream configuration (one of :data:`PRESETS`), COCO's 80 classes."""
    if name not in PRESETS:
        raise InvalidArgumentError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return load_config(CONFIG_DIR / f"{name}.yml")


def _mapping(node: Any, where: str, source: str) -> Mapping[str, Any]:
    """``node`` if it is a mapping, ``{}`` if absent (None), else :class:`InvalidArgumentError`."""
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise InvalidArgumentError(f"{source}: {where} must be a mapping, got {type(node).__name__}")
    return node


def _section(data: Any, keys: tuple[str, ...], source: str) -> Mapping[str, Any]:
    node = data
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or not isinstance(node.get(key), Mapping):
            where = ".".join(keys[: depth + 1])
            raise InvalidArgumentError(f"{source}: {where} is missing; this is not an upstream NanoDet config")
        node = node[key]
    return node
