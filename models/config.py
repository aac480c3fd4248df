"""``ModelConfig``: the architecture and data facts of one NanoDet-Plus model.

Sources: an upstream training YAML (:func:`load_config`), a named preset stored as upstream YAML in
``configs/`` (:func:`preset`), or the checkpoint tensors themselves (:func:`~.infer.config_from_state_dict`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nanodet_infer.errors import InvalidArgumentError
from nanodet_infer.metadata import UPSTREAM_MEAN_BGR, UPSTREAM_STD_BGR

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
    validation resize mode (upstream ``data.val.keep_ratio``).
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        self._validate()

    def _validate(self) -> None:
        for key in ("num_classes", "reg_max"):
            value = self.head[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"head.{key} must be a positive integer, got {value!r}")
        size = self.input_size
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
            raise InvalidArgumentError(f"input_size must be [W, H] positive integers, got {list(size)!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or 0.0 in self.std:
            raise InvalidArgumentError(f"normalize must be [[3 means], [3 non-zero stds]], got {self.mean}/{self.std}")
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
        levels = len(self.fpn["in_channels"]) + self.fpn["num_extra_level"]
        if len(self.strides) != levels:
            raise InvalidArgumentError(
                f"head.strides {list(self.strides)} has {len(self.strides)} entries but the fpn outputs {levels} "
                "levels (in_channels + num_extra_level); fix head.strides"
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
        w, h = (width or self.input_size[0]), (height or self.input_size[1])
        return sum(-(-h // s) * -(-w // s) for s in self.strides)

    def architecture(self) -> dict[str, Any]:
        """JSON-ready upstream-style ``model.arch`` summary (for metadata and logs)."""
        return {
            "name": "NanoDetPlus",
            "backbone": self.backbone.to_dict(),
            "fpn": self.fpn.to_dict(),
            "head": self.head.to_dict(),
            "aux_head": self.aux_head.to_dict(),
        }


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
    data_cfg = data.get("data") or {}
    val = data_cfg.get("val") or data_cfg.get("train") or {}
    if not isinstance(val, Mapping):
        raise InvalidArgumentError(f"{source}: data.val must be a mapping")
    normalize = (val.get("pipeline") or {}).get("normalize", [UPSTREAM_MEAN_BGR, UPSTREAM_STD_BGR])
    if not (isinstance(normalize, Sequence) and len(normalize) == 2):
        raise InvalidArgumentError(f"{source}: data.val.pipeline.normalize must be [[mean x3], [std x3]]")
    size = val.get("input_size", (320, 320))
    if isinstance(size, str) or not isinstance(size, Sequence):
        raise InvalidArgumentError(f"{source}: data.val.input_size must be [w, h], got {size!r}")
    num_classes = parts["head"]["num_classes"]
    names = data.get("class_names")
    if names is None:
        names = default_class_names(num_classes) if isinstance(num_classes, int) else ()
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise InvalidArgumentError(f"{source}: class_names must be a list of names")
    return ModelConfig(
        **parts,
        input_size=tuple(size),
        keep_ratio=bool(val.get("keep_ratio", True)),
        mean=tuple(normalize[0]),
        std=tuple(normalize[1]),
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


def _section(data: Any, keys: tuple[str, ...], source: str) -> Mapping[str, Any]:
    node = data
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or not isinstance(node.get(key), Mapping):
            where = ".".join(keys[: depth + 1])
            raise InvalidArgumentError(f"{source}: {where} is missing; this is not an upstream NanoDet config")
        node = node[key]
    return node
