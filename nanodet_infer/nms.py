"""Class-aware greedy NMS with upstream's float32 arithmetic, vectorised in score-ordered chunks.

Semantics (upstream NanoDet ``batched_nms`` → ``torchvision.ops.nms``): candidates are visited by score,
descending (ties: lower index first, a stable sort); a candidate is dropped when its IoU with an already
kept candidate *of the same class* is ``> iou_threshold``. Upstream separates classes by the offset trick:
every box is shifted by ``class_id * (max_coordinate + 1)`` (``max_coordinate``: the largest of all four
coordinates of all candidate boxes), all in float32, and the IoU is computed on the *shifted* boxes. The
shift rounds coordinates to the float32 spacing at the offset (about 0.002 px for class 79 of a 320-px
model), so near-threshold decisions depend on it; it is reproduced here bit for bit (:func:`shift_by_class`),
with torchvision's float32 IoU (:func:`box_iou`) compared with the threshold as a double would be. The
same-class condition is redundant with the offset (shifted boxes of different classes never overlap) and
makes the result equal to upstream's per-class path as well (``split_thr``, 10000 candidates and more).
The returned boxes are the unshifted ones.

A candidate whose box or score is not finite (e.g. decoded from NaN logits) is dropped: never kept, never
suppressing, and not counted in ``max_coordinate`` (which is taken over the finite boxes of the remaining
candidates), so the others are decided exactly as if it were not there. Upstream's ``boxes.max()`` would
turn NaN and shift every box to NaN instead, which suppresses nothing.

Speed: a candidate can only be suppressed by a kept candidate of higher score, so the first ``max_keep``
kept boxes are final and the search stops there. Candidates are ordered in chunks (top-k by partition, so
tens of thousands of candidates are never fully sorted) and fetched in groups of ``_GROUP``. A group is
checked against the boxes kept so far (one dense IoU), then resolved internally on a sparse conflict graph:
a sweep over the sorted ``x1`` forms only the pairs whose IoU can exceed the threshold
(:func:`_pairs_above`), their exact IoU keeps the conflicts, and a vectorised fixed point of the greedy rule
decides (:func:`_greedy_keep`). Boxes are fetched (and shifted) per group, so a caller can produce them
lazily (:func:`greedy_nms`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from . import nms_kernel
from .errors import InvalidArgumentError

_GROUP = 512  # candidates fetched and resolved at a time: bounds the pair lists of _pairs_above
_WINDOW_SLACK = 1e-4  # relative margin of the sweep window over float32 rounding (a few ulps)
_TINY_AREA = np.float32(2.0**-100)  # below: no window shrinking (subnormal products lose relative accuracy)
_TINY_THRESHOLD = 2.0**-30  # below: no window shrinking
_KERNEL_MAX = 4096  # up to this many candidates, the compiled kernel (when built) runs instead of the numpy path


def _threshold_f32(threshold: float) -> np.float32:
    """The largest float32 ``t <= threshold``: for float32 ``x``, ``x > t`` iff ``x > threshold`` (double)."""
    t = np.float32(threshold)
    if float(t) > float(threshold):
        t = np.nextafter(t, np.float32(-np.inf))
    return t


def _finite_rows(boxes: np.ndarray) -> np.ndarray:
    """bool ``[M]``: the rows of float32 ``boxes [M, 4]`` whose four coordinates are finite.

    The four bools of a row read as one uint32 (``0x01010101`` when all are true): one pass, where
    ``.all(axis=1)`` over a length-4 axis is several times slower.
    """
    return np.ascontiguousarray(np.isfinite(boxes)).view(np.uint32)[:, 0] == 0x01010101


def max_coordinate(boxes: np.ndarray) -> np.float32:
    """Upstream's ``boxes.max()`` over the finite rows of float32 xyxy ``boxes`` ``[M, 4]`` (0 when none).

    Rows with a NaN or infinite coordinate are left out: NMS drops those candidates.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    finite = _finite_rows(boxes)
    if not finite.all():
        boxes = boxes[finite]
    return boxes.max() if len(boxes) else np.float32(0)


def shift_by_class(boxes: np.ndarray, class_ids: np.ndarray, max_coord: np.float32) -> np.ndarray:
    """Upstream's offset trick: float32 ``boxes [M, 4] + (class_ids * (max_coord + 1))[:, None]`` → ``[M, 4]``.

    Every step is float32 like torch's (``labels.to(boxes) * (max_coordinate + 1)``, then the sum), so the
    result is bit-identical; coordinates beyond float32's range become inf, with no warning.
    """
    step = np.float32(max_coord) + np.float32(1)
    with np.errstate(over="ignore", invalid="ignore"):
        offsets = np.asarray(class_ids).astype(np.float32) * step
        return boxes + offsets[:, None]


