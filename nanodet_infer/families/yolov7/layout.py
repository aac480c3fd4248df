"""YOLOv7's output layout, its check against the graph, and the facts of models without metadata.

One output ``[B, N, 5 + C]`` (``predictions_output``), upstream's deploy ``Detect`` in eval mode (see
:mod:`.section`). A model without metadata — upstream's ``export.py --grid`` output, or any export of the
deploy model whose first output is that tensor — is described by keyword arguments (:data:`FOREIGN_FACTS`)
with upstream's defaults: ``strides=(8, 16, 32)`` and the matching default anchors (pass
``strides=(8, 16, 32, 64)`` for the P6 models, w6/e6/d6/e6e), ``num_classes`` from the output's last
dimension when it is static, ``input_size`` from a static input, else detect.py's 640x640.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np

from ...arguments import check_items, check_names, check_numbers, check_positive_int
from ...backends.base import Backend, format_shape
from ...errors import IncompatibleModelError, InvalidArgumentError, MetadataError
from ...metadata import ModelMetadata
from ...model_spec import output_index
from ..facts import Fact
from .section import LETTERBOX_COLOR, UPSTREAM_ANCHORS

DETECT_INPUT_SIZE = (640, 640)
"""detect.py's ``--img-size``: the letterbox target of a dynamic-H/W model without metadata."""


@dataclass(frozen=True)
class OutputLayout:
    """Where the predictions live: an index into the backend's outputs."""

    predictions_index: int


