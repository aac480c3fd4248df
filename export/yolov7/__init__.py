"""YOLOv7 export adapter: upstream ``train.py`` checkpoint → deploy model → ONNX / OpenVINO IR.

The deploy model is made as upstream's reparameterization notebook + ``attempt_load`` do (lead head
only, ImplicitA/M folded, RepConv and Conv+BN fused; :func:`nanodet_models.yolov7.to_deploy`). The
file has one input ``images`` ``[B, 3, H, W]`` (RGB / 255) and one output ``output`` ``[B, N, 5 + C]``
exactly as upstream's deploy ``Detect`` returns in eval mode; batch and H/W are dynamic by default
(``detect.py``'s letterbox gives each image its own canvas, a multiple of the largest stride).
Metadata: the runtime's :class:`~nanodet_infer.metadata.ModelMetadata` with ``model_family="yolov7"`` (its keys:
``nanodet_infer/families/yolov7/section.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch
from nanodet_models.yolov7 import (
    YOLOv7,
    deploy_yaml,
    is_yolov7_checkpoint,
    load_yolov7_weights,
    read_yolov7_checkpoint,
    to_deploy,
)
from torch import nn

from nanodet_infer.errors import ExportError, InvalidArgumentError
from nanodet_infer.families.yolov7.section import LETTERBOX_COLOR
from nanodet_infer.metadata import ModelMetadata

from .. import onnx_export, parity
from ..adapter import CommonArgs, ExportAdapter, ParityRule, Prepared
from ..pipeline import export_prepared
from ..writer import PRODUCER, ExportOptions, ExportReport, check_input_multiple, check_options

NAME = "yolov7"
OUTPUT_NAME = "output"
DEFAULT_INPUT_SIZE = (640, 640)  # upstream detect.py --img-size
BOX_COLUMNS, PROBABILITY_COLUMNS = "output[xywh]", "output[obj,cls]"
#: FP32 parity bounds against PyTorch: decoded boxes amplify logit rounding by up to ~anchor size
#: (``wh = (2σ)² anchor``), so they are bounded relative to the box scale; probabilities absolutely.
BOX_RELATIVE_TOLERANCE, PROBABILITY_TOLERANCE = 1e-4, 1e-3


class Predictions(nn.Module):
    """The deploy model's first output only: ``x -> pred`` ``[B, N, 5 + C]``."""

    def __init__(self, deploy: YOLOv7) -> None:
        super().__init__()
        self.deploy = deploy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deploy(x)[0]


def recognise(path: Path) -> bool:
    """Whether ``path`` is an upstream YOLOv7 training checkpoint (pickled ``models.yolo.Model``)."""
    return is_yolov7_checkpoint(path)


def prepare(ckpt: Path, common: CommonArgs) -> Prepared:
    """Read an upstream YOLOv7 training checkpoint (EMA weights when present, as ``attempt_load``)."""
    checkpoint = read_yolov7_checkpoint(ckpt)
    model = YOLOv7(checkpoint.yaml)
    load_yolov7_weights(model, checkpoint)
    return prepare_model(
        model,
        class_names=common.class_names or checkpoint.names,
        input_size=common.input_size,
        dynamic=common.dynamic,
        source_sha256=checkpoint.sha256,
        used_ema=checkpoint.used_ema,
        source_format="yolov7 train.py",
    )


def export_model(
    model: YOLOv7,
    out: str | Path,
    *,
    class_names: list[str] | tuple[str, ...] | None = None,
    input_size: tuple[int, int] | None = None,
    options: ExportOptions | None = None,
    source_sha256: str = "",
) -> ExportReport:
    """Export an in-memory training (or deploy-YAML) :class:`YOLOv7` with its weights."""
    start = time.perf_counter()
    options = options or ExportOptions()
    check_options(out, options)
    names = class_names or tuple(f"class{i}" for i in range(model.head.nc))
    prepared = prepare_model(
        model, class_names=names, input_size=input_size, dynamic=options.dynamic, source_sha256=source_sha256
    )
    return export_prepared(ADAPTER, prepared, Path(out), options, start=start)


def training_only_parameters(model: YOLOv7) -> int:
    """Parameters the deploy model leaves out: an ``IAuxDetect``'s auxiliary layers and ``m2`` convs."""
    kept = len(deploy_yaml(model.yaml)["head"])
    aux_layers = range(len(model.yaml["backbone"]) + kept - 1, len(model.model) - 1)
    aux = sum(p.numel() for i in aux_layers for p in model.model[i].parameters())
    return aux + sum(p.numel() for p in getattr(model.head, "m2", nn.ModuleList()).parameters())