def _iou_terms(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Contiguous ``(x1, y1, x2, y2, area)`` columns of float32 xyxy ``boxes [M, 4]``, area ``(x2-x1) * (y2-y1)``."""
    x1, y1, x2, y2 = np.ascontiguousarray(boxes.T)
    with np.errstate(over="ignore", invalid="ignore"):
        return x1, y1, x2, y2, (x2 - x1) * (y2 - y1)


def _iou(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    """torchvision's float32 IoU of :func:`_iou_terms` ``a`` and ``b`` (broadcast against each other)."""
    ax1, ay1, ax2, ay2, area_a = a
    bx1, by1, bx2, by2, area_b = b
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        w = np.minimum(ax2, bx2)
        w -= np.maximum(ax1, bx1)
        np.maximum(w, 0, out=w)
        h = np.minimum(ay2, by2)
        h -= np.maximum(ay1, by1)
        np.maximum(h, 0, out=h)
        inter = np.multiply(w, h, out=w)
        union = area_a + area_b
        union -= inter
        return np.divide(inter, union, out=union)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of float32 xyxy boxes ``a`` ``[M, 4]`` and ``b`` ``[K, 4]`` → float32 ``[M, K]``.

    Exactly torchvision's NMS kernel arithmetic in float32 (areas ``(x2 - x1) * (y2 - y1)``, no +1;
    ``inter / (area_a + area_b - inter)``); IoU is symmetric bit for bit. NMS calls it on boxes shifted by
    :func:`shift_by_class`, as upstream does, which can differ from the IoU of the unshifted boxes in the
    last bits. 0/0 (two empty boxes) and inf - inf (coordinates beyond float32's range) give NaN, which
    never exceeds a threshold; no warning is emitted.
    """
    return _iou(tuple(t[:, None] for t in _iou_terms(a)), tuple(t[None, :] for t in _iou_terms(b)))


def _pairs_above(
    terms: tuple[np.ndarray, ...], class_ids: np.ndarray, threshold: np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``, of :func:`_iou_terms` boxes of the same class with IoU ``> threshold``.

    Only pairs that can exceed the threshold get their IoU computed. For boxes ``q``, ``k`` with
    ``x1[q] <= x1[k]``, IoU ``<= w_overlap / w[q] <= (x2[q] - x1[k]) / w[q]``, so ``x1[k]`` must lie in
    ``[x1[q], x2[q] - threshold * w[q])``: a contiguous run of the sorted ``x1`` (a sweep); the same bound
    in y, from the box with the smaller ``y1``, filters the runs. The float32 IoU exceeds the real one by a
    few ulps at most while areas are normal numbers, which the margin ``_WINDOW_SLACK`` covers; boxes with
    a tiny or non-finite area get the plain overlap window ``[x1[q], x2[q])`` (a positive float32 overlap
    needs ``max(x1) < min(x2)``). The IoU of the formed pairs is the dense one (:func:`_iou`), bit for bit
    (``max`` returns one of its arguments, so reusing a known maximum changes nothing).
    """
    order = np.argsort(terms[0])  # any order of equal x1 works: the bound holds from either box
    x1, y1, x2, y2, area = (t[order] for t in terms)
    x_reach, y_reach = _reach(x1, x2, area, threshold), _reach(y1, y2, area, threshold)
    starts = np.arange(1, len(order) + 1)
    counts = np.maximum(np.searchsorted(x1, x_reach, side="left") - starts, 0)
    run_ends = np.cumsum(counts)
    q = np.repeat(np.arange(len(order)), counts)
    k = np.arange(run_ends[-1] if len(run_ends) else 0) + np.repeat(starts - run_ends + counts, counts)
    # The same bound in y, from the box whose y1 is smaller: max(y1) < y_reach of that box.
    qy, ky = np.repeat(y1, counts), y1[k]
    top = np.maximum(qy, ky)
    near = np.flatnonzero(top < np.where(qy <= ky, np.repeat(y_reach, counts), y_reach[k]))
    q, k, top = q[near], k[near], top[near]
    # torchvision's IoU (as in _iou), reusing max(y1) and max(x1) = x1[k] (x1 is sorted and k > q).
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        w = np.minimum(x2[q], x2[k])
        w -= x1[k]
        np.maximum(w, 0, out=w)
        h = np.minimum(y2[q], y2[k])
        h -= top
        np.maximum(h, 0, out=h)
        inter = np.multiply(w, h, out=w)
        union = area[q] + area[k]
        union -= inter
        over = np.divide(inter, union, out=union) > threshold
    i, j = order[q[over]], order[k[over]]
    same = class_ids[i] == class_ids[j]
    i, j = i[same], j[same]
    return np.minimum(i, j), np.maximum(i, j)


def _reach(lo: np.ndarray, hi: np.ndarray, area: np.ndarray, threshold: np.float32) -> np.ndarray:
    """float32 ``hi - threshold * (hi - lo)`` less the ``_WINDOW_SLACK`` margin, rounded up (see :func:`_pairs_above`).

    ``hi`` where the area is tiny or not finite, where the threshold is tiny, and where the bound is NaN.
    """
    hi64 = hi.astype(np.float64)
    shrink = float(threshold) * (1 - _WINDOW_SLACK) if threshold >= _TINY_THRESHOLD else 0.0
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf gives NaN, which np.fmin replaces by hi
        bound = np.fmin(np.where(area >= _TINY_AREA, hi64 - (hi64 - lo) * shrink, hi64), hi64)
        return np.nextafter(bound.astype(np.float32), np.float32(np.inf))  # >= the float64 bound


def _greedy_keep(alive: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Greedy NMS on a conflict graph: candidate ``src[e]`` (earlier in score order) suppresses ``dst[e]``.

    ``alive`` bool ``[M]`` marks the candidates not already dropped. Fixed point: a candidate is kept
    once no kept-or-undecided candidate has an edge to it, and dropped once a kept one does; the first
    undecided candidate is always decided, so this terminates. Edges that can no longer matter (target
    decided, source dropped) are pruned each round; when none are left the undecided are kept.
    Returns the bool keep mask.
    """
    kept = np.zeros_like(alive)
    undecided = alive.copy()
    while len(src):
        blocked = np.zeros_like(alive)
        blocked[dst[(kept | undecided)[src]]] = True
        kept |= undecided & ~blocked
        undecided &= blocked
        hit = np.zeros_like(alive)
        hit[dst[kept[src]]] = True
        undecided &= ~hit
        live = undecided[dst]
        live &= (kept | undecided)[src]
        src, dst = src[live], dst[live]
    return kept | undecided


def _score_chunks(scores: np.ndarray, first: int) -> Iterator[np.ndarray]:
    """Indices of ``scores`` by score descending (ties: index ascending), in chunks growing 4x."""
    base = np.arange(len(scores))
    rest = scores
    size = first
    while len(rest):
        if len(rest) <= 2 * size:
            yield base[np.argsort(-rest, kind="stable")]
            return
        kth = np.partition(rest, len(rest) - size)[len(rest) - size]
        top = rest >= kth
        picked = np.flatnonzero(top)
        yield base[picked[np.argsort(-rest[picked], kind="stable")]]
        below = np.flatnonzero(~top)
        base, rest = base[below], rest[below]
        size *= 4


def greedy_nms(
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_keep: int | None,
    boxes_of: Callable[[np.ndarray], np.ndarray],
    max_coord: np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """The NMS engine: boxes are fetched lazily, only for the candidates it visits.

    ``scores`` float32 ``[M]``, ``class_ids`` integer ``[M]``; ``boxes_of(idx)`` returns the float32
    ``[len(idx), 4]`` xyxy boxes of candidates ``idx`` (and must return the same box for a candidate on
    every call); ``max_coord`` is upstream's ``max_coordinate``, :func:`max_coordinate` of the boxes of all
    ``M`` candidates (the caller knows it without fetching them all through ``boxes_of``). IoU is computed
    on the boxes shifted by :func:`shift_by_class`. Returns ``(kept indices int64 [K], their unshifted
    boxes float32 [K, 4])``, by score descending. Candidates whose box is not finite are dropped.
    """
    n = len(scores)
    limit = n if max_keep is None else min(max_keep, n)
    kept = np.empty(limit, dtype=np.int64)
    kept_boxes = np.empty((limit, 4), dtype=np.float32)
    if limit == 0:
        return kept, kept_boxes
    threshold = _threshold_f32(iou_threshold)
    if nms_kernel.AVAILABLE and n <= _KERNEL_MAX:  # same arithmetic, one candidate at a time, in C
        boxes = boxes_of(np.arange(n))
        keep = nms_kernel.greedy_nms_ordered(
            boxes, np.argsort(-scores, kind="stable"), class_ids, max_coord, threshold, limit
        )
        return keep, boxes[keep]
    kept_shifted = np.empty((limit, 4), dtype=np.float32)
    kept_cls = np.empty(limit, dtype=class_ids.dtype)
    count = 0
    for chunk in _score_chunks(scores, max(_GROUP, 2 * limit)):
        for start in range(0, len(chunk), _GROUP):
            group = chunk[start : start + _GROUP]
            group_boxes = boxes_of(group)
            group_cls = class_ids[group]
            finite = _finite_rows(group_boxes)
            if not finite.all():
                group, group_boxes, group_cls = group[finite], group_boxes[finite], group_cls[finite]
            group_shifted = shift_by_class(group_boxes, group_cls, max_coord)
            terms = _iou_terms(group_shifted)
            alive = np.ones(len(group), dtype=bool)
            if count:  # drop the candidates that a box kept before this group suppresses
                old = tuple(t[None, :] for t in _iou_terms(kept_shifted[:count]))
                hit = _iou(tuple(t[:, None] for t in terms), old) > threshold
                hit &= group_cls[:, None] == kept_cls[None, :count]
                alive = ~hit.any(axis=1)
            src, dst = _pairs_above(terms, group_cls, threshold)
            survivors = np.flatnonzero(_greedy_keep(alive, src, dst))[: limit - count]
            new = count + len(survivors)
            kept[count:new] = group[survivors]
            kept_boxes[count:new] = group_boxes[survivors]
            kept_shifted[count:new] = group_shifted[survivors]
            kept_cls[count:new] = group_cls[survivors]
            count = new
            if count == limit:
                return kept, kept_boxes
    return kept[:count], kept_boxes[:count]


def _finite_candidates(
    name: str, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, max_keep: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked float32 ``boxes [M, 4]``, ``scores [M]``, ``class_ids [M]`` of the finite-score candidates.

    Returns ``(rows, boxes, scores, class_ids)``, ``rows`` being the indices of those candidates in the input.
    """
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not len(scores) == len(class_ids) == len(boxes):
        raise InvalidArgumentError(
            f"{name}: {len(boxes)} boxes, {len(scores)} scores and {len(class_ids)} class ids; "
            "give one of each per candidate"
        )
    if max_keep is not None and max_keep < 0:
        raise InvalidArgumentError(f"max_keep must be >= 0 or None, got {max_keep}")
    rows = np.flatnonzero(np.isfinite(scores))  # NaN / inf scores: not candidates
    if len(rows) < len(scores):
        scores, class_ids, boxes = scores[rows], class_ids[rows], boxes[rows]
    return rows, boxes, scores, class_ids


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_keep: int | None = None,
) -> np.ndarray:
    """Class-aware greedy NMS, upstream's ``batched_nms``. Returns int64 indices of the kept candidates.

    ``boxes`` float32 ``[M, 4]`` xyxy, ``scores`` ``[M]``, ``class_ids`` integer ``[M]``; at most
    ``max_keep`` indices (all when None), by score descending. IoU is computed on the boxes shifted by
    ``class_id * (max_coordinate + 1)``, ``max_coordinate`` being the largest coordinate of the given boxes
    (see the module docstring). Candidates with a non-finite score or box are dropped and do not count in
    ``max_coordinate``.
    """
    rows, boxes, scores, class_ids = _finite_candidates("batched_nms", boxes, scores, class_ids, max_keep)
    keep = greedy_nms(scores, class_ids, iou_threshold, max_keep, boxes.__getitem__, max_coordinate(boxes))[0]
    return rows[keep]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Single-class greedy NMS, exactly ``torchvision.ops.nms``. Returns int64 indices of the kept boxes.

    ``boxes`` float32 ``[M, 4]`` xyxy, ``scores`` ``[M]``; every box can suppress every other (callers that
    separate classes by an offset of their own, as YOLOv7's ``max_wh`` trick does, pass the shifted boxes).
    At most ``max_keep`` indices (all when None), by score descending (ties: lower index first). Candidates
    with a non-finite score or box are dropped.
    """
    zeros = np.zeros(len(np.asarray(scores).reshape(-1)), dtype=np.int64)
    rows, boxes, scores, class_ids = _finite_candidates("nms", boxes, scores, zeros, max_keep)
    # one class: the shift is class 0 * (0 + 1) = +0, which leaves every coordinate's value unchanged
    keep = greedy_nms(scores, class_ids, iou_threshold, max_keep, boxes.__getitem__, np.float32(0))[0]
    return rows[keep]
