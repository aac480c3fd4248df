"""What users run without nanodet-infer: the training-side PyTorch model and upstream's post-process.

:func:`torch_postprocess` follows upstream ``NanoDetPlusHead.get_bboxes`` + ``multiclass_nms``: decode
*every* prior (softmax over the box bins, distance-to-box, clamp to the canvas), sigmoid the class
logits, keep every (prior, class) pair above the score threshold, class-aware NMS, keep the best
``max_detections``. torchvision is not a dependency, so NMS is written here in torch, vectorised:
greedy NMS is the unique solution of ``keep[i] = not any(keep[j] and iou[j, i] > t for j < i)``
(boxes sorted by score), found block by block by iterating that rule until nothing changes.
Like upstream's ``batched_nms``, IoU is computed on boxes shifted by ``class * (max + 1)``, in one NMS
below 10000 candidates and one class at a time above.

Importing this module imports torch; :mod:`benchmarks.latency` imports it only when torch is installed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from nanodet_infer.families.nanodet_plus.resize import boxes_to_original, plan_input, preprocess
from nanodet_infer.metadata import ModelMetadata

#: From this many candidates on, NMS runs per class (upstream's ``batched_nms`` ``split_thr``).
_SPLIT_THRESHOLD = 10000
#: Boxes per block of the blocked greedy NMS.
_BLOCK = 64
#: The threshold upstream's demo ``Predictor`` post-processes at inside the head (its model config's
#: ``test_cfg``/``get_bboxes`` default); a display threshold is applied afterwards.
UPSTREAM_HEAD_THRESHOLD = 0.05


def priors(width: int, height: int, strides: tuple[int, ...]) -> torch.Tensor:
    """Upstream's center priors ``[N, 3]`` (x, y, stride), level by level, row-major."""
    levels = []
    for stride in strides:
        h, w = -(-height // stride), -(-width // stride)
        ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
        levels.append(torch.stack([xs.flatten(), ys.flatten(), torch.full((h * w,), stride)], dim=-1))
    return torch.cat(levels).float()


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``[N, 4]`` and ``[M, 4]`` xyxy boxes (no +1, as torchvision)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices kept by greedy NMS, best score first (torchvision ``nms`` semantics).

    Boxes are visited in blocks of :data:`_BLOCK` in score order: a block first loses every box that an
    already kept box overlaps (IoU against the kept boxes only, like torchvision's loop skips suppressed
    ones), then the greedy rule is iterated inside the block until it stops changing.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_boxes = boxes[order]
    count = order.numel()
    keep = torch.zeros(count, dtype=torch.bool)
    kept_boxes = sorted_boxes[:0]
    for start in range(0, count, _BLOCK):
        block_boxes = sorted_boxes[start : start + _BLOCK]
        alive = ~(box_iou(kept_boxes, block_boxes) > iou_threshold).any(dim=0)
        inside = (box_iou(block_boxes, block_boxes) > iou_threshold).triu(diagonal=1)
        block = alive
        while True:
            updated = alive & ~(inside & block[:, None]).any(dim=0)
            if torch.equal(updated, block):
                break
            block = updated
        keep[start : start + _BLOCK] = block
        kept_boxes = torch.cat([kept_boxes, block_boxes[block]])
    return order[keep]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-aware NMS: indices kept, sorted by descending score."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    # As upstream: IoU on boxes shifted by class (float32), one NMS below split_thr, per class above it.
    shifted = boxes + (labels.to(boxes.dtype) * (boxes.max() + 1))[:, None]
    if boxes.shape[0] < _SPLIT_THRESHOLD:
        keep = nms(shifted, scores, iou_threshold)
    else:
        parts = []
        for label in torch.unique(labels):
            index = torch.nonzero(labels == label).flatten()
            parts.append(index[nms(shifted[index], scores[index], iou_threshold)])
        keep = torch.cat(parts)
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


@torch.inference_mode()
def torch_postprocess(
    logits: torch.Tensor,
    *,
    num_classes: int,
    reg_max: int,
    strides: tuple[int, ...],
    canvas_size: tuple[int, int],
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    scores_are_logits: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upstream-style post-process of one image's raw output ``[N, C + 4*(reg_max+1)]``.

    The class part holds logits (upstream's PyTorch output) or, with ``scores_are_logits=False``,
    probabilities (our exported models' ``scores``, to compare post-processes on identical inputs).
    Returns ``(xyxy [K, 4], scores [K], class_ids [K])`` as numpy arrays, boxes in canvas pixels.
    """
    width, height = canvas_size
    cls_logits, box_logits = logits.split([num_classes, 4 * (reg_max + 1)], dim=-1)
    center = priors(width, height, strides)
    bins = torch.arange(reg_max + 1, dtype=torch.float32)
    distances = (box_logits.reshape(-1, 4, reg_max + 1).softmax(-1) @ bins) * center[:, 2:3]
    x1 = (center[:, 0] - distances[:, 0]).clamp(0, width)
    y1 = (center[:, 1] - distances[:, 1]).clamp(0, height)
    x2 = (center[:, 0] + distances[:, 2]).clamp(0, width)
    y2 = (center[:, 1] + distances[:, 3]).clamp(0, height)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    scores = cls_logits.sigmoid() if scores_are_logits else cls_logits
    valid = scores > score_threshold
    prior_index, labels = valid.nonzero(as_tuple=True)
    cand_boxes, cand_scores = boxes[prior_index], scores[prior_index, labels]
    keep = batched_nms(cand_boxes, cand_scores, labels, iou_threshold)[:max_detections]
    return cand_boxes[keep].numpy(), cand_scores[keep].numpy(), labels[keep].numpy()


class TorchPipeline:
    """Images → detections with the PyTorch model: what a user of upstream's code runs on a CPU.

    Preprocessing is ours (numpy/cv2, identical to upstream's); inference is the training-side
    ``NanoDetPlus.forward`` (class logits); post-processing is :func:`torch_postprocess` at upstream's head
    threshold (:data:`UPSTREAM_HEAD_THRESHOLD`, or ``score_threshold`` when lower), then the detections above
    ``score_threshold`` are kept, as upstream's demo ``Predictor`` + a display threshold do, and boxes are
    mapped back to the original image. Calling it returns ``(results, stage_ms)`` where
    ``results`` holds one ``(xyxy, scores, class_ids)`` per image.
    """

    label = "PyTorch (training model) + torch post-process"
    """The benchmark row's name."""

    def __init__(self, model: torch.nn.Module, metadata: ModelMetadata, score_threshold: float,
                 iou_threshold: float = 0.6, max_detections: int = 100) -> None:
        self.model = model.eval()
        self.meta = metadata
        self.score_threshold = score_threshold
        self.options = {"num_classes": metadata.num_classes, "reg_max": metadata.reg_max,
                        "strides": metadata.strides,
                        "score_threshold": min(UPSTREAM_HEAD_THRESHOLD, score_threshold),
                        "iou_threshold": iou_threshold, "max_detections": max_detections}

    def __call__(self, images: list[np.ndarray]) -> tuple[list[tuple[np.ndarray, ...]], dict[str, float]]:
        meta = self.meta
        start = time.perf_counter()
        plans = [plan_input((im.shape[1], im.shape[0]), meta.input_size, keep_ratio=meta.keep_ratio,
                            dynamic_hw=False) for im in images]
        batch = np.stack([preprocess(im, plan, meta.mean, meta.std, channel_order=meta.channel_order,
                                     arithmetic=meta.resize_arithmetic)
                          for im, plan in zip(images, plans, strict=True)])
        inferred = time.perf_counter()
        with torch.inference_mode():
            output = self.model(torch.from_numpy(batch))
        decoded = time.perf_counter()
        results: list[tuple[np.ndarray, ...]] = []
        for row, plan in zip(output, plans, strict=True):
            xyxy, scores, labels = torch_postprocess(row, canvas_size=plan.canvas_size, **self.options)
            keep = scores > self.score_threshold  # upstream's Predictor: 0.05 in the head, then the display filter
            results.append((boxes_to_original(xyxy[keep], plan), scores[keep], labels[keep]))
        done = time.perf_counter()
        stages: dict[str, Any] = {"preprocess": (inferred - start) * 1e3, "inference": (decoded - inferred) * 1e3,
                                  "postprocess": (done - decoded) * 1e3}
        return results, stages
