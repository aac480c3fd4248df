"""The metadata schema: the contract between the exporters and the runtime.

An exported model carries every fact the runtime needs, so nobody copies constants by hand. The
exporter builds a :class:`ModelMetadata` and writes :meth:`ModelMetadata.to_properties` into the
ONNX ``metadata_props`` (and the OpenVINO IR ``rt_info`` under ``model_info``); the runtime reads
the same string map back with :meth:`ModelMetadata.from_properties`. This module defines the common
keys and the (de)serialisation; each detector family defines its own keys in its metadata section
(``nanodet_infer/families/<family>/section.py``, a :class:`MetadataSection`). It imports nothing
but the standard library (and a family's ``section`` module when that family is read).

All keys are flat strings prefixed with ``nanodet.``; values are strings, JSON where structured.
Common keys (every family):

==========================  ====================  ==============================================
key                         example               meaning
==========================  ====================  ==============================================
``schema_version``          ``2``                 version of this schema (integer; 1 and 2 are read)
``model_family``            ``nanodet-plus``      detector family: selects the family section
``producer``                ``nanodet-export 0.1``  tool and version that wrote the file
``num_classes``             ``80``                number of classes C, ``1..MAX_NUM_CLASSES``
``class_names``             ``["person", ...]``   JSON list, length ``num_classes``
``input_size``              ``[320, 320]``        JSON ``[W, H]``, each in ``1..MAX_INPUT_SIDE``
``dynamic_batch``           ``false``             batch axis is symbolic
``dynamic_hw``              ``false``             H and W are symbolic
``mean``                    ``[103.53, ...]``     JSON, per channel in ``channel_order``, 0-255 scale
``std``                     ``[57.375, ...]``     JSON, per channel in ``channel_order``, 0-255 scale
``channel_order``           ``BGR``               channel order of the network input (``BGR``/``RGB``)
``input_name``              ``images``            name of the single input, NCHW float32
``source_sha256``           ``ab12...``           SHA-256 of the source checkpoint file
``architecture``            ``{...}``             JSON summary (backbone, sizes) for humans
``precision``               ``int8``              stored number format: ``f32``, ``f16`` or ``int8`` (optional)
``calibration``             ``{"count": 300, ...}``  JSON, INT8 only: how it was calibrated (optional)
==========================  ====================  ==============================================

``precision`` defaults to ``f32`` and ``calibration`` to ``{}`` (files written before them load unchanged).
``calibration`` holds ``count`` (images), ``sha256`` (of the image files, in use order), ``method`` (the
quantizer and its settings) and ``float_layers`` (convolutions kept in float).

Optional keys default to the family's :attr:`MetadataSection.COMMON_DEFAULTS` (e.g. NanoDet-Plus's BGR
mean/std). Schema version 1 files (NanoDet-Plus only, written before families existed) have the same keys
and are read unchanged. Unknown ``nanodet.*`` keys are ignored so newer exporters stay readable.

Untrusted sizes are bounded: a value longer than :data:`MAX_VALUE_CHARS`, JSON nested deeper than
:data:`MAX_JSON_DEPTH`, an integer beyond ``±2**63`` (or beyond Python's int-string limit), a NaN or
infinite number, and every number outside its documented range raise :class:`MetadataError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import MetadataError
from .families import DEFAULT_FAMILY, check_family_name, get_section
from .metadata_section import (  # noqa: F401 (re-exported: the section base and bounds are part of this API)
    MAX_ABS_NORMALISATION,
    MAX_INPUT_SIDE,
    MAX_JSON_DEPTH,
    MAX_LEVELS,
    MAX_NUM_CLASSES,
    MAX_VALUE_CHARS,
    MIN_ABS_STD,
    PRECISIONS,
    MetadataSection,
    _is_int,
    _thaw,
    check_int,
    check_int_list,
    check_number,
    check_strides,
)

SCHEMA_VERSION = 2
"""The version this runtime writes."""
READABLE_SCHEMA_VERSIONS = (1, 2)
"""The versions this runtime reads."""
KEY_PREFIX = "nanodet."
OV_RT_INFO_SECTION = "model_info"

_MAX_INT = 2**63


@dataclass(frozen=True, init=False)
class ModelMetadata:
    """Everything the runtime needs to run a model: the common keys plus the family's ``section``.

    Build it with keywords: ``ModelMetadata(num_classes=3, class_names=(...), model_family="nanodet-plus",
    reg_max=7, ...)``; common keys are fields here, the others go to the family's section. A family key
    reads as an attribute too (``meta.reg_max`` is ``meta.section.reg_max``). See the module docstring.
    """

    num_classes: int
    class_names: tuple[str, ...]
    section: MetadataSection
    input_size: tuple[int, int]  # (W, H)
    dynamic_batch: bool
    dynamic_hw: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str
    input_name: str
    model_family: str
    producer: str
    source_sha256: str
    architecture: Mapping[str, Any] = field(default_factory=dict)
    precision: str = "f32"
    calibration: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __init__(
        self,
        num_classes: int,
        class_names: tuple[str, ...],
        *,
        model_family: str = DEFAULT_FAMILY,
        section: MetadataSection | None = None,
        **keys: Any,
    ) -> None:
        section_type = get_section(check_family_name(model_family))
        own = {f.name for f in fields(section_type)}
        unknown = sorted(set(keys) - own - set(_COMMON_KINDS))
        if unknown:
            raise MetadataError(f"unknown metadata field(s) {unknown} for model_family {model_family!r}")
        section_keys = {k: _freeze(v) for k, v in keys.items() if k in own}
        base = asdict(section) if isinstance(section, section_type) else {}
        values = {
            **_COMMON_DEFAULTS,
            **section_type.COMMON_DEFAULTS,
            **{k: _freeze(v) for k, v in keys.items() if k not in own},
            "num_classes": num_classes,
            "class_names": _freeze(class_names),
            "model_family": model_family,
            "section": section_type(**{k: _freeze(v) for k, v in {**base, **section_keys}.items()}),
        }
        for name in ("mean", "std"):
            values[name] = _floats(values[name])
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self.validate()

    def __getattr__(self, name: str) -> Any:
        """A family key (or property) of :attr:`section`, e.g. ``meta.reg_max``."""
        section = self.__dict__.get("section")
        if name.startswith("_") or section is None or not hasattr(section, name):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(section, name)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`MetadataError` naming the first inconsistent common field (sections check their own)."""
        if self.schema_version not in READABLE_SCHEMA_VERSIONS:
            raise MetadataError(
                f"metadata schema_version {self.schema_version} is not supported (this runtime reads versions "
                f"{list(READABLE_SCHEMA_VERSIONS)}); update nanodet-infer or re-export the model"
            )
        if self.schema_version == 1 and self.model_family != DEFAULT_FAMILY:
            raise MetadataError(f"schema_version 1 only describes {DEFAULT_FAMILY!r} models; re-export the model")
        check_int("num_classes", self.num_classes, 1, MAX_NUM_CLASSES)
        if not isinstance(self.class_names, tuple) or not all(isinstance(n, str) for n in self.class_names):
            raise MetadataError(f"class_names must be a list of strings, got {type(self.class_names).__name__}")
        if len(self.class_names) != self.num_classes:
            raise MetadataError(
                f"{len(self.class_names)} class names for num_classes={self.num_classes}; "
                "give exactly one name per class"
            )
        check_int_list("input_size", self.input_size, 1, MAX_INPUT_SIDE, length=2, what="[W, H] integers")
        triples = all(isinstance(v, tuple) and len(v) == 3 for v in (self.mean, self.std))
        values = (*self.mean, *self.std) if triples else ()
        if not triples or not all(_KIND_CHECKS["float"](v) and math.isfinite(v) for v in values):
            raise MetadataError(f"mean/std must be 3 finite numbers each, got {self.mean!r} / {self.std!r}")
        if any(abs(v) > MAX_ABS_NORMALISATION for v in values):
            raise MetadataError(f"mean/std entries must be at most {MAX_ABS_NORMALISATION:g} in magnitude")
        if any(abs(s) < MIN_ABS_STD for s in self.std):
            raise MetadataError(f"std entries must be at least {MIN_ABS_STD} in magnitude, got {self.std!r}")
        if self.channel_order not in ("BGR", "RGB"):
            raise MetadataError(f"channel_order must be 'BGR' or 'RGB', got {self.channel_order!r}")
        if not isinstance(self.architecture, Mapping) or _depth(self.architecture) > MAX_JSON_DEPTH:
            raise MetadataError(f"architecture must be a JSON object nested at most {MAX_JSON_DEPTH} deep")
        if self.precision not in PRECISIONS:
            raise MetadataError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.calibration, Mapping) or _depth(self.calibration) > MAX_JSON_DEPTH:
            raise MetadataError(f"calibration must be a JSON object nested at most {MAX_JSON_DEPTH} deep")

    # ------------------------------------------------------------------ (de)serialisation
    def to_properties(self) -> dict[str, str]:
        """The string map written into ONNX ``metadata_props`` / OpenVINO ``rt_info``.

        The optional ``precision`` / ``calibration`` keys are left out at their defaults (``f32`` / ``{}``), so
        a float model's map is what it was before they existed; so are a section's ``OMITTED_AT_DEFAULT`` keys.
        """
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "section"}
        for name in _OMITTED_AT_DEFAULT:
            if values[name] == _COMMON_DEFAULTS[name]:
                del values[name]
        section = asdict(self.section)
        for name in self.section.OMITTED_AT_DEFAULT:
            if section[name] == next(f.default for f in fields(self.section) if f.name == name):
                del section[name]
        values.update(section)
        out: dict[str, str] = {}
        for name, value in values.items():
            out[KEY_PREFIX + name] = value if isinstance(value, str) else json.dumps(_thaw(value), ensure_ascii=False)
        return out

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> ModelMetadata:
        """Parse the string map written by :meth:`to_properties` (schema version 1 or 2).

        Raises :class:`MetadataError` when the map carries no metadata, a required key is missing, a value
        is malformed or out of range, or ``model_family`` is not a supported family.
        """
        if not isinstance(props, Mapping):
            raise MetadataError(f"metadata must be a string map, got {type(props).__name__}")
        ours = {k[len(KEY_PREFIX) :]: v for k, v in props.items() if isinstance(k, str) and k.startswith(KEY_PREFIX)}
        if not ours:
            raise MetadataError(
                "the model carries no nanodet metadata; export it with nanodet-export, or pass the model facts "
                "(e.g. num_classes/reg_max/strides/input_size) to Detector for a foreign model"
            )
        common = _parse_keys(ours, _COMMON_KINDS, _COMMON_REQUIRED)
        section_type = get_section(check_family_name(common["model_family"]))
        return cls(**common, **_parse_keys(ours, section_type.KINDS, section_type.REQUIRED))

    def replace(self, **changes: Any) -> ModelMetadata:
        """A copy with ``changes`` (common or family keys) applied and validated."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return ModelMetadata(**values | changes)


_COMMON_DEFAULTS: dict[str, Any] = {
    "dynamic_batch": False,
    "dynamic_hw": False,
    "producer": "",
    "source_sha256": "",
    "architecture": {},
    "precision": "f32",
    "calibration": {},
    "schema_version": SCHEMA_VERSION,
}
_OMITTED_AT_DEFAULT = ("precision", "calibration")
_COMMON_REQUIRED = ("schema_version", "model_family", "num_classes", "class_names", "input_size")
_COMMON_KINDS: dict[str, str] = {
    "schema_version": "int",
    "model_family": "str",
    "producer": "str",
    "num_classes": "int",
    "class_names": "str_list",
    "input_size": "int_list",
    "dynamic_batch": "bool",
    "dynamic_hw": "bool",
    "mean": "float_list",
    "std": "float_list",
    "channel_order": "str",
    "input_name": "str",
    "source_sha256": "str",
    "architecture": "dict",
    "precision": "str",
    "calibration": "dict",
}


def _parse_keys(ours: Mapping[str, str], kinds: Mapping[str, str], required: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, kind in kinds.items():
        if name in ours:
            values[name] = _parse(name, ours[name], kind)
        elif name in required:
            raise MetadataError(f"metadata key {KEY_PREFIX + name!r} is missing; re-export the model")
    return values


_KIND_CHECKS = {
    "int": _is_int,
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "dict": lambda v: isinstance(v, dict),
    "str_list": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "int_list": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
    "float_list": lambda v: isinstance(v, list) and all(_KIND_CHECKS["float"](x) for x in v),
    "int_lists": lambda v: isinstance(v, list) and all(_KIND_CHECKS["int_list"](x) for x in v),
    "float_lists": lambda v: isinstance(v, list) and all(_KIND_CHECKS["float_list"](x) for x in v),
}


def _parse(name: str, text: str, kind: str) -> Any:
    key = KEY_PREFIX + name
    if not isinstance(text, str) or len(text) > MAX_VALUE_CHARS:
        raise MetadataError(f"metadata key {key!r} is not a string of at most {MAX_VALUE_CHARS} characters")
    if kind == "str":
        return text
    try:
        value = json.loads(text)
    except RecursionError:
        raise MetadataError(f"metadata key {key!r} is nested too deeply (at most {MAX_JSON_DEPTH})") from None
    except (ValueError, TypeError):  # JSONDecodeError, or an integer beyond Python's int-string limit
        raise MetadataError(f"metadata key {key!r} is not valid JSON: {_clip(text)}") from None
    if not _KIND_CHECKS[kind](value):
        raise MetadataError(f"metadata key {key!r} should be {kind.replace('_', ' ')}, got {_clip(text)}")
    if _depth(value) > MAX_JSON_DEPTH:
        raise MetadataError(f"metadata key {key!r} is nested too deeply (at most {MAX_JSON_DEPTH})")
    for number in _numbers(value):
        if isinstance(number, float) and not math.isfinite(number):
            raise MetadataError(f"metadata key {key!r} must hold finite numbers, got {_clip(text)}")
        if isinstance(number, int) and not -_MAX_INT < number < _MAX_INT:
            raise MetadataError(f"metadata key {key!r} holds an integer out of range (beyond ±2**63)")
    if kind == "float":
        return float(value)
    if kind == "float_list":
        return tuple(float(x) for x in value)
    if kind == "float_lists":
        return tuple(tuple(float(x) for x in row) for row in value)
    return _freeze(value)


def _depth(value: Any) -> int:
    """Nesting depth of JSON-like ``value`` (a scalar is 0), computed without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, Mapping) else item if isinstance(item, (list, tuple)) else None
        if children is not None:
            deepest = max(deepest, level + 1)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            stack.extend((child, level + 1) for child in children)
    return deepest


def _numbers(value: Any) -> list[Any]:
    """Every number in JSON-like ``value`` (depth already bounded)."""
    if isinstance(value, Mapping):
        return [n for child in value.values() for n in _numbers(child)]
    if isinstance(value, (list, tuple)):
        return [n for child in value for n in _numbers(child)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _floats(value: Any) -> Any:
    """A sequence of real numbers as a tuple of floats; anything else unchanged (validation names it)."""
    if isinstance(value, tuple) and all(_KIND_CHECKS["float"](v) for v in value):
        return tuple(float(v) for v in value)
    return value


def _clip(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


def _freeze(value: Any) -> Any:
    """Lists (from JSON or a caller) as tuples, recursively, so metadata is hashable-ish and immutable."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value