def prepare_model(
    model: YOLOv7,
    *,
    class_names: Sequence[str],
    input_size: tuple[int, int] | None,
    dynamic: bool | None,
    source_sha256: str = "",
    used_ema: bool | None = None,
    source_format: str = "in-memory",
) -> Prepared:
    """The deploy model (lead head, reparameterized) of a training :class:`YOLOv7`, ready to trace."""
    head = model.head
    if len(class_names) != head.nc:
        raise InvalidArgumentError(
            f"{len(class_names)} class names given for a model with {head.nc} classes; give exactly one name per class"
        )
    dynamic = True if dynamic is None else dynamic
    strides = tuple(int(s) for s in model.stride.tolist())
    size = tuple(int(v) for v in (input_size or DEFAULT_INPUT_SIZE))
    check_input_multiple(size, max(strides), "the model's largest stride")
    wrapper = Predictions(to_deploy(model)).eval()

    def check_rows(graph: onnx.ModelProto, size_wh: tuple[int, int]) -> None:
        rows = onnx_export.output_dims(graph, size_wh)[OUTPUT_NAME][1]
        expected = head.na * sum((size_wh[1] // s) * (size_wh[0] // s) for s in strides)
        if rows != expected:
            raise ExportError(
                f"the graph gives {rows} rows at W,H = {size_wh[0]},{size_wh[1]} but strides {list(strides)} with "
                f"{head.na} anchors give {expected}; the network's levels do not match its head"
            )

    anchors = head.anchor_grid.view(head.nl, -1).tolist()
    metadata = ModelMetadata(
        model_family=NAME,
        num_classes=head.nc,
        class_names=tuple(class_names),
        strides=strides,
        anchors=tuple(tuple(level) for level in anchors),
        input_size=size,
        dynamic_batch=dynamic,
        dynamic_hw=dynamic,
        input_name=onnx_export.INPUT_NAME,
        predictions_output=OUTPUT_NAME,
        producer=PRODUCER,
        source_sha256=source_sha256,
        architecture=_architecture(model, wrapper),
    )
    return Prepared(
        deploy=wrapper,
        metadata=metadata,
        output_names=(OUTPUT_NAME,),
        channels=(head.no,),
        trace_size=size,
        samples=image_like_inputs(parity.input_shapes(size, dynamic=dynamic, multiple=max(strides))),
        input_shape=["batch", 3, "height", "width"] if dynamic else [1, 3, size[1], size[0]],
        dynamic=dynamic,
        dynamic_hw=dynamic,
        check_graph=check_rows,
        aux_params_dropped=training_only_parameters(model),
        used_ema=used_ema,
        source_format=source_format,
    )


def image_like_inputs(shapes: list[tuple[int, int, int, int]], seed: int = 0) -> list[np.ndarray]:
    """Seeded inputs like a letterboxed photo: smooth random colours in [0, 1] (bilinear from a grid of
    one value per 8 x 8 pixels) with a grey (114 / 255) band top and bottom.

    YOLOv7 expects RGB / 255; N(0, 1) noise drives an untrained model's logits into the thousands,
    where float32 cancellation alone moves decoded boxes by pixels.
    """
    rng = np.random.default_rng(seed)
    samples = []
    for batch, channels, height, width in shapes:
        grid = rng.random((batch * channels, height // 8 + 1, width // 8 + 1), dtype=np.float32)
        planes = [cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR) for plane in grid]
        x = np.stack(planes).reshape(batch, channels, height, width)
        band = height // 8
        x[:, :, :band] = x[:, :, height - band :] = np.float32(LETTERBOX_COLOR) / np.float32(255)
        samples.append(np.ascontiguousarray(x))
    return samples


def by_column_group(run: parity.Runner) -> parity.Runner:
    """``run`` with ``output`` split into its box columns (``cx, cy, w, h``, pixels) and its
    probability columns (obj, classes), which the parity check bounds separately."""

    def split(x: np.ndarray) -> dict[str, np.ndarray]:
        out = run(x)[OUTPUT_NAME]
        return {BOX_COLUMNS: out[..., :4], PROBABILITY_COLUMNS: out[..., 4:]}

    return split


def tolerances(cases: list[parity.ParityCase], *, fp16: bool, noise: None = None) -> dict[str, float]:
    """Max |Δ| allowed: boxes ``1e-4 x max(1, max |box|)`` pixels, probabilities ``1e-3`` (FP32);
    FP16 weights: :func:`parity.tolerances`' FP16 rule (``noise``: unused, PyTorch's own error is not measured)."""
    if fp16:
        return parity.tolerances(cases, fp16=True)
    scale = max((case.max_abs_reference[BOX_COLUMNS] for case in cases), default=1.0)
    return {BOX_COLUMNS: BOX_RELATIVE_TOLERANCE * max(1.0, scale), PROBABILITY_COLUMNS: PROBABILITY_TOLERANCE}


def tolerance_rule(*, fp16: bool, noise: bool = False) -> str:
    """:func:`tolerances`' rule in words (``noise``: unused, PyTorch's own error is not measured)."""
    if fp16:
        return parity.tolerance_rule(fp16=True)
    return (
        f"tolerance {BOX_RELATIVE_TOLERANCE:.0e} x max(1, max |box|) px for boxes, "
        f"{PROBABILITY_TOLERANCE:.0e} for probabilities"
    )


def _architecture(model: YOLOv7, wrapper: Predictions) -> dict:
    d = model.yaml
    head = type(model.head).__name__
    return {
        "summary": f"YOLOv7 ({len(model.model)} layers, {head} → Detect, width x{d['width_multiple']}, "
        f"depth x{d['depth_multiple']})",
        "training_head": head,
        "width_multiple": d["width_multiple"],
        "depth_multiple": d["depth_multiple"],
        "deploy_parameters": sum(p.numel() for p in wrapper.parameters()),
    }


ADAPTER = ExportAdapter(
    name=NAME,
    description="YOLOv7 (WongKinYiu/yolov7): train.py / train_aux.py .pt checkpoints (pickled models)",
    recognise=recognise,
    prepare=prepare,
    parity=ParityRule(view=by_column_group, tolerances=tolerances, rule=tolerance_rule),
    ema_weights="EMA (ema)",
)
