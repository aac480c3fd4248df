"""Model facts for a loaded backend, checked against its graph, and the output adapter.

Two kinds of model run here:

* **ours** (``nanodet-export``): the metadata is embedded; two outputs ``scores`` ``[B, N, C]`` and
  ``boxes`` ``[B, N, 4*(reg_max+1)]``.
* **foreign**, e.g. upstream's ``tools/export_onnx.py`` output: no metadata, one output
  ``[B, N, C + 4*(reg_max+1)]`` (class part sigmoided, then raw box logits). The facts come from keyword
  arguments (:data:`FOREIGN_FACTS`) with upstream's defaults; ``num_classes`` is derived from the
  output's last dimension when it is static.

:func:`resolve_model_spec` verifies the graph against the facts (input name/rank/channels, output
names, ``N`` = the prior count of a static input size, last dimensions ``C`` and ``4*(reg_max+1)``)
and raises :class:`IncompatibleModelError` naming the first mismatch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from .backends.base import Backend, Shape, format_shape
from .decode import num_priors
from .errors import IncompatibleModelError, InvalidArgumentError, MetadataError
from .metadata import KEY_PREFIX, UPSTREAM_MEAN_BGR, UPSTREAM_STD_BGR, ModelMetadata

FOREIGN_FACTS = ("num_classes", "class_names", "reg_max", "strides", "input_size", "mean", "std", "keep_ratio")
"""Keyword arguments that describe a model without embedded metadata."""


@dataclass(frozen=True)
class ModelSpec:
    """Verified facts of a loaded model plus where its scores and box logits live.

    ``metadata.dynamic_batch`` / ``metadata.dynamic_hw`` describe the loaded graph (not what an exporter
    claimed). ``scores_index`` / ``boxes_index`` index the backend's outputs; they are equal for the
    single-output upstream layout, where the scores are the first ``num_classes`` channels.
    """

    metadata: ModelMetadata
    scores_index: int
    boxes_index: int
    embedded: bool

    @property
    def single_output(self) -> bool:
        """True for upstream's layout: one ``[B, N, C + 4*(reg_max+1)]`` output."""
        return self.scores_index == self.boxes_index

    def split_outputs(self, outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Backend outputs → ``(scores [B, N, C] probabilities, box logits [B, N, 4*(reg_max+1)])``.

        Views of the outputs, no copies (except applying the sigmoid when the model's scores are logits,
        ``scores_activation="none"``). Raises :class:`IncompatibleModelError` when the shapes disagree
        with the metadata.
        """
        meta = self.metadata
        c, r = meta.num_classes, meta.num_box_channels
        if self.single_output:
            joint = outputs[self.scores_index]
            if joint.ndim != 3 or joint.shape[2] != c + r:
                raise IncompatibleModelError(
                    f"output {meta.scores_output!r} has shape {joint.shape}; expected [B, N, {c + r}]"
                )
            scores, boxes = joint[:, :, :c], joint[:, :, c:]
        else:
            scores, boxes = outputs[self.scores_index], outputs[self.boxes_index]
            if scores.ndim != 3 or boxes.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
                raise IncompatibleModelError(
                    f"outputs {meta.scores_output!r} {scores.shape} and {meta.boxes_output!r} {boxes.shape} "
                    "must be [B, N, C] and [B, N, 4*(reg_max+1)] with equal B and N"
                )
            if scores.shape[2] != c or boxes.shape[2] != r:
                raise IncompatibleModelError(
                    f"outputs have {scores.shape[2]} score / {boxes.shape[2]} box channels; the metadata says "
                    f"num_classes={c}, reg_max={meta.reg_max} ({r} box channels)"
                )
        if meta.scores_activation == "none":
            with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -88: the sigmoid is then 0
                scores = 1.0 / (1.0 + np.exp(-scores))
        return scores, boxes

    def check_num_priors(self, num_rows: int, canvas_size: Sequence[int]) -> None:
        """Raise :class:`IncompatibleModelError` unless ``num_rows`` equals the prior count of ``canvas_size``."""
        expected = num_priors(canvas_size, self.metadata.strides)
        if num_rows != expected:
            raise IncompatibleModelError(
                f"the model returned {num_rows} rows for a {canvas_size[0]}x{canvas_size[1]} input, but strides "
                f"{list(self.metadata.strides)} give {expected} priors; check strides/input_size"
            )


def resolve_model_spec(backend: Backend, **facts: Any) -> ModelSpec:
    """The verified :class:`ModelSpec` of ``backend``'s model.

    Embedded ``nanodet.*`` metadata wins; ``facts`` (see :data:`FOREIGN_FACTS`, checked by
    :func:`check_facts`) are only accepted for models without it. Raises :class:`InvalidArgumentError` for
    unknown, malformed or misplaced facts, :class:`MetadataError` for malformed metadata or a missing fact
    the graph cannot supply, :class:`IncompatibleModelError` when the graph does not fit.
    """
    facts = check_facts(facts)
    embedded = any(key.startswith(KEY_PREFIX) for key in backend.properties)
    if embedded:
        if facts:
            raise InvalidArgumentError(
                f"the model carries nanodet metadata; {sorted(facts)} can only be given for a model without it"
            )
        meta = ModelMetadata.from_properties(backend.properties)
        scores_index = _output_index(backend, meta.scores_output, "scores_output")
        boxes_index = _output_index(backend, meta.boxes_output, "boxes_output")
        if backend.input_name != meta.input_name:
            raise IncompatibleModelError(
                f"the model input is named {backend.input_name!r} but its metadata says {meta.input_name!r}"
            )
    else:
        meta = _foreign_metadata(backend, facts)
        scores_index = boxes_index = 0
    _check_input(backend.input_shape, meta)
    meta = meta.replace(
        dynamic_batch=backend.input_shape[0] is None,
        dynamic_hw=backend.input_shape[2] is None or backend.input_shape[3] is None,
    )
    spec = ModelSpec(meta, scores_index, boxes_index, embedded)
    _check_outputs(backend, spec)
    return spec


def check_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Foreign-model facts (:data:`FOREIGN_FACTS`) checked and normalised to plain ``int`` / ``float`` / tuples.

    A fact given as ``None`` counts as not given. Raises :class:`InvalidArgumentError` naming the keyword and
    the fix for an unknown keyword or a value of the wrong type or length (``class_names="abc"``,
    ``num_classes=3.0``, ``strides=8``, ...); ranges and agreement between facts are checked when the
    metadata is built. Cheap: the :class:`~nanodet_infer.Detector` calls it before loading the model.
    """
    unknown = sorted(set(facts) - set(FOREIGN_FACTS))
    if unknown:
        raise InvalidArgumentError(
            f"unknown keyword argument(s) {unknown}; model facts for a model without metadata are {list(FOREIGN_FACTS)}"
        )
    return {name: _FACT_CHECKS[name](name, value) for name, value in facts.items() if value is not None}


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int``: any integer (numpy's too) >= 1, not a bool; else :class:`InvalidArgumentError`."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _items(name: str, value: Any, fix: str, length: int | None = None) -> tuple[Any, ...]:
    """``value`` (a list, tuple or other non-string iterable) as a non-empty tuple of ``length`` items."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"{name} must be a list, got {value!r}; {fix}")
    items = tuple(value)
    if not items or (length is not None and len(items) != length):
        raise InvalidArgumentError(f"{name} must have {length or 'at least one'} entries, got {value!r}; {fix}")
    return items


def _class_names(name: str, value: Any) -> tuple[str, ...]:
    fix = "pass a list of names, e.g. class_names=['cat', 'dog']"
    names = _items(name, value, fix)
    if not all(isinstance(n, str) for n in names):
        raise InvalidArgumentError(f"{name} must be strings, got {value!r}; {fix}")
    return names


def _strides(name: str, value: Any) -> tuple[int, ...]:
    fix = "pass the head's strides, e.g. strides=(8, 16, 32, 64)"
    return tuple(check_positive_int(f"{name} entry", v) for v in _items(name, value, fix))


def _input_size(name: str, value: Any) -> tuple[int, ...]:
    fix = "pass input_size=(W, H), e.g. (320, 320)"
    return tuple(check_positive_int(f"{name} entry", v) for v in _items(name, value, fix, 2))


def _three_numbers(name: str, value: Any) -> tuple[float, ...]:
    default = UPSTREAM_MEAN_BGR if name == "mean" else UPSTREAM_STD_BGR
    fix = f"pass 3 numbers in the model's channel order, e.g. upstream's BGR {name}={default}"
    numbers = _items(name, value, fix, 3)
    if any(isinstance(v, bool) or not isinstance(v, Real) for v in numbers):
        raise InvalidArgumentError(f"{name} must be 3 numbers, got {value!r}; {fix}")
    return tuple(float(v) for v in numbers)


def check_flag(name: str, value: Any) -> bool:
    """``value`` as a ``bool``: True / False (numpy's too), not 0/1 or strings; else :class:`InvalidArgumentError`."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentError(f"{name} must be True or False, got {value!r}")
    return bool(value)


_FACT_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "num_classes": check_positive_int,
    "class_names": _class_names,
    "reg_max": check_positive_int,
    "strides": _strides,
    "input_size": _input_size,
    "mean": _three_numbers,
    "std": _three_numbers,
    "keep_ratio": check_flag,
}


def _output_index(backend: Backend, name: str, key: str) -> int:
    if name not in backend.output_names:
        raise IncompatibleModelError(
            f"metadata {KEY_PREFIX + key} names output {name!r}, but the model's outputs are "
            f"{list(backend.output_names)}; the file does not match its metadata"
        )
    return backend.output_names.index(name)


def _foreign_metadata(backend: Backend, facts: dict[str, Any]) -> ModelMetadata:
    """Metadata of a model without it, from checked ``facts`` and upstream's defaults."""
    if len(backend.output_shapes) != 1 or len(backend.output_shapes[0]) != 3:
        raise IncompatibleModelError(
            f"the model has no nanodet metadata and outputs {backend.describe_outputs()}; a NanoDet-Plus model "
            "without metadata (upstream export) has one output [B, N, num_classes + 4*(reg_max+1)]. "
            "Export it with nanodet-export"
        )
    if len(backend.input_shape) != 4:
        raise IncompatibleModelError(
            f"the model input {backend.input_name!r} has rank {len(backend.input_shape)}; expected NCHW"
        )
    reg_max = facts.get("reg_max", 7)
    num_classes = _foreign_num_classes(backend, facts, reg_max)
    try:
        return ModelMetadata(
            num_classes=num_classes,
            class_names=facts.get("class_names", tuple(f"class_{i}" for i in range(num_classes))),
            reg_max=reg_max,
            strides=facts.get("strides", (8, 16, 32, 64)),
            input_size=facts.get("input_size") or _static_input_size(backend.input_shape),
            mean=facts.get("mean", UPSTREAM_MEAN_BGR),
            std=facts.get("std", UPSTREAM_STD_BGR),
            keep_ratio=facts.get("keep_ratio", False),
            input_name=backend.input_name,
            scores_output=backend.output_names[0],
            boxes_output=backend.output_names[0],
            producer="foreign (facts from keyword arguments)",
        )
    except MetadataError as exc:
        raise InvalidArgumentError(f"invalid model facts: {exc}") from None


def _foreign_num_classes(backend: Backend, facts: dict[str, Any], reg_max: int) -> int:
    """``num_classes``, else ``len(class_names)``, else the output's channels minus ``4*(reg_max+1)``."""
    if "num_classes" in facts:
        return facts["num_classes"]
    if "class_names" in facts:
        return len(facts["class_names"])
    channels = backend.output_shapes[0][2]
    if channels is None:
        raise MetadataError("the output's channel count is symbolic; pass num_classes= (and reg_max=)")
    box_channels = 4 * (reg_max + 1)
    if channels <= box_channels:
        raise IncompatibleModelError(
            f"the output has {channels} channels, not more than 4*(reg_max+1) = {box_channels}; "
            "pass the right reg_max=, or this is not a NanoDet-Plus model"
        )
    return channels - box_channels


def _static_input_size(shape: Shape) -> tuple[int, int]:
    """``(W, H) = (shape[3], shape[2])`` of a static NCHW input (see docs/runtime.md on upstream's non-square)."""
    if shape[2] is None or shape[3] is None:
        raise MetadataError("the model input has symbolic H/W; pass input_size=(W, H) it was trained at")
    return shape[3], shape[2]


def _check_input(shape: Shape, meta: ModelMetadata) -> None:
    if len(shape) != 4 or shape[1] not in (3, None):
        raise IncompatibleModelError(f"the model input has shape {format_shape(shape)}; expected [B, 3, H, W]")
    if shape[0] is not None and shape[0] != 1:
        raise IncompatibleModelError(
            f"the model input has a static batch of {shape[0]}; export it with batch 1 or a dynamic batch axis"
        )
    if (shape[2] is None) != (shape[3] is None):
        raise IncompatibleModelError(
            f"the model input {format_shape(shape)} has one symbolic spatial axis; "
            "export with both H and W static or dynamic"
        )
    width, height = meta.input_size
    if (shape[2] is not None and shape[2] != height) or (shape[3] is not None and shape[3] != width):
        raise IncompatibleModelError(
            f"the model input is {format_shape(shape)} but input_size is {width}x{height} (WxH); they must agree"
        )


def _check_outputs(backend: Backend, spec: ModelSpec) -> None:
    meta = spec.metadata
    c, r = meta.num_classes, meta.num_box_channels
    expected = {spec.scores_index: c + r} if spec.single_output else {spec.scores_index: c, spec.boxes_index: r}
    priors = None if meta.dynamic_hw else num_priors(meta.input_size, meta.strides)
    for index, channels in expected.items():
        shape = backend.output_shapes[index]
        name = backend.output_names[index]
        if len(shape) != 3:
            raise IncompatibleModelError(
                f"output {name!r} has shape {format_shape(shape)}; expected [B, N, {channels}]"
            )
        if shape[2] is not None and shape[2] != channels:
            raise IncompatibleModelError(
                f"output {name!r} has {shape[2]} channels; num_classes={c} and reg_max={meta.reg_max} need {channels}"
            )
        if priors is not None and shape[1] is not None and shape[1] != priors:
            raise IncompatibleModelError(
                f"output {name!r} has {shape[1]} rows, but a {meta.input_size[0]}x{meta.input_size[1]} input with "
                f"strides {list(meta.strides)} has {priors} priors; check strides/input_size"
            )
