"""The metadata schema: the contract between ``nanodet-export`` and the runtime.

An exported model carries every fact the runtime needs, so nobody copies constants by hand. The
exporter builds a :class:`ModelMetadata` and writes :meth:`ModelMetadata.to_properties` into the
ONNX ``metadata_props`` (and the OpenVINO IR ``rt_info`` under ``model_info``); the runtime reads
the same string map back with :meth:`ModelMetadata.from_properties`. This module is the only place
the schema is defined, and it imports nothing but the standard library.

Keys (all values are strings; JSON where structured). Every key is prefixed with ``nanodet.``:

==========================  ====================  ==============================================
key                         example               meaning
==========================  ====================  ==============================================
``schema_version``          ``1``                 version of this schema (integer)
``model_family``            ``nanodet-plus``      detector family; only ``nanodet-plus`` runs
``producer``                ``nanodet-export 0.1``  tool and version that wrote the file
``class_names``             ``["person", ...]``   JSON list, length ``num_classes``
``num_classes``             ``80``                number of classes C
``reg_max``                 ``7``                 box distribution has ``reg_max + 1`` bins per side
``strides``                 ``[8, 16, 32, 64]``   JSON list, one per pyramid level, ascending
``input_size``              ``[320, 320]``        JSON ``[W, H]`` the model was trained/exported at
``dynamic_batch``           ``false``             batch axis is symbolic
``dynamic_hw``              ``false``             H and W are symbolic (multiples of max stride)
``mean``                    ``[103.53, ...]``     JSON, per channel in ``channel_order``, 0-255 scale
``std``                     ``[57.375, ...]``     JSON, per channel in ``channel_order``, 0-255 scale
``channel_order``           ``BGR``               channel order of the network input
``keep_ratio``              ``false``             training resize: stretch (false) or keep ratio
``prior_offset``            ``0.0``               prior centre = ``(index + offset) * stride``
``input_name``              ``images``            name of the single input, NCHW float32
``scores_output``           ``scores``            output ``[B, N, C]``, float32
``boxes_output``            ``boxes``             output ``[B, N, 4 * (reg_max + 1)]``, float32
``scores_activation``       ``sigmoid``           ``sigmoid``: scores are probabilities already
``box_side_order``          ``ltrb``              the 4 bin groups: left, top, right, bottom
``source_sha256``           ``ab12...``           SHA-256 of the source checkpoint file
``architecture``            ``{...}``             JSON summary (backbone, sizes) for humans
``precision``               ``int8``              weights as stored: ``f32``, ``f16`` or ``int8`` (optional)
``calibration``             ``{"count": 300, ...}``  JSON, INT8 only: how it was calibrated (optional)
==========================  ====================  ==============================================

``precision`` and ``calibration`` are optional (files written before them load as ``f32`` / ``{}``).
``calibration`` holds ``count`` (images), ``sha256`` (digest of the image files in order), ``method``
(quantizer and its settings) and ``float_nodes`` (layers kept in float).

Output layout: N priors ordered level by level (stride 8 first), row-major (y outer, x inner)
within a level, with ``ceil(H / stride) * ceil(W / stride)`` priors per level.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import MetadataError

SCHEMA_VERSION = 1
KEY_PREFIX = "nanodet."
MODEL_FAMILY = "nanodet-plus"
OV_RT_INFO_SECTION = "model_info"

# Sanity bounds: a larger side would make the runtime allocate a huge canvas; a smaller std would
# overflow float32 when normalising 0..255 pixels.
MAX_INPUT_SIDE = 8192
MIN_ABS_STD = 1e-6

PRECISIONS = ("f32", "f16", "int8")
"""Values of the ``precision`` key: the number format of the stored weights."""

UPSTREAM_MEAN_BGR = (103.53, 116.28, 123.675)
UPSTREAM_STD_BGR = (57.375, 57.12, 58.395)


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the runtime needs to run a NanoDet-Plus model. See the module docstring."""

    num_classes: int
    class_names: tuple[str, ...]
    reg_max: int = 7
    strides: tuple[int, ...] = (8, 16, 32, 64)
    input_size: tuple[int, int] = (320, 320)  # (W, H)
    dynamic_batch: bool = False
    dynamic_hw: bool = False
    mean: tuple[float, float, float] = UPSTREAM_MEAN_BGR
    std: tuple[float, float, float] = UPSTREAM_STD_BGR
    channel_order: str = "BGR"
    keep_ratio: bool = False
    prior_offset: float = 0.0
    input_name: str = "images"
    scores_output: str = "scores"
    boxes_output: str = "boxes"
    scores_activation: str = "sigmoid"
    box_side_order: str = "ltrb"
    model_family: str = MODEL_FAMILY
    producer: str = ""
    source_sha256: str = ""
    architecture: Mapping[str, Any] = field(default_factory=dict)
    precision: str = "f32"
    calibration: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`MetadataError` naming the first inconsistent field."""
        if self.schema_version != SCHEMA_VERSION:
            raise MetadataError(
                f"metadata schema_version {self.schema_version} is not supported (this runtime reads "
                f"version {SCHEMA_VERSION}); re-export the model with a matching nanodet-export"
            )
        if self.model_family != MODEL_FAMILY:
            raise MetadataError(
                f"model_family is {self.model_family!r}; only {MODEL_FAMILY!r} models are supported"
            )
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise MetadataError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if len(self.class_names) != self.num_classes:
            raise MetadataError(
                f"{len(self.class_names)} class names for num_classes={self.num_classes}; "
                "give exactly one name per class"
            )
        if not isinstance(self.reg_max, int) or self.reg_max < 1:
            raise MetadataError(f"reg_max must be an integer >= 1, got {self.reg_max!r}")
        if not self.strides or any(not isinstance(s, int) or s < 1 for s in self.strides):
            raise MetadataError(f"strides must be positive integers, got {list(self.strides)!r}")
        if list(self.strides) != sorted(set(self.strides)):
            raise MetadataError(f"strides must be strictly ascending, got {list(self.strides)!r}")
        if len(self.input_size) != 2 or any(
            not isinstance(v, int) or not 1 <= v <= MAX_INPUT_SIDE for v in self.input_size
        ):
            raise MetadataError(
                f"input_size must be [W, H] integers in 1..{MAX_INPUT_SIDE}, got {list(self.input_size)!r}"
            )
        values = (*self.mean, *self.std)
        if len(self.mean) != 3 or len(self.std) != 3 or not all(math.isfinite(v) for v in values):
            raise MetadataError(f"mean/std must be 3 finite numbers each, got {self.mean!r} / {self.std!r}")
        if any(abs(s) < MIN_ABS_STD for s in self.std):
            raise MetadataError(f"std entries must be at least {MIN_ABS_STD} in magnitude, got {self.std!r}")
        if self.channel_order not in ("BGR", "RGB"):
            raise MetadataError(f"channel_order must be 'BGR' or 'RGB', got {self.channel_order!r}")
        if self.scores_activation not in ("sigmoid", "none"):
            raise MetadataError(
                f"scores_activation must be 'sigmoid' or 'none', got {self.scores_activation!r}"
            )
        if self.precision not in PRECISIONS:
            raise MetadataError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.box_side_order != "ltrb":
            raise MetadataError(f"box_side_order must be 'ltrb', got {self.box_side_order!r}")

    # ------------------------------------------------------------------ derived facts
    @property
    def num_box_channels(self) -> int:
        """Channels of the box output: ``4 * (reg_max + 1)``."""
        return 4 * (self.reg_max + 1)

    # ------------------------------------------------------------------ (de)serialisation
    def to_properties(self) -> dict[str, str]:
        """The string map written into ONNX ``metadata_props`` / OpenVINO ``rt_info``."""
        out: dict[str, str] = {}
        for name, value in asdict(self).items():
            if isinstance(value, str):
                text = value
            else:
                text = json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False)
            out[KEY_PREFIX + name] = text
        return out

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> ModelMetadata:
        """Parse the string map written by :meth:`to_properties`.

        Raises :class:`MetadataError` when the map carries no NanoDet metadata or a value is
        malformed. Unknown ``nanodet.*`` keys are ignored so newer exporters stay readable.
        """
        ours = {k[len(KEY_PREFIX):]: v for k, v in props.items() if k.startswith(KEY_PREFIX)}
        if not ours:
            raise MetadataError(
                "the model carries no nanodet metadata; export it with nanodet-export, or pass "
                "num_classes/reg_max/strides/input_size to Detector for a foreign model"
            )
        kwargs: dict[str, Any] = {}
        for name, kind in _FIELD_KINDS.items():
            if name not in ours:
                if name in _REQUIRED:
                    raise MetadataError(f"metadata key {KEY_PREFIX + name!r} is missing; re-export the model")
                continue
            kwargs[name] = _parse(name, ours[name], kind)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> ModelMetadata:
        """A copy with ``changes`` applied (validated)."""
        data = asdict(self)
        data.update(changes)
        return ModelMetadata(**{k: _freeze(v) for k, v in data.items()})


_REQUIRED = ("schema_version", "model_family", "num_classes", "class_names", "reg_max", "strides", "input_size")
_FIELD_KINDS: dict[str, str] = {
    "schema_version": "int",
    "model_family": "str",
    "producer": "str",
    "num_classes": "int",
    "class_names": "str_list",
    "reg_max": "int",
    "strides": "int_list",
    "input_size": "int_list",
    "dynamic_batch": "bool",
    "dynamic_hw": "bool",
    "mean": "float_list",
    "std": "float_list",
    "channel_order": "str",
    "keep_ratio": "bool",
    "prior_offset": "float",
    "input_name": "str",
    "scores_output": "str",
    "boxes_output": "str",
    "scores_activation": "str",
    "box_side_order": "str",
    "source_sha256": "str",
    "architecture": "dict",
    "precision": "str",
    "calibration": "dict",
}


def _parse(name: str, text: str, kind: str) -> Any:
    if kind == "str":
        return text
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise MetadataError(f"metadata key {KEY_PREFIX + name!r} is not valid JSON: {text!r}") from exc
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "dict": lambda v: isinstance(v, dict),
        "str_list": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "int_list": lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
        "float_list": lambda v: isinstance(v, list) and all(isinstance(x, (int, float)) for x in v),
    }[kind](value)
    if not ok:
        raise MetadataError(f"metadata key {KEY_PREFIX + name!r} should be {kind.replace('_', ' ')}, got {text!r}")
    if kind == "float":
        return float(value)
    if kind == "float_list":
        return tuple(float(x) for x in value)
    return _freeze(value)


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
