"""Export adapter for torchvision's SSD300-VGG16, SSDLite320-MobileNetV3 and RetinaNet-ResNet50-FPN.

The graph is the model's backbone + head only: input ``images`` ``[B, 3, H, W]`` (the transformed image:
RGB, normalised, resized, and for RetinaNet zero-padded to multiples of 32), outputs ``cls_logits``
``[B, A, C]`` (raw logits) and ``bbox_regression`` ``[B, A, 4]`` (raw box-coder deltas). SSD graphs have a
static 300x300 / 320x320 canvas; RetinaNet graphs a symbolic height and width; the batch is always
symbolic. Everything else torchvision does (transform, default boxes / anchors, box decoding,
post-processing) is written into the metadata (keys: :func:`family_properties`, ``docs/export.md``) for
the runtime families ``ssd`` and ``retinanet``. :data:`SSD_ADAPTER` and :data:`RETINANET_ADAPTER` are
their entries in :data:`nanodet_export.families.FAMILIES`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from nanodet_models.sniff import pickle_names
from nanodet_models.torchvision_checkpoint import TorchvisionModel, build_torchvision_model, read_torchvision_checkpoint
from nanodet_models.torchvision_common import COCO_V91_NAMES
from nanodet_models.torchvision_ssd.ssd import boxes_per_location

from nanodet_infer.errors import ExportError, InvalidArgumentError, MetadataError
from nanodet_infer.families import get_section
from nanodet_infer.families.ssd.section import BUILDERS as SSD_BUILDERS
from nanodet_infer.families.torchvision_section import TorchvisionSection
from nanodet_infer.metadata import ModelMetadata

from . import onnx_export, parity
from .adapter import TRUST_CHECKPOINT, CommonArgs, ExportAdapter, Option, ParityRule, Prepared
from .writer import PRODUCER

SCHEMA_VERSION = 2
SCORES_NAME = TorchvisionSection.scores_output  # the runtime's default output names: the metadata's, too
BOXES_NAME = TorchvisionSection.boxes_output
OUTPUT_NAMES = (SCORES_NAME, BOXES_NAME)
#: RetinaNet is traced and parity-checked on small canvases (its graph has a symbolic H and W).
RETINANET_TRACE_WH = (320, 256)
RETINANET_PARITY_SHAPES = ((1, 3, 256, 320), (2, 3, 192, 288))
# State-dict key prefixes only torchvision detection models have: SSD's per-level head lists; the other
# heads (RetinaNet, FCOS, the two-stage R-CNNs) go to the retinanet adapter, which names what they are.
_SSD_KEYS = tuple(f"{p}head.classification_head.module_list." for p in ("", "module."))
_OTHER_KEYS = tuple(f"{p}{k}" for p in ("", "module.") for k in ("head.classification_head.", "rpn.", "roi_heads."))


def torchvision_family(path: Path) -> str | None:
    """``'ssd'`` or ``'retinanet'`` when ``path``'s pickle holds torchvision detection keys (content
    sniffing, nothing loaded), else None."""
    strings = pickle_names(path).strings
    if any(text.startswith(_SSD_KEYS) for text in strings):
        return "ssd"
    return "retinanet" if any(text.startswith(_OTHER_KEYS) for text in strings) else None


def prepare(
    ckpt: Path, common: CommonArgs, *, bn_eps: float | None = None, trust_checkpoint: bool = False
) -> Prepared:
    """Read a torchvision detection checkpoint (formats: :mod:`nanodet_models.torchvision_checkpoint`).

    ``class_names`` default to COCO's 91 torchvision names for a 91-class model, else ``class_<i>`` (with
    ``__background__`` first for SSD); ``bn_eps`` states the backbone norm's eps. ``input_size`` is
    refused (SSD's canvas is its builder's, RetinaNet's follows each image) and ``dynamic`` changes
    nothing: the batch is always symbolic, H and W for RetinaNet only.
    """
    if common.input_size is not None:
        raise InvalidArgumentError(
            "--input-size does not apply to torchvision checkpoints (SSD's canvas is its builder's, "
            "RetinaNet's follows each image); drop it"
        )
    checkpoint = read_torchvision_checkpoint(ckpt, trust=trust_checkpoint)
    built = build_torchvision_model(checkpoint.state_dict, bn_eps=bn_eps)
    model = built.model
    ssd = built.family == "ssd"
    size = tuple(builder_keys(built)["input_size"]) if ssd else RETINANET_TRACE_WH
    names = _class_names(built, common.class_names)
    try:
        metadata = ModelMetadata(**metadata_values(built, names, source_sha256=checkpoint.sha256))
    except MetadataError as exc:
        raise ExportError(f"the runtime would refuse this model's metadata: {exc}") from exc
    shapes = [(1, 3, size[1], size[0]), (2, 3, size[1], size[0])] if ssd else RETINANET_PARITY_SHAPES
    rng = np.random.default_rng(0)
    return Prepared(
        deploy=model,
        metadata=metadata,
        output_names=OUTPUT_NAMES,
        channels=(built.num_classes, 4),
        trace_size=size,
        samples=[rng.standard_normal(shape, dtype=np.float32) for shape in shapes],
        input_shape=["batch", 3, size[1], size[0]] if ssd else ["batch", 3, "height", "width"],
        dynamic=True,
        dynamic_hw=not ssd,
        check_graph=partial(_check_rows, built=built),
        elementwise=model.backbone.scale_weight.numel() if built.architecture == "ssd300_vgg16" else 0,
        used_ema=False,
        source_format=f"torchvision {checkpoint.source_format} (stored as {checkpoint.stored_dtype})",
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
    """Rows of the outputs for a ``size_wh`` canvas by the runtime's anchor configuration of the builder:
    Σ over levels of H_l · W_l · anchors per location."""
    keys = builder_keys(built)
    if built.family == "ssd":
        anchors = boxes_per_location(keys["default_box_aspect_ratios"])
        return sum(h * w * a for (h, w), a in zip(keys["feature_map_sizes"], anchors, strict=True))
    h, w = size_wh[1] // 8, size_wh[0] // 8
    rows = 0
    for sizes, ratios in zip(keys["anchor_sizes"], keys["anchor_aspect_ratios"], strict=True):
        rows += h * w * len(sizes) * len(ratios)
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return rows


def _check_rows(graph: Any, size_wh: tuple[int, int], *, built: TorchvisionModel) -> None:
    expected = expected_rows(built, size_wh)
    widths = (built.num_classes, 4)
    for (name, dims), width in zip(onnx_export.output_dims(graph, size_wh).items(), widths, strict=True):
        if dims[1:] != [expected, width]:
            raise ExportError(
                f"output {name!r} is {dims} at W,H = {size_wh[0]},{size_wh[1]}, the anchors give [1, {expected}, "
                f"{width}]; the graph does not match torchvision {built.architecture}"
            )


_BUILDER_KEYS: dict[str, dict[str, Any]] = {**SSD_BUILDERS, "retinanet_resnet50_fpn": {}}
"""The builders' own metadata keys (beyond their family section's defaults): SSD's two builders differ;
RetinaNet's section defaults are ``retinanet_resnet50_fpn``'s."""


def builder_keys(built: TorchvisionModel) -> dict[str, Any]:
    """Every metadata key of the checkpoint's torchvision builder, JSON-ready, read from the runtime's tables
    (the one copy): the family section's defaults (common keys included), then the builder's own keys."""
    section = get_section(built.family)
    defaults = {f.name: f.default for f in fields(section)}
    keys = {**section.COMMON_DEFAULTS, **defaults, **_BUILDER_KEYS[built.architecture]}
    return json.loads(json.dumps(keys))


def family_properties(built: TorchvisionModel) -> dict[str, Any]:
    """The family's own metadata entries (unprefixed names → JSON-ready values), named after torchvision's
    attributes (:func:`builder_keys`; the transform's mean/std are the common keys, torchvision's values ×
    255). See ``docs/export.md``."""
    keys = builder_keys(built)
    return {name: keys[name] for name in get_section(built.family).KINDS}


def metadata_values(built: TorchvisionModel, class_names: Sequence[str], *, source_sha256: str) -> dict[str, Any]:
    """Every metadata entry of the exported model (schema version 2), as keyword arguments of the runtime's
    :class:`~nanodet_infer.metadata.ModelMetadata`: the common keys, then the family's
    (:func:`family_properties`, read by ``nanodet_infer/families/{ssd,retinanet}/section.py``)."""
    keys = builder_keys(built)
    ssd = built.family == "ssd"
    size = keys["input_size"] if ssd else [_ceil_to(keys["max_size"], keys["size_divisible"]), keys["min_size"]]
    architecture: dict[str, Any] = {
        "summary": f"torchvision {built.architecture}",
        "builder": built.architecture,
        **built.details,
        "norm": built.norm.describe() if built.norm else "none",
        "assumed": list(built.assumed),
        "deploy_parameters": sum(p.numel() for p in built.model.parameters()),
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "model_family": built.family,
        "producer": PRODUCER,
        "num_classes": built.num_classes,
        "class_names": list(class_names),
        "input_size": size,
        "dynamic_batch": True,
        "dynamic_hw": not ssd,
        "mean": keys["mean"],
        "std": keys["std"],
        "channel_order": keys["channel_order"],
        "input_name": onnx_export.INPUT_NAME,
        "source_sha256": source_sha256,
        "architecture": architecture,
        **family_properties(built),
    }


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


_OPTIONS = (
    Option(
        "bn_eps",
        float,
        "torchvision checkpoints: eps of the backbone's BatchNorm/FrozenBatchNorm (not stored in a checkpoint; "
        "default: the builder's, 0.001 for SSDLite, 1e-5 for RetinaNet; torchvision's own COCO RetinaNet used 0.0)",
        metavar="EPS",
    ),
    TRUST_CHECKPOINT,
)
#: PyTorch's own float32 error is measured: a deep ResNet/MobileNet rounds off more than the plain rules allow.
_PARITY = ParityRule(tolerances=parity.tolerances, rule=parity.tolerance_rule, measure_noise=True)


def _adapter(family: str, description: str) -> ExportAdapter:
    return ExportAdapter(
        name=family,
        description=description,
        recognise=lambda path: torchvision_family(path) == family,
        prepare=prepare,
        options=_OPTIONS,
        parity=_PARITY,
        assumption_fix="pass --bn-eps to state it",
    )


SSD_ADAPTER = _adapter(
    "ssd", "torchvision ssd300_vgg16 / ssdlite320_mobilenet_v3_large state_dict or train.py checkpoint"
)
RETINANET_ADAPTER = _adapter("retinanet", "torchvision retinanet_resnet50_fpn (v1) state_dict or train.py checkpoint")
