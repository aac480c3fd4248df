"""NanoDet-Plus's output layouts, their check against the graph, and the facts of models without metadata.

Two layouts run here:

* **ours** (``nanodet-export``): two outputs ``scores`` ``[B, N, C]`` and ``boxes`` ``[B, N, 4*(reg_max+1)]``.
* **upstream's** ``tools/export_onnx.py``: no metadata, one output ``[B, N, C + 4*(reg_max+1)]`` (class part
  sigmoided, then raw box logits). The facts come from keyword arguments (:data:`FOREIGN_FACTS`) with
  upstream's defaults; ``num_classes`` is derived from the output's last dimension when it is static.

:func:`check_outputs` verifies output names, ``N`` = the prior count of a static input size, and the last
dimensions ``C`` and ``4*(reg_max+1)``, raising :class:`IncompatibleModelError` naming the first mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...arguments import check_flag, check_items, check_names, check_numbers, check_positive_int
from ...backends.base import Backend, format_shape
from ...errors import IncompatibleModelError, InvalidArgumentError, MetadataError
from ...metadata import ModelMetadata
from ...model_spec import output_index, static_input_size
from ..facts import Fact
from .decode import num_priors
from .section import UPSTREAM_MEAN_BGR, UPSTREAM_STD_BGR


@dataclass(frozen=True)
class OutputLayout:
    """Where the scores and box logits live: indices into the backend's outputs.

    They are equal for upstream's single-output layout, where the scores are the first ``num_classes`` channels.
    """

    scores_index: int
    boxes_index: int

    @property
    def single_output(self) -> bool:
        """True for upstream's layout: one ``[B, N, C + 4*(reg_max+1)]`` output."""
        return self.scores_index == self.boxes_index

    def split_outputs(self, outputs: Sequence[np.ndarray], meta: ModelMetadata) -> tuple[np.ndarray, np.ndarray]:
        """One image's outputs → ``(scores [N, C] probabilities, box logits [N, 4*(reg_max+1)])``.

        Views of the outputs, no copies (except applying the sigmoid when the model's scores are logits,
        ``scores_activation="none"``). Raises :class:`IncompatibleModelError` when the shapes disagree
        with the metadata.
        """
        c, r = meta.num_classes, meta.num_box_channels
        if self.single_output:
            joint = outputs[self.scores_index]
            if joint.ndim != 2 or joint.shape[1] != c + r:
                raise IncompatibleModelError(
                    f"output {meta.scores_output!r} has shape {joint.shape} per image; expected [N, {c + r}]"
                )
            scores, boxes = joint[:, :c], joint[:, c:]
        else:
            scores, boxes = outputs[self.scores_index], outputs[self.boxes_index]
            if scores.ndim != 2 or boxes.ndim != 2 or scores.shape[0] != boxes.shape[0]:
                raise IncompatibleModelError(
                    f"outputs {meta.scores_output!r} {scores.shape} and {meta.boxes_output!r} {boxes.shape} "
                    "must be [N, C] and [N, 4*(reg_max+1)] per image with equal N"
                )
            if scores.shape[1] != c or boxes.shape[1] != r:
                raise IncompatibleModelError(
                    f"outputs have {scores.shape[1]} score / {boxes.shape[1]} box channels; the metadata says "
                    f"num_classes={c}, reg_max={meta.reg_max} ({r} box channels)"
                )
        if meta.scores_activation == "none":
            with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -88: the sigmoid is then 0
                scores = 1.0 / (1.0 + np.exp(-scores))
        return scores, boxes


def check_num_priors(num_rows: int, canvas_size: Sequence[int], strides: Sequence[int]) -> None:
    """Raise :class:`IncompatibleModelError` unless ``num_rows`` equals the prior count of ``canvas_size``."""
    expected = num_priors(canvas_size, strides)
    if num_rows != expected:
        raise IncompatibleModelError(
            f"the model returned {num_rows} rows for a {canvas_size[0]}x{canvas_size[1]} input, but strides "
            f"{list(strides)} give {expected} priors; check strides/input_size"
            + other_family_hint(num_rows, canvas_size)
        )


YOLOV7_ROW_LAYOUTS = ((8, 16, 32), (8, 16, 32, 64))
"""Strides of upstream YOLOv7 (P5) and YOLOv7-W6 (P6) models, 3 anchors per level each."""