def num_rows(canvas_size: Sequence[int], strides: Sequence[int], anchors_per_level: int) -> int:
    """Rows of the output for a ``canvas_size`` ``(W, H)`` input: ``na * sum(ceil(H / s) * ceil(W / s))``."""
    width, height = canvas_size
    return anchors_per_level * sum(-(-height // s) * -(-width // s) for s in strides)


def predictions(
    outputs: Sequence[np.ndarray], layout: OutputLayout, canvas_size: Sequence[int], meta: ModelMetadata
) -> np.ndarray:
    """One image's ``[N, 5 + C]`` predictions from its outputs, checked against the canvas and the metadata.

    Raises :class:`IncompatibleModelError` when the shape disagrees (wrong strides, anchors or class count).
    """
    rows = outputs[layout.predictions_index]
    columns = 5 + meta.num_classes
    if rows.ndim != 2 or rows.shape[1] != columns:
        raise IncompatibleModelError(
            f"output {meta.predictions_output!r} has shape {rows.shape} per image; num_classes={meta.num_classes} "
            f"needs [N, {columns}]"
        )
    expected = num_rows(canvas_size, meta.strides, meta.anchors_per_level)
    if len(rows) != expected:
        raise IncompatibleModelError(
            f"the model returned {len(rows)} rows for a {canvas_size[0]}x{canvas_size[1]} input, but strides "
            f"{list(meta.strides)} with {meta.anchors_per_level} anchors per level give {expected}; check "
            "strides/anchors (P6 models use strides=(8, 16, 32, 64))"
        )
    return rows


def _positive_ints(fix: str, length: int | None = None) -> Callable[[str, Any], tuple[int, ...]]:
    def check(name: str, value: Any) -> tuple[int, ...]:
        return tuple(check_positive_int(f"{name} entry", v) for v in check_items(name, value, fix, length))

    return check


def _anchors(name: str, value: Any) -> tuple[tuple[float, ...], ...]:
    fix = "pass one list of w, h pixel pairs per stride, e.g. anchors=[[12, 16, 19, 36, 40, 28], ...]"
    return tuple(check_numbers(f"{name} level", level, fix) for level in check_items(name, value, fix))


def _colour(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= value <= 255:
        raise InvalidArgumentError(f"{name} must be an integer in 0..255, got {value!r}; upstream's is 114")
    return int(value)


FOREIGN_FACTS = (
    Fact("num_classes", "int", "classes (default: from the output's last dimension)", check_positive_int),
    Fact("class_names", "names", "comma-separated names, or a UTF-8 text file: one name per line, or a JSON list",
         check_names),
    Fact("strides", "ints", "the detection strides (default 8,16,32; the P6 models w6/e6/d6/e6e: 8,16,32,64)",
         _positive_ints("pass the head's strides, e.g. strides=(8, 16, 32)")),
    Fact("anchors", "levels", "w,h pixel pairs per stride, ';' between strides (default: upstream's anchors of the "
         "strides)", _anchors),
    Fact("input_size", "size", f"W,H (default: from a static input, else detect.py's "
         f"{DETECT_INPUT_SIZE[0]},{DETECT_INPUT_SIZE[1]})",
         _positive_ints("pass input_size=(W, H), e.g. (640, 640)", 2)),
    Fact("letterbox_color", "int", f"the letterbox border's grey level (default {LETTERBOX_COLOR})", _colour),
)
"""Keyword arguments that describe a YOLOv7 model without embedded metadata."""


def resolve_layout(backend: Backend, meta: ModelMetadata) -> OutputLayout:
    """The :class:`OutputLayout` of ``backend``'s model, its output checked against ``meta``."""
    index = output_index(backend, meta.predictions_output, "predictions_output")
    shape, name = backend.output_shapes[index], backend.output_names[index]
    columns = 5 + meta.num_classes
    if len(shape) != 3:
        raise IncompatibleModelError(f"output {name!r} has shape {format_shape(shape)}; expected [B, N, {columns}]")
    if shape[2] is not None and shape[2] != columns:
        raise IncompatibleModelError(
            f"output {name!r} has {shape[2]} columns; num_classes={meta.num_classes} needs 5 + C = {columns}"
        )
    rows = None if meta.dynamic_hw else num_rows(meta.input_size, meta.strides, meta.anchors_per_level)
    if rows is not None and shape[1] is not None and shape[1] != rows:
        raise IncompatibleModelError(
            f"output {name!r} has {shape[1]} rows, but a {meta.input_size[0]}x{meta.input_size[1]} input with "
            f"strides {list(meta.strides)} and {meta.anchors_per_level} anchors per level has {rows}; "
            "check strides/anchors/input_size"
        )
    return OutputLayout(index)


def foreign_metadata(backend: Backend, facts: Mapping[str, Any]) -> ModelMetadata:
    """Metadata of a model without it, from checked ``facts``, the graph's shapes and upstream's defaults."""
    if not backend.output_shapes or len(backend.output_shapes[0]) != 3:
        raise IncompatibleModelError(
            f"the model has no nanodet metadata and outputs {backend.describe_outputs()}; a YOLOv7 model without "
            "metadata must have the decoded predictions [B, N, 5 + num_classes] first (upstream export.py --grid). "
            "Export it with nanodet-export"
        )
    if len(backend.input_shape) != 4:
        raise IncompatibleModelError(
            f"the model input {backend.input_name!r} has rank {len(backend.input_shape)}; expected NCHW"
        )
    num_classes = _foreign_num_classes(backend, facts)
    strides = facts.get("strides", (8, 16, 32))
    if "anchors" not in facts and len(strides) not in UPSTREAM_ANCHORS:
        raise MetadataError(f"no default anchors for {len(strides)} levels; pass anchors= (one list per stride)")
    _, _, height, width = backend.input_shape
    static = None if height is None or width is None else (width, height)
    try:
        return ModelMetadata(
            num_classes=num_classes,
            class_names=facts.get("class_names", tuple(f"class_{i}" for i in range(num_classes))),
            model_family="yolov7",
            strides=strides,
            anchors=facts.get("anchors", UPSTREAM_ANCHORS.get(len(strides))),
            input_size=facts.get("input_size") or static or DETECT_INPUT_SIZE,
            letterbox_color=facts.get("letterbox_color", LETTERBOX_COLOR),
            input_name=backend.input_name,
            predictions_output=backend.output_names[0],
            producer="foreign (facts from keyword arguments)",
        )
    except MetadataError as exc:
        raise InvalidArgumentError(f"invalid model facts: {exc}") from None


def _foreign_num_classes(backend: Backend, facts: Mapping[str, Any]) -> int:
    """``num_classes``, else ``len(class_names)``, else the output's columns minus 5."""
    if "num_classes" in facts:
        return facts["num_classes"]
    if "class_names" in facts:
        return len(facts["class_names"])
    columns = backend.output_shapes[0][2]
    if columns is None:
        raise MetadataError("the output's column count is symbolic; pass num_classes=")
    if columns <= 5:
        raise IncompatibleModelError(
            f"the output has {columns} columns, not more than 5 (box, obj); this is not a YOLOv7 prediction output"
        )
    return columns - 5
