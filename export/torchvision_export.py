"""Export adapter for torchvision's SSD300-VGG16, SSDLite320-MobileNetV3 and RetinaNet-ResNet50-FPN.

The graph is the model's backbone + head only: input ``images`` ``[B, 3, H, W]`` (the transformed image:
RGB, normalised, resized, and for RetinaNet zero-padded to multiples of 32), outputs ``cls_logits``
``[B, A, C]`` (raw logits) and ``bbox_regression`` ``[B, A, 4]`` (raw box-coder deltas). SSD graphs have a
static 300x300 / 320x320 canvas; RetinaNet graphs a symbolic height and width; the batch is always
symbolic. Everything else torchvision does (transform, default boxes / anchors, box decoding,
post-processing) is written into the metadata (keys: :func:`family_properties`, ``docs/export.md``) for
the runtime families ``ssd`` and ``retinanet``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nanodet_models.torchvision_checkpoint import (
    TorchvisionModel,
    build_torchvision_model,
    is_torchvision_state_dict,
    load_object,
    read_torchvision_checkpoint,
)
from nanodet_models.torchvision_common import COCO_V91_NAMES
from nanodet_models.torchvision_ssd.ssd import BBOX_XFORM_CLIP, boxes_per_location

from nanodet_infer import __version__
from nanodet_infer.errors import ExportError, InvalidArgumentError, NanoDetError

from . import onnx_export, parity, writing

PRODUCER = f"nanodet-export {__version__}"
SCHEMA_VERSION = 2
KEY_PREFIX = "nanodet."
SCORES_NAME = "cls_logits"
BOXES_NAME = "bbox_regression"
OUTPUT_NAMES = (SCORES_NAME, BOXES_NAME)
#: RetinaNet is traced and parity-checked on small canvases (its graph has a symbolic H and W).
RETINANET_TRACE_WH = (320, 256)
RETINANET_PARITY_SHAPES = ((1, 3, 256, 320), (2, 3, 192, 288))


@dataclass(frozen=True)
class TorchvisionExportReport:
    """What a torchvision export wrote and how well it matched PyTorch."""

    paths: tuple[Path, ...]
    format: str
    properties: dict[str, str]
    """The metadata written (``nanodet.*`` string map, schema version 2)."""
    architecture: str
    family: str
    input_shape: list[int | str]
    output_shapes: dict[str, list[int | str]]
    parity: writing.ParityResult
    tolerance_rule: str
    num_params: int
    source_format: str
    stored_dtype: str
    assumed: tuple[str, ...]
    file_size: int
    seconds: float

    @property
    def path(self) -> Path:
        """The main output file (``.onnx`` or ``.xml``)."""
        return self.paths[0]

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the CLI."""
        props = self.properties
        arch = json.loads(props[KEY_PREFIX + "architecture"])
        outputs = ", ".join(f"{name} {_dims(dims)}" for name, dims in self.output_shapes.items())
        if self.parity.worst:
            backend = "OpenVINO f32" if self.format == "openvino" else "onnxruntime"
            worst, tolerance = self.parity.worst, self.parity.tolerance
            deltas = ", ".join(f"{name} {value:.2e} (<= {tolerance[name]:.2g})" for name, value in worst.items())
            checked = " and ".join(_dims(case.input_shape) for case in self.parity.cases)
            parity_line = f"max |Δ| {deltas}; {self.tolerance_rule}; {backend} vs PyTorch on {checked}"
        else:
            parity_line = "not checked"
        lines = [
            f"{PRODUCER}: wrote {', '.join(str(p) for p in self.paths)} "
            f"({self.file_size / 1e6:.1f} MB, {self.seconds:.1f} s)",
            f"  architecture torchvision {self.architecture} (family {self.family}), "
            f"{props[KEY_PREFIX + 'num_classes']} classes, backbone norm {arch['norm']}; "
            f"{self.num_params / 1e6:.2f} M params exported",
            f"  weights      {self.source_format} checkpoint, stored as {self.stored_dtype}, "
            f"sha256 {props[KEY_PREFIX + 'source_sha256'][:16]}",
            f"  input        images {_dims(self.input_shape)} float32, RGB, torchvision-transformed (rule in metadata)",
            f"  outputs      {outputs}",
            f"  parity       {parity_line}",
        ]
        if self.assumed:
            lines.insert(2, f"  warning      assumed (not stored in the checkpoint): {', '.join(self.assumed)}; "
                         "pass --bn-eps to state it")  # fmt: skip
        return lines


