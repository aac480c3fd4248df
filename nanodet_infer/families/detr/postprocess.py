"""DETR's ``PostProcess`` in numpy, then the runtime's documented extras (clip, threshold, sort, cap).

:func:`post_process` is official ``PostProcess`` for one image: ``prob = softmax(logits)`` over all ``C + 1``
(no-object stays in the denominator), ``scores, labels = prob[:, :-1].max / argmax`` (label 0 is a valid
class), boxes ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2) * (W, H, W, H)`` of the *original* image, float32,
all queries in query order. It equals the reference's labels and boxes bit for bit and its scores within a few
float32 ulps (numpy's ``exp`` vs torch's vectorised one).

:func:`select` is what detect/eval add: clip to ``[0, W] x [0, H]`` when asked (official PostProcess does not
clip; a box may extend a few pixels past the image), keep ``score > score_threshold`` (the demo's strict
``> 0.7``), sort by score descending (stable: query order on ties), keep ``max_detections``. There is no NMS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import IncompatibleModelError


def post_process(
    logits: np.ndarray, boxes: np.ndarray, image_size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``logits [Q, C + 1]``, ``boxes [Q, 4]`` (cxcywh, relative), ``image_size`` ``(W, H)`` →
    ``(scores float32 [Q], labels int64 [Q], xyxy float32 [Q, 4])`` in original pixels, query order."""
    logits = np.asarray(logits, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[1] < 2 or boxes.shape != (len(logits), 4):
        raise IncompatibleModelError(
            f"DETR outputs must be [Q, C + 1] logits and [Q, 4] boxes per image, got {logits.shape} and {boxes.shape}"
        )
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    prob = exp / exp.sum(axis=1, keepdims=True)
    classes = prob[:, :-1]
    labels = classes.argmax(axis=1).astype(np.int64)
    scores = classes[np.arange(len(classes)), labels]
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    half = np.float32(0.5)
    xyxy = np.stack([cx - half * w, cy - half * h, cx + half * w, cy + half * h], axis=1)
    width, height = np.float32(image_size[0]), np.float32(image_size[1])
    xyxy *= np.array([width, height, width, height], dtype=np.float32)
    return scores, labels, xyxy


def select(
    scores: np.ndarray,
    labels: np.ndarray,
    xyxy: np.ndarray,
    image_size: Sequence[int],
    score_threshold: float,
    max_detections: int,
    clip: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xyxy [K, 4], scores [K], labels [K])``: clipped if ``clip``, ``score > score_threshold``, best first."""
    if clip:
        xyxy = xyxy.copy()
        np.clip(xyxy[:, 0::2], 0, np.float32(image_size[0]), out=xyxy[:, 0::2])
        np.clip(xyxy[:, 1::2], 0, np.float32(image_size[1]), out=xyxy[:, 1::2])
    keep = np.flatnonzero(scores > np.float32(score_threshold))
    order = keep[np.argsort(-scores[keep], kind="stable")][:max_detections]
    return xyxy[order], scores[order], labels[order]
