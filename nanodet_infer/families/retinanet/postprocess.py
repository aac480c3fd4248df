"""RetinaNet head outputs of one image → detections: torchvision's ``RetinaNet.postprocess_detections``.

Per pyramid level, over the level's ``[n, C]`` logits flattened anchor-major:

1. ``score = sigmoid(logit)`` (float32); keep ``score > score_threshold`` (float32 compare) *before* top-k;
2. the ``topk_candidates`` best of those, over all classes of the level together, by score descending;
3. ``label = index % C`` (label 0 is a real class here, not a background), ``anchor = index // C``;
4. only those anchors are decoded (:func:`..torchvision_common.decode_boxes`, weights ``(1, 1, 1, 1)``
   by default) and clipped to the resized (unpadded) image.

Then ``batched_nms`` over all levels (:func:`..torchvision_common.torchvision_batched_nms`) and the first
``max_detections``. Ties in score, unordered in torchvision, are broken by index.

The sigmoid is only evaluated where the logit can pass: logits are first compared with the threshold's
logit less a margin far larger than float32 sigmoid's rounding error, so the result is the same as
evaluating every entry (about 17 M of them for a 1333-px image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...errors import InvalidArgumentError
from ..torchvision_common import DetectionParams, clip_boxes, decode_boxes, top_k, torchvision_batched_nms


def _logit_floor(score_threshold: float) -> float:
    """A logit below which ``float32 sigmoid(x) > score_threshold`` cannot hold (-inf: no such bound)."""
    if score_threshold <= 0:
        return -math.inf
    # sigmoid's float32 error (a few ulps, relative) moves the logit by ~1e-7 / (1 - p); the margin is >> that
    return math.log(score_threshold) - math.log1p(-score_threshold) - 1e-3 - 1e-4 / (1 - score_threshold)


def _level_candidates(
    logits: np.ndarray, score_threshold: float, topk_candidates: int, multi_label: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (``anchor * C + class``) and scores of one level's top-k candidates, score descending.

    ``multi_label=False``: only each anchor's best class (its largest finite logit; the lowest on a tie)."""
    flat = logits.reshape(-1)
    if multi_label:
        index = np.flatnonzero(flat > _logit_floor(score_threshold))
    else:
        top_class = logits.argmax(axis=1)  # NaN would win: such rows are redone without their NaNs
        undefined = np.flatnonzero(np.isnan(logits[np.arange(len(logits)), top_class]))
        if len(undefined):
            top_class[undefined] = np.where(np.isnan(logits[undefined]), -np.inf, logits[undefined]).argmax(axis=1)
        index = np.arange(len(logits)) * logits.shape[1] + top_class
        index = index[flat[index] > _logit_floor(score_threshold)]
    with np.errstate(over="ignore"):
        scores = np.float32(1) / (np.float32(1) + np.exp(-flat[index]))
    passed = scores > np.float32(score_threshold)
    index, scores = index[passed], scores[passed]
    best = top_k(scores, topk_candidates)
    return index[best], scores[best]


def postprocess(
    cls_logits: np.ndarray,
    bbox_regression: np.ndarray,
    anchors: np.ndarray,
    anchors_per_level: Sequence[int],
    params: DetectionParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one image.

    ``cls_logits`` float32 ``[N, C]`` raw logits, ``bbox_regression`` ``[N, 4]`` raw coder deltas,
    ``anchors`` ``[N, 4]`` and ``anchors_per_level`` from :func:`.anchors.anchors` (the head's order).
    Returns ``(xyxy float32 [K, 4]`` network-input pixels, ``scores float32 [K]``, ``labels int64 [K])``,
    in NMS order (score descending).
    """
    cls_logits = np.asarray(cls_logits, dtype=np.float32)
    bbox_regression = np.asarray(bbox_regression, dtype=np.float32)
    if cls_logits.ndim != 2 or bbox_regression.shape != (len(cls_logits), 4):
        raise InvalidArgumentError(
            f"expected cls_logits [N, C] and bbox_regression [N, 4], got {cls_logits.shape} and {bbox_regression.shape}"
        )
    if not len(cls_logits) == len(anchors) == sum(anchors_per_level):
        raise InvalidArgumentError(
            f"{len(cls_logits)} head rows for {len(anchors)} anchors ({sum(anchors_per_level)} over the levels): "
            "the model output does not match the anchors of this input size"
        )
    num_classes = cls_logits.shape[1]
    rows, labels, scores = [], [], []
    start = 0
    for count in anchors_per_level:
        index, level_scores = _level_candidates(
            cls_logits[start : start + count], params.score_threshold, params.topk_candidates, params.multi_label
        )
        level_rows, level_labels = np.divmod(index, num_classes)
        rows.append(level_rows + start)
        labels.append(level_labels)
        scores.append(level_scores)
        start += count
    rows, labels, scores = np.concatenate(rows), np.concatenate(labels), np.concatenate(scores)
    boxes = decode_boxes(bbox_regression[rows], anchors[rows], params.coder_weights, params.bbox_xform_clip)
    clip_boxes(boxes, params.image_size)
    keep = torchvision_batched_nms(boxes, scores, labels, params.iou_threshold, params.max_detections)
    return boxes[keep], scores[keep], labels[keep].astype(np.int64)