def is_torchvision_checkpoint(path: str | Path, *, trust: bool = False) -> bool:
    """Whether ``path`` holds a torchvision detection checkpoint (False when it is unreadable: the
    NanoDet reader then reports why)."""
    try:
        obj = load_object(Path(path), trust=trust)
    except (NanoDetError, OSError):
        return False
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    return isinstance(obj, dict) and is_torchvision_state_dict(obj)


def export_torchvision_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    *,
    opset: int = 17,
    simplify: bool = True,
    fmt: str = "onnx",
    fp16: bool = False,
    class_names: Sequence[str] | None = None,
    bn_eps: float | None = None,
    trust_checkpoint: bool = False,
    check: bool = True,
) -> TorchvisionExportReport:
    """Export a torchvision detection checkpoint (see :mod:`models.torchvision_checkpoint`) to ONNX or
    OpenVINO IR. ``class_names`` default to COCO's 91 torchvision names for a 91-class model, else
    ``class_<i>`` (with ``__background__`` first for SSD); ``bn_eps`` states the backbone norm's eps.
    The caller has validated ``out``/``fmt``/``fp16``/``opset``."""
    start = time.perf_counter()
    checkpoint = read_torchvision_checkpoint(ckpt, trust=trust_checkpoint)
    built = build_torchvision_model(checkpoint.state_dict, bn_eps=bn_eps)
    names = _class_names(built, class_names)
    model = built.model
    ssd = built.family == "ssd"
    size = tuple(model.facts["size"]) if ssd else RETINANET_TRACE_WH
    graph = onnx_export.trace_to_onnx(
        model,
        size,
        (built.num_classes, 4),
        dynamic=True,
        dynamic_hw=not ssd,
        opset=opset,
        simplify=simplify,
        output_names=OUTPUT_NAMES,
    )
    elementwise = model.backbone.scale_weight.numel() if built.architecture == "ssd300_vgg16" else 0
    num_params = onnx_export.check_deploy_parameters(graph, model, elementwise=elementwise)
    _check_rows(graph, size, built)
    properties = metadata_properties(built, names, source_sha256=checkpoint.sha256)
    onnx_export.embed_metadata(graph, properties)
    shapes = onnx_export.output_shapes(graph)
    shapes_checked = [(1, 3, size[1], size[0]), (2, 3, size[1], size[0])] if ssd else RETINANET_PARITY_SHAPES
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes_checked] if check else []
    out = Path(out)
    result = writing.write_checked(
        graph,
        properties,
        out,
        fmt=fmt,
        fp16=fp16,
        reference=parity.torch_runner(model, OUTPUT_NAMES),
        samples=samples,
        names=OUTPUT_NAMES,
        check_written=lambda written: _check_round_trip(properties, written),
        noise=parity.reference_noise(model, samples, OUTPUT_NAMES, fp16=fp16) if samples else None,
    )
    finals = writing.final_paths(out, fmt)
    return TorchvisionExportReport(
        paths=finals,
        format=fmt,
        properties=properties,
        architecture=built.architecture,
        family=built.family,
        input_shape=["batch", 3, size[1], size[0]] if ssd else ["batch", 3, "height", "width"],
        output_shapes=shapes,
        parity=result,
        tolerance_rule=parity.tolerance_rule(fp16=fp16, noise=check),
        num_params=num_params,
        source_format=checkpoint.source_format,
        stored_dtype=checkpoint.stored_dtype,
        assumed=built.assumed,
        file_size=writing.file_size(finals),
        seconds=time.perf_counter() - start,
    )


def _class_names(built: TorchvisionModel, given: Sequence[str] | None) -> tuple[str, ...]:
    if given is not None:
        if len(given) != built.num_classes:
            raise InvalidArgumentError(
                f"{len(given)} class names given for a model with {built.num_classes} classes (torchvision counts "
                "the background as class 0 for SSD); give exactly one name per class"
            )
        return tuple(given)
    if built.num_classes == len(COCO_V91_NAMES):
        return COCO_V91_NAMES
    first = ("__background__",) if built.family == "ssd" else ()
    return first + tuple(f"class_{i}" for i in range(len(first), built.num_classes))


def expected_rows(built: TorchvisionModel, size_wh: tuple[int, int]) -> int:
    """Rows of the outputs for a ``size_wh`` canvas: Σ over levels of H_l · W_l · anchors per location."""
    facts = built.model.facts
    if built.family == "ssd":
        anchors = boxes_per_location(facts["aspect_ratios"])
        return sum(h * w * a for (h, w), a in zip(facts["feature_map_sizes"], anchors, strict=True))
    h, w = size_wh[1] // 8, size_wh[0] // 8
    rows = 0
    for _ in facts["strides"]:
        rows += h * w * len(facts["anchor_sizes"][0]) * len(facts["aspect_ratios"][0])
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return rows


