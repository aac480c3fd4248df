"""Straightforward reference implementations of upstream's decode and NMS, for tests only.

They follow upstream NanoDet (``NanoDetPlusHead.get_bboxes``, ``multiclass_nms`` → ``batched_nms`` →
torchvision ``nms``) one step at a time, without any of the runtime's shortcuts.
"""

from __future__ import annotations

import numpy as np


def reference_decode(box_dist: np.ndarray, priors: np.ndarray, reg_max: int, canvas: tuple[int, int]) -> np.ndarray:
    """Every prior: float64 softmax per side (infinite logits: their limit), expectation, distance → box, clip.

    ``box_dist`` ``[N, 4*(reg_max+1)]``, ``priors`` ``[N, 3]`` (x, y, stride), ``canvas`` ``(W, H)``;
    returns float64 xyxy ``[N, 4]``. Rows with a NaN logit give NaN boxes.
    """
    x = box_dist.astype(np.float64).reshape(-1, 4, reg_max + 1)
    peak = x.max(axis=2, keepdims=True)
    top = x == peak
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.where(np.isinf(peak), top.astype(np.float64), np.exp(x - peak))
    p /= p.sum(axis=2, keepdims=True)
    d = (p * np.arange(reg_max + 1)).sum(axis=2) * priors[:, 2:3]
    boxes = np.concatenate([priors[:, :2] - d[:, :2], priors[:, :2] + d[:, 2:]], axis=1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, canvas[0])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, canvas[1])
    return boxes


def upstream_nms(boxes, scores, class_ids, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Upstream ``batched_nms`` + torchvision's CPU ``nms`` kernel, one candidate at a time, in numpy.

    float32 throughout: ``boxes + (labels * (boxes.max() + 1))[:, None]``, areas and IoU of the shifted
    boxes, ``ovr > iou_threshold`` as a double; a stable sort by score. Returns the kept indices (int64),
    best score first, at most ``max_keep``.
    """
    boxes = np.asarray(boxes, np.float32)
    if not len(boxes):
        return np.zeros(0, np.int64)
    step = boxes.max() + np.float32(1)
    shifted = boxes + (np.asarray(class_ids).astype(np.float32) * step)[:, None]
    x1, y1, x2, y2 = shifted.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    suppressed = np.zeros(len(boxes), bool)
    kept: list[int] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for n, i in enumerate(order):
            if max_keep is not None and len(kept) >= max_keep:
                break
            if suppressed[i]:
                continue
            kept.append(int(i))
            rest = order[n + 1 :]
            w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
            h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
            inter = w * h
            ovr = inter / (areas[i] + areas[rest] - inter)
            assert ovr.dtype == np.float32
            suppressed[rest[ovr.astype(np.float64) > iou_threshold]] = True
    return np.array(kept, dtype=np.int64)
