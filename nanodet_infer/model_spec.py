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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends.base import Backend, Shape
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

    Embedded ``nanodet.*`` metadata wins; ``facts`` (see :data:`FOREIGN_FACTS`) are only accepted for
    models without it. Raises :class:`InvalidArgumentError` for unknown or misplaced facts,
    :class:`MetadataError` for malformed metadata or facts, :class:`IncompatibleModelError` when the graph
    does not fit.
    """
    unknown = sorted(set(facts) - set(FOREIGN_FACTS))
    if unknown:
        raise InvalidArgumentError(
            f"unknown keyword argument(s) {unknown}; model facts for a model without metadata are {list(FOREIGN_FACTS)}"
        )
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


def _output_index(backend: Backend, name: str, key: str) -> int:
    if name not in backend.output_names:
        raise IncompatibleModelError(
            f"metadata {KEY_PREFIX + key} names output {name!r}, but the model's outputs are "
            f"{list(backend.output_names)}; the file does not match its metadata"
        )
    return backend.output_names.index(name)


def _foreign_metadata(backend: Backend, facts: dict[str, Any]) -> ModelMetadata:
    if len(backend.output_shapes) != 1 or len(backend.output_shapes[0]) != 3:
        raise IncompatibleModelError(
            f"the model has no nanodet metadata and outputs {_describe_outputs(backend)}; a NanoDet-Plus model "
            "without metadata (upstream export) has one output [B, N, num_classes + 4*(reg_max+1)]. "
            "Export it with nanodet-export"
        )
    shape = backend.input_shape
    if len(shape) != 4:
        raise IncompatibleModelError(f"the model input {backend.input_name!r} has rank {len(shape)}; expected NCHW")
    reg_max = facts.get("reg_max", 7)
    if type(reg_max) is not int or reg_max < 1:
        raise MetadataError(f"reg_max must be an integer >= 1, got {reg_max!r}")
    channels = backend.output_shapes[0][2]
    box_channels = 4 * (reg_max + 1)
    num_classes = facts.get("num_classes")
    class_names = facts.get("class_names")
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if num_classes is None:
        if channels is None:
            raise MetadataError("the output's channel count is symbolic; pass num_classes= (and reg_max=)")
        num_classes = channels - box_channels
        if num_classes < 1:
            raise IncompatibleModelError(
                f"the output has {channels} channels, not more than 4*(reg_max+1) = {box_channels}; "
                "pass the right reg_max=, or this is not a NanoDet-Plus model"
            )
    if class_names is None and type(num_classes) is int and num_classes > 0:
        class_names = [f"class_{i}" for i in range(num_classes)]
    input_size = facts.get("input_size")
    if input_size is None:
        if shape[2] is None or shape[3] is None:
            raise MetadataError("the model input has symbolic H/W; pass input_size=(W, H) it was trained at")
        input_size = (shape[3], shape[2])
    try:
        input_size = tuple(input_size)
        return ModelMetadata(
            num_classes=num_classes,
            class_names=tuple(class_names),
            reg_max=reg_max,
            strides=tuple(facts.get("strides", (8, 16, 32, 64))),
            input_size=input_size,
            mean=tuple(facts.get("mean", UPSTREAM_MEAN_BGR)),
            std=tuple(facts.get("std", UPSTREAM_STD_BGR)),
            keep_ratio=bool(facts.get("keep_ratio", False)),
            input_name=backend.input_name,
            scores_output=backend.output_names[0],
            boxes_output=backend.output_names[0],
            producer="foreign (facts from keyword arguments)",
        )
    except TypeError as exc:
        raise MetadataError(f"invalid model facts {facts!r}: {exc}") from None


def _check_input(shape: Shape, meta: ModelMetadata) -> None:
    if len(shape) != 4 or shape[1] not in (3, None):
        raise IncompatibleModelError(f"the model input has shape {_fmt(shape)}; expected [B, 3, H, W]")
    if shape[0] is not None and shape[0] != 1:
        raise IncompatibleModelError(
            f"the model input has a static batch of {shape[0]}; export it with batch 1 or a dynamic batch axis"
        )
    if (shape[2] is None) != (shape[3] is None):
        raise IncompatibleModelError(
            f"the model input {_fmt(shape)} has one symbolic spatial axis; export with both H and W static or dynamic"
        )
    width, height = meta.input_size
    if (shape[2] is not None and shape[2] != height) or (shape[3] is not None and shape[3] != width):
        raise IncompatibleModelError(
            f"the model input is {_fmt(shape)} but input_size is {width}x{height} (WxH); they must agree"
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
            raise IncompatibleModelError(f"output {name!r} has shape {_fmt(shape)}; expected [B, N, {channels}]")
        if shape[2] is not None and shape[2] != channels:
            raise IncompatibleModelError(
                f"output {name!r} has {shape[2]} channels; num_classes={c} and reg_max={meta.reg_max} need {channels}"
            )
        if priors is not None and shape[1] is not None and shape[1] != priors:
            raise IncompatibleModelError(
                f"output {name!r} has {shape[1]} rows, but a {meta.input_size[0]}x{meta.input_size[1]} input with "
                f"strides {list(meta.strides)} has {priors} priors; check strides/input_size"
            )


def _describe_outputs(backend: Backend) -> str:
    return ", ".join(f"{n} {_fmt(s)}" for n, s in zip(backend.output_names, backend.output_shapes, strict=True))


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
