"""SSD / SSDLite head outputs of one image → detections: torchvision's ``SSD.postprocess_detections``.

1. Softmax over all ``C`` logits of each anchor (float32); label 0 is the background and is skipped.
2. Every anchor is decoded (:func:`..torchvision_common.decode_boxes`, weights ``(10, 10, 5, 5)`` by
   default) and clipped to the resized image.
3. For each label ``1 .. C-1`` in order: the anchors with ``score > score_threshold`` (float32 compare),
   then the ``topk_candidates`` best of them by score, descending.
4. ``batched_nms`` over the concatenation (:func:`..torchvision_common.torchvision_batched_nms`), the
   first ``max_detections``.

Labels are torchvision's: class ``c`` of the head is label ``c`` (so ``class_names[0]`` names the
background). Ties in score, unordered in torchvision, are broken by anchor index.
"""

from __future__ import annotations

import numpy as np

from ...errors import InvalidArgumentError
from ..torchvision_common import DetectionParams, clip_boxes, decode_boxes, torchvision_batched_nms

BACKGROUND_LABEL = 0
"""torchvision's SSD treats class 0 of the head as the background (``range(1, num_classes)``)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """float32 softmax over the last axis, as torch computes it: ``exp(x - max) * (1 / sum)``."""
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e * (np.float32(1) / e.sum(axis=-1, keepdims=True, dtype=np.float32))


def postprocess(
    cls_logits: np.ndarray, bbox_regression: np.ndarray, anchors: np.ndarray, params: DetectionParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one image.

    ``cls_logits`` float32 ``[A, C]`` raw logits (class 0 = background), ``bbox_regression`` ``[A, 4]`` raw
    coder deltas, ``anchors`` ``[A, 4]`` default boxes (:func:`.default_boxes.default_boxes`), all in the
    head's anchor order. Returns ``(xyxy float32 [K, 4]`` network-input pixels, ``scores float32 [K]``,
    ``labels int64 [K])``, in NMS order (score descending).
    """
    cls_logits = np.asarray(cls_logits, dtype=np.float32)
    bbox_regression = np.asarray(bbox_regression, dtype=np.float32)
    if cls_logits.ndim != 2 or cls_logits.shape[1] < 2 or bbox_regression.shape != (len(cls_logits), 4):
        raise InvalidArgumentError(
            f"expected cls_logits [A, C>=2] and bbox_regression [A, 4], got {cls_logits.shape} and "
            f"{bbox_regression.shape}"
        )
    if len(cls_logits) != len(anchors):
        raise InvalidArgumentError(
            f"{len(cls_logits)} head rows for {len(anchors)} default boxes: the model output does not match "
            "the default-box configuration"
        )
    scores = softmax(cls_logits)
    boxes = decode_boxes(bbox_regression, anchors, params.coder_weights, params.bbox_xform_clip)
    clip_boxes(boxes, params.image_size)
    # (label, anchor) pairs above the threshold, label-major then anchor ascending, like the label loop
    foreground = scores[:, BACKGROUND_LABEL + 1 :].T
    if not params.multi_label:  # only each anchor's best foreground label (the lowest on a tie)
        best = foreground.argmax(axis=0)
        foreground = np.where(np.arange(len(foreground))[:, None] == best[None, :], foreground, np.float32(0))
    labels, rows = np.nonzero(foreground > np.float32(params.score_threshold))
    labels += BACKGROUND_LABEL + 1
    cand_scores = scores[rows, labels]
    order = np.lexsort((-cand_scores, labels))  # per label by score descending; ties: anchor ascending
    labels, rows, cand_scores = labels[order], rows[order], cand_scores[order]
    first = np.searchsorted(labels, labels)  # position of each label's best candidate
    top = np.arange(len(labels)) - first < params.topk_candidates
    labels, rows, cand_scores = labels[top], rows[top], cand_scores[top]
    keep = torchvision_batched_nms(boxes[rows], cand_scores, labels, params.iou_threshold, params.max_detections)
    return boxes[rows[keep]], cand_scores[keep], labels[keep].astype(np.int64)