def _check_rows(graph: Any, size_wh: tuple[int, int], built: TorchvisionModel) -> None:
    expected = expected_rows(built, size_wh)
    widths = (built.num_classes, 4)
    for (name, dims), width in zip(onnx_export.output_dims(graph, size_wh).items(), widths, strict=True):
        if dims[1:] != [expected, width]:
            raise ExportError(
                f"output {name!r} is {dims} at W,H = {size_wh[0]},{size_wh[1]}, the anchors give [1, {expected}, "
                f"{width}]; the graph does not match torchvision {built.architecture}"
            )


def family_properties(built: TorchvisionModel) -> dict[str, Any]:
    """The family's own metadata entries (unprefixed names → JSON-ready values), named after torchvision's
    attributes; the transform's mean/std are the common keys (torchvision's values × 255). See
    ``docs/export.md``."""
    f = built.model.facts
    common = {
        "scores_output": SCORES_NAME,
        "boxes_output": BOXES_NAME,
        "box_coder_weights": list(f["box_coder_weights"]),
        "bbox_xform_clip": BBOX_XFORM_CLIP,
        "score_thresh": f["score_thresh"],
        "nms_thresh": f["nms_thresh"],
        "detections_per_img": f["detections_per_img"],
        "topk_candidates": f["topk_candidates"],
    }
    if built.family == "ssd":
        return {
            **common,
            "feature_map_sizes": [list(s) for s in f["feature_map_sizes"]],
            "default_box_aspect_ratios": [list(r) for r in f["aspect_ratios"]],
            "default_box_scales": default_box_scales(f),
            "default_box_steps": list(f["steps"] or ()),
            "default_box_clip": f["clip"],
            "background_class": 0,
        }
    return {
        **common,
        "min_size": f["min_size"],
        "max_size": f["max_size"],
        "size_divisible": f["size_divisible"],
        "strides": list(f["strides"]),
        "anchor_sizes": [list(s) for s in f["anchor_sizes"]],
        "anchor_aspect_ratios": [list(r) for r in f["aspect_ratios"]],
    }


def default_box_scales(facts: dict[str, Any]) -> list[float]:
    """``DefaultBoxGenerator.scales``: the given ones, or ``min + (max - min) * k / (m - 1)`` for each of the
    m levels, then 1.0 (Python float64, as torchvision computes them)."""
    if facts["scales"] is not None:
        return list(facts["scales"])
    levels = len(facts["aspect_ratios"])
    lo, hi = facts["min_ratio"], facts["max_ratio"]
    return [lo + (hi - lo) * k / (levels - 1.0) for k in range(levels)] + [1.0]


def metadata_properties(built: TorchvisionModel, class_names: Sequence[str], *, source_sha256: str) -> dict[str, str]:
    """Every ``nanodet.*`` entry of the exported model (schema version 2): the common keys, then the
    family's (:func:`family_properties`). Strings stay as they are, everything else is JSON."""
    f = built.model.facts
    ssd = built.family == "ssd"
    size = list(f["size"]) if ssd else [_ceil_to(f["max_size"], f["size_divisible"]), f["min_size"]]
    architecture: dict[str, Any] = {
        "summary": f"torchvision {built.architecture}",
        "builder": built.architecture,
        **built.details,
        "norm": built.norm.describe() if built.norm else "none",
        "assumed": list(built.assumed),
        "deploy_parameters": sum(p.numel() for p in built.model.parameters()),
    }
    values: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model_family": built.family,
        "producer": PRODUCER,
        "num_classes": built.num_classes,
        "class_names": list(class_names),
        "input_size": size,
        "dynamic_batch": True,
        "dynamic_hw": not ssd,
        "mean": [m * 255.0 for m in f["image_mean"]],
        "std": [s * 255.0 for s in f["image_std"]],
        "channel_order": "RGB",
        "input_name": onnx_export.INPUT_NAME,
        "source_sha256": source_sha256,
        "architecture": architecture,
        **family_properties(built),
    }
    return {
        KEY_PREFIX + key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for key, value in values.items()
    }


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check_round_trip(properties: dict[str, str], written: dict[str, str]) -> None:
    if {k: v for k, v in written.items() if k.startswith(KEY_PREFIX)} != properties:
        raise ExportError("metadata read back from the model file differs from what was written")


def _dims(dims: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"