def other_family_hint(rows: int | None, canvas_size: Sequence[int]) -> str:
    """``"; ... --model-family yolov7"`` when ``rows`` is a YOLOv7 output's row count for ``canvas_size``
    ``(W, H)`` (``3 * sum(ceil(W/s) * ceil(H/s))``), else ``""``: a foreign model's layout names its family."""
    from ..yolov7.layout import num_rows

    if rows is None or not any(rows == num_rows(canvas_size, strides, 3) for strides in YOLOV7_ROW_LAYOUTS):
        return ""
    return (f"; {rows} rows is the layout of a YOLOv7 model at {canvas_size[0]}x{canvas_size[1]}: give "
            "--model-family yolov7 (model_family='yolov7')")


def _strides(name: str, value: Any) -> tuple[int, ...]:
    fix = "pass the head's strides, e.g. strides=(8, 16, 32, 64)"
    return tuple(check_positive_int(f"{name} entry", v) for v in check_items(name, value, fix))


def _input_size(name: str, value: Any) -> tuple[int, ...]:
    fix = "pass input_size=(W, H), e.g. (320, 320)"
    return tuple(check_positive_int(f"{name} entry", v) for v in check_items(name, value, fix, 2))


def _three_numbers(name: str, value: Any) -> tuple[float, ...]:
    default = UPSTREAM_MEAN_BGR if name == "mean" else UPSTREAM_STD_BGR
    fix = f"pass 3 numbers in the model's channel order, e.g. upstream's BGR {name}={default}"
    return check_numbers(name, value, fix, 3)


FOREIGN_FACTS = (
    Fact("num_classes", "int", "classes (default: from the output's last dimension)", check_positive_int),
    Fact("class_names", "names", "comma-separated names, or a UTF-8 text file: one name per line, or a JSON list",
         check_names),
    Fact("reg_max", "int", "the box distribution has reg_max+1 bins (default 7)", check_positive_int),
    Fact("strides", "ints", "the head's strides (default 8,16,32,64)", _strides),
    Fact("input_size", "size", "W,H (default: from a static input)", _input_size),
    Fact("mean", "numbers", f"per-channel mean, in the model's channel order (default BGR "
         f"{','.join(map(str, UPSTREAM_MEAN_BGR))})", _three_numbers),
    Fact("std", "numbers", f"per-channel std (default {','.join(map(str, UPSTREAM_STD_BGR))})", _three_numbers),
    Fact("keep_ratio", "flag", "the resize the model was trained with", check_flag),
)
"""Keyword arguments that describe a NanoDet-Plus model without embedded metadata."""


def resolve_layout(backend: Backend, meta: ModelMetadata) -> OutputLayout:
    """The :class:`OutputLayout` of ``backend``'s model, its outputs checked against ``meta``."""
    if meta.scores_output == meta.boxes_output:  # upstream's single output (foreign models)
        index = output_index(backend, meta.scores_output, "scores_output")
        layout = OutputLayout(index, index)
    else:
        layout = OutputLayout(
            output_index(backend, meta.scores_output, "scores_output"),
            output_index(backend, meta.boxes_output, "boxes_output"),
        )
    _check_outputs(backend, layout, meta)
    return layout


def foreign_metadata(backend: Backend, facts: Mapping[str, Any]) -> ModelMetadata:
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
            model_family="nanodet-plus",
            reg_max=reg_max,
            strides=facts.get("strides", (8, 16, 32, 64)),
            input_size=facts.get("input_size") or static_input_size(backend.input_shape),
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


def _foreign_num_classes(backend: Backend, facts: Mapping[str, Any], reg_max: int) -> int:
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
        shape = backend.input_shape
        canvas = facts.get("input_size") or (None if None in shape[2:] else (shape[3], shape[2]))
        raise IncompatibleModelError(
            f"the output has {channels} channels, not more than 4*(reg_max+1) = {box_channels}; "
            "pass the right reg_max=, or this is not a NanoDet-Plus model"
            + (other_family_hint(backend.output_shapes[0][1], canvas) if canvas else "")
        )
    return channels - box_channels


def _check_outputs(backend: Backend, layout: OutputLayout, meta: ModelMetadata) -> None:
    c, r = meta.num_classes, meta.num_box_channels
    expected = {layout.scores_index: c + r} if layout.single_output else {layout.scores_index: c, layout.boxes_index: r}
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
                + other_family_hint(shape[1], meta.input_size)
            )
