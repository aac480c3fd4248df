"""DETR export adapter: facebookresearch/detr checkpoint (hub or ``main.py`` layout) → ONNX / OpenVINO IR.

The deploy graph is :class:`nanodet_models.detr.DETR` without a mask input (one unpadded image per batch
entry; the runtime batches only equal sizes): input ``images [B, 3, H, W]`` (ImageNet-normalised RGB),
outputs the last decoder layer's ``pred_logits [B, Q, C + 1]`` and ``pred_boxes [B, Q, 4]``; batch, H and W
are dynamic. Metadata: ``model_family="detr"`` with the eval resize (800 / 1333), ImageNet mean/std, RGB,
the no-object index and the class names (COCO's 91 with "N/A" for 91-class checkpoints). The parity check
runs against PyTorch at the trace size, a batch of two, and one size that is not a multiple of 32.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from nanodet_models.detr import read_detr_checkpoint
from nanodet_models.detr.model import DetrArchitecture
from nanodet_models.sniff import pickle_names
from nanodet_models.torchvision_common import COCO_V91_NAMES
from torch import nn

from nanodet_infer.errors import InvalidArgumentError
from nanodet_infer.families.detr.section import IMAGENET_MEAN_255, IMAGENET_STD_255
from nanodet_infer.metadata import ModelMetadata

from .. import onnx_export, parity
from ..adapter import TRUST_CHECKPOINT, CommonArgs, ExportAdapter, Option, ParityRule, Prepared
from ..writer import PRODUCER

NAME = "detr"
LOGITS, BOXES = "pred_logits", "pred_boxes"
DEFAULT_TRACE_SIZE = (1333, 800)
"""(W, H) the graph is traced and checked at: the eval size's bound (the file has dynamic H/W)."""
_KEYS = ("query_embed.weight", "transformer.decoder.norm.weight", "class_embed.weight")


class Deploy(nn.Module):
    """``images -> (pred_logits, pred_boxes)`` of the last decoder layer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with warnings.catch_warnings():
            # nn.MultiheadAttention compares static sizes (embed dim, head dim): constants in the trace, rightly
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            return self.model(x)


#: DETR's 91 class indices = COCO category ids: torchvision's COCO names with "N/A" for index 0 (DETR has no
#: background class there; its no-object logit is the extra last one).
DETR_COCO_NAMES: tuple[str, ...] = ("N/A", *COCO_V91_NAMES[1:])

def recognise(path: Path) -> bool:
    """Whether the pickle of ``path`` names facebookresearch/detr's keys (nothing is executed)."""
    strings = pickle_names(path).strings
    return all(k in strings or "module." + k in strings for k in _KEYS)


def prepare(
    ckpt: Path,
    common: CommonArgs,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    trust_checkpoint: bool = False,
) -> Prepared:
    """Read a DETR checkpoint, infer its architecture and return the deploy model with its metadata."""
    if common.dynamic is False:  # refused before the checkpoint is read
        raise InvalidArgumentError(
            "DETR is exported with dynamic H/W only (each image keeps its own eval size); drop --static"
        )
    checkpoint = read_detr_checkpoint(ckpt, trust=trust_checkpoint)
    arch = checkpoint.config.arch
    names = common.class_names
    if names is None:
        names = DETR_COCO_NAMES if arch.num_classes == 91 else tuple(f"class_{i}" for i in range(arch.num_classes))
    if len(names) != arch.num_classes:
        raise InvalidArgumentError(
            f"{len(names)} class names given for a DETR with {arch.num_classes} classes (plus no-object); "
            "give one name per class"
        )
    size = tuple(int(v) for v in (common.input_size or DEFAULT_TRACE_SIZE))
    section = {k: v for k, v in (("min_size", min_size), ("max_size", max_size)) if v is not None}
    metadata = ModelMetadata(
        model_family=NAME,
        num_classes=arch.num_classes,
        class_names=tuple(names),
        no_object_index=arch.num_classes,
        num_queries=arch.num_queries,
        logits_output=LOGITS,
        boxes_output=BOXES,
        input_size=size,
        dynamic_batch=True,
        dynamic_hw=True,
        mean=IMAGENET_MEAN_255,
        std=IMAGENET_STD_255,
        channel_order="RGB",
        input_name=onnx_export.INPUT_NAME,
        producer=PRODUCER,
        source_sha256=checkpoint.sha256,
        architecture={
            **dataclasses.asdict(arch),
            "summary": _summary(arch),
            "stored_dtype": checkpoint.stored_dtype,
            "assumed": list(checkpoint.config.assumed),  # facts no tensor shape shows (args absent)
        },
        **section,
    )
    shapes = [*parity.input_shapes(size, dynamic=True), (1, 3, size[1] - 46, size[0] - 1)]
    return Prepared(
        deploy=Deploy(checkpoint.build()).eval(),
        metadata=metadata,
        output_names=(LOGITS, BOXES),
        channels=(arch.num_classes + 1, 4),
        trace_size=size,
        samples=image_like_inputs(shapes),
        input_shape=["batch", 3, "height", "width"],
        dynamic=True,
        dynamic_hw=True,
        source_format=f"detr {checkpoint.source_format}",
        count_weights=False,
        used_ema=False,
    )


def _summary(arch: DetrArchitecture) -> str:
    """E.g. ``DETR resnet18, hidden 128, 8 heads, 2+2 layers, 100 queries``."""
    dc5 = "-DC5" if arch.dilation else ""
    norm = ", pre-norm" if arch.pre_norm else ""
    return (
        f"DETR {arch.backbone}{dc5}, hidden {arch.hidden_dim}, {arch.nheads} heads, "
        f"{arch.enc_layers}+{arch.dec_layers} layers{norm}, {arch.num_queries} queries"
    )


def image_like_inputs(shapes: list[tuple[int, int, int, int]], seed: int = 0) -> list[np.ndarray]:
    """Seeded ImageNet-normalised smooth colour fields (one random value per 16 x 16 pixels, bilinear):
    DETR's attention on N(0, 1) noise is far from what images give."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(IMAGENET_MEAN_255, dtype=np.float32)[:, None, None] / np.float32(255)
    std = np.asarray(IMAGENET_STD_255, dtype=np.float32)[:, None, None] / np.float32(255)
    samples = []
    for batch, channels, height, width in shapes:
        grid = rng.random((batch * channels, height // 16 + 1, width // 16 + 1), dtype=np.float32)
        planes = [cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR) for plane in grid]
        x = (np.stack(planes).reshape(batch, channels, height, width) - mean) / std
        samples.append(np.ascontiguousarray(x, dtype=np.float32))
    return samples


ADAPTER = ExportAdapter(
    name=NAME,
    description="facebookresearch/detr (hub {'model': ...} or main.py checkpoint.pth; ResNet-18/34/50/101, DC5)",
    recognise=recognise,
    prepare=prepare,
    options=(
        Option("min_size", int, "DETR eval resize: short side (default 800)", metavar="N"),
        Option("max_size", int, "DETR eval resize: long-side bound (default 1333)", metavar="N"),
        TRUST_CHECKPOINT,
    ),
    parity=ParityRule(measure_noise=True),
    assumption_fix="a hub checkpoint does not store them; export main.py's checkpoint.pth (its args do) if the "
    "model was trained otherwise",
)
