"""Raw head outputs of one image → detections in network-input pixels (upstream ``get_bboxes``).

Upstream decodes every prior, then ``multiclass_nms``: every (prior, class) pair whose score is
``> score_threshold`` is a candidate, class-aware NMS on boxes shifted by ``class_id * (max_coordinate + 1)``
(:mod:`nanodet_infer.nms`), the best ``max_detections`` by score. Here (``candidate_first``) only the priors that have
a candidate are decoded, and when there are many of them only those NMS visits plus the few that bound
``max_coordinate`` (:func:`_bounded_max_coordinate`); NMS stops once ``max_detections`` boxes are kept.
The results are identical because decoding is row-wise and bit-exact per row (see :mod:`.decode`).
``candidate_first=False`` decodes every prior first and is the reference path.

Non-finite model outputs never reach the result: a NaN or infinite score is not a candidate (a score
is a probability; with ``multi_label=False`` a prior's best class is its best finite one), and a
candidate whose box logits are undefined (NaN) is dropped by NMS and left out of ``max_coordinate``;
infinite box logits decode to the softmax's limit (:func:`.decode.integral`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import InvalidArgumentError
from ...nms import greedy_nms, max_coordinate
from .decode import decode_boxes

_EAGER_ROWS = 1024  # up to this many priors with a candidate are decoded up front
_BOUND_CHUNK = 64  # rows decoded at a time by _bounded_max_coordinate


def _bounded_max_coordinate(
    rows: np.ndarray, box_dist: np.ndarray, priors: np.ndarray, reg_max: int, canvas_size: Sequence[int]
) -> np.float32:
    """:func:`nanodet_infer.nms.max_coordinate` of the decoded boxes of prior ``rows``, decoding as few rows as it can.

    A decoded box is clamped to the canvas and has ``x2 >= x1``, ``y2 >= y1`` (side distances are
    expectations over bins ``0..reg_max``, never negative), so its largest coordinate is ``x2`` or ``y2``,
    at most ``min(W, x + reg_max * s)`` or ``min(H, y + reg_max * s)``. Rows are decoded in descending
    order of that bound (padded before clamping, so float32 rounding cannot exceed it), a chunk at a time,
    until the largest coordinate found reaches the next row's bound. Same value as decoding every row.
    """
    width, height = float(canvas_size[0]), float(canvas_size[1])
    x, y, stride = (priors[rows, i].astype(np.float64) for i in range(3))
    reach = stride * reg_max
    bound = np.maximum(
        np.minimum(width, (x + reach) * (1 + 1e-5) + 1e-3), np.minimum(height, (y + reach) * (1 + 1e-5) + 1e-3)
    )
    order = np.argsort(-bound, kind="stable")
    best = np.float32(0)
    for start in range(0, len(order), _BOUND_CHUNK):
        if best >= bound[order[start]]:
            break
        chunk = rows[order[start : start + _BOUND_CHUNK]]
        best = max(best, max_coordinate(decode_boxes(box_dist[chunk], priors[chunk], reg_max, canvas_size)))
    return best


def _check(scores: np.ndarray, box_dist: np.ndarray, priors: np.ndarray, reg_max: int) -> None:
    if scores.ndim != 2 or box_dist.ndim != 2 or priors.ndim != 2 or priors.shape[1] != 3:
        raise InvalidArgumentError(
            f"expected scores [N, C], box_dist [N, 4*(reg_max+1)], priors [N, 3]; got {scores.shape}, "
            f"{box_dist.shape}, {priors.shape}"
        )
    if not len(scores) == len(box_dist) == len(priors):
        raise InvalidArgumentError(
            f"{len(scores)} score rows, {len(box_dist)} box rows and {len(priors)} priors: the model output does "
            "not match the input size (priors are made from the canvas size and strides)"
        )
    if box_dist.shape[1] != 4 * (reg_max + 1):
        raise InvalidArgumentError(
            f"box_dist has {box_dist.shape[1]} channels but reg_max={reg_max} needs {4 * (reg_max + 1)}"
        )


def postprocess(
    scores: np.ndarray,
    box_dist: np.ndarray,
    priors: np.ndarray,
    *,
    reg_max: int,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int | None,
    canvas_size: Sequence[int],
    multi_label: bool = True,
    candidate_first: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode and NMS one image's outputs.

    ``scores`` ``[N, C]`` probabilities (already sigmoided), ``box_dist`` ``[N, 4*(reg_max+1)]`` raw DFL
    logits (side order l, t, r, b), ``priors`` ``[N, 3]`` (x, y, stride) from :func:`.decode.make_priors`,
    ``canvas_size`` ``(W, H)`` of the network input. A (prior, class) pair is a candidate when its score is
    ``> score_threshold`` (compared in float32, as upstream's torch does); with ``multi_label=False`` only
    each prior's best class can be (upstream's C++ demos). ``max_detections=None`` keeps all.

    Returns ``(xyxy float32 [K, 4]`` network-input pixels, ``scores float32 [K]``, ``class_ids int64 [K])``,
    sorted by score descending.
    """
    scores = np.asarray(scores, dtype=np.float32)
    box_dist = np.asarray(box_dist, dtype=np.float32)
    priors = np.asarray(priors, dtype=np.float32)
    _check(scores, box_dist, priors, reg_max)
    if not 0.0 <= iou_threshold <= 1.0 or not 0.0 <= score_threshold <= 1.0:
        raise InvalidArgumentError(
            f"score_threshold and iou_threshold must lie in [0, 1], got {score_threshold} and {iou_threshold}"
        )
    if max_detections is not None and max_detections < 1:
        raise InvalidArgumentError(f"max_detections must be >= 1 (or None for no limit), got {max_detections}")
    threshold = np.float32(score_threshold)
    num_classes = scores.shape[1]
    if multi_label:  # every (prior, class) pair above the threshold, prior-major like upstream's nonzero()
        pairs = np.flatnonzero(scores > threshold)  # NaN is never > threshold
        cand_priors, class_ids = np.divmod(pairs, num_classes)
        cand_scores = scores[cand_priors, class_ids]
        finite = cand_scores != np.inf
        if not finite.all():
            cand_priors, class_ids, cand_scores = cand_priors[finite], class_ids[finite], cand_scores[finite]
    else:  # the best class of each prior, when above the threshold
        best = scores.argmax(axis=1)
        best_scores = np.take_along_axis(scores, best[:, None], axis=1)[:, 0]
        if not np.isfinite(best_scores).all():  # argmax picks NaN / +inf: take the best finite class instead
            scores = np.where(np.isfinite(scores), scores, -np.inf)
            best = scores.argmax(axis=1)
            best_scores = np.take_along_axis(scores, best[:, None], axis=1)[:, 0]
        cand_priors = np.flatnonzero(best_scores > threshold)
        class_ids, cand_scores = best[cand_priors], best_scores[cand_priors]

    # The priors that have a candidate, once each (multi_label: cand_priors is sorted, a prior may repeat).
    first = np.ones(len(cand_priors), dtype=bool)
    np.not_equal(cand_priors[1:], cand_priors[:-1], out=first[1:])
    rows = cand_priors[first]
    if candidate_first and len(rows) > _EAGER_ROWS:  # many priors: bound the max, decode what NMS visits
        max_coord = _bounded_max_coordinate(rows, box_dist, priors, reg_max, canvas_size)

        def boxes_of(idx: np.ndarray) -> np.ndarray:
            visited = cand_priors[idx]
            return decode_boxes(box_dist[visited], priors[visited], reg_max, canvas_size)

    else:
        if candidate_first:  # few priors: decode them once
            decoded = decode_boxes(box_dist[rows], priors[rows], reg_max, canvas_size)
            position = np.cumsum(first) - 1  # candidate → its row of `decoded`
        else:  # decode every prior, as upstream does
            decoded = decode_boxes(box_dist, priors, reg_max, canvas_size)
            position = cand_priors
        max_coord = max_coordinate(decoded[position[first]])

        def boxes_of(idx: np.ndarray) -> np.ndarray:
            return decoded[position[idx]]

    keep, boxes = greedy_nms(cand_scores, class_ids, iou_threshold, max_detections, boxes_of, max_coord)
    return boxes, cand_scores[keep], class_ids[keep].astype(np.int64)
