"""Compare a Detections result with upstream's detections, explaining any legitimate difference.

Two implementations that agree to ~1e-6 can still disagree on a detection when a candidate's score lies
within ``SCORE_TOL`` of the score threshold, a pair's IoU within ``IOU_TOL`` of the NMS threshold, or a
score ties the ``max_detections`` cut-off (and, downstream, detections that such a borderline detection
suppressed or not). :func:`compare` matches detections one to one and returns every unmatched one with
its reason, or without one: a test asserts that the unexplained list is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SETTINGS = {"score_threshold": 0.05, "iou_threshold": 0.6, "max_detections": 100}
"""The settings upstream's reference detections were made with."""
BOX_TOL = 0.01  # px, original-image coordinates
SCORE_TOL = 1e-5
THRESHOLD_TOL = 1e-5  # a score or IoU this close to its threshold may legitimately fall either way


@dataclass(frozen=True)
class Det:
    label: int
    box: tuple[float, float, float, float]
    score: float


@dataclass
class Comparison:
    matched: int = 0
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    explained: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)


def from_json(items: list[dict]) -> list[Det]:
    return [Det(int(d["label"]), tuple(float(v) for v in d["bbox"]), float(d["score"])) for d in items]


def from_arrays(xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> list[Det]:
    return [Det(int(c), tuple(float(v) for v in b), float(s)) for b, s, c in zip(xyxy, scores, class_ids, strict=True)]


def iou(a: Det, b: Det) -> float:
    ix = max(0.0, min(a.box[2], b.box[2]) - max(a.box[0], b.box[0]))
    iy = max(0.0, min(a.box[3], b.box[3]) - max(a.box[1], b.box[1]))
    inter = ix * iy
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _area(d: Det) -> float:
    return (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])


def compare(
    got: list[Det], expected: list[Det], *, score_threshold: float, iou_threshold: float, max_detections: int
) -> Comparison:
    result = Comparison()
    free = set(range(len(got)))
    lost: list[Det] = []
    for e in expected:
        best, best_diff = None, None
        for j in free:
            g = got[j]
            box_diff = max(abs(p - q) for p, q in zip(g.box, e.box, strict=True))
            score_diff = abs(g.score - e.score)
            close = g.label == e.label and box_diff <= BOX_TOL and score_diff <= SCORE_TOL
            if close and (best is None or (box_diff, score_diff) < best_diff):
                best, best_diff = j, (box_diff, score_diff)
        if best is None:
            lost.append(e)
            continue
        free.discard(best)
        result.matched += 1
        result.max_box_diff = max(result.max_box_diff, best_diff[0])
        result.max_score_diff = max(result.max_score_diff, best_diff[1])
    extra = [got[j] for j in sorted(free)]
    pending = [("only upstream", d, expected) for d in lost] + [("only ours", d, got) for d in extra]
    everything = got + expected
    explained_dets: list[Det] = []
    progress = True
    while pending and progress:
        progress = False
        for item in list(pending):
            side, d, own = item
            reason = _reason(d, own, everything, explained_dets, score_threshold, iou_threshold, max_detections)
            if reason:
                result.explained.append(f"{side}: {d} ({reason})")
                explained_dets.append(d)
                pending.remove(item)
                progress = True
    result.unexplained = [f"{side}: {d}" for side, d, _ in pending]
    return result


def _reason(d, own, everything, explained, score_threshold, iou_threshold, max_detections) -> str | None:
    if abs(d.score - score_threshold) <= THRESHOLD_TOL:
        return f"score {d.score:.8f} within {THRESHOLD_TOL} of the score threshold"
    for other in everything:
        if other is not d and other.label == d.label and other.score >= d.score - SCORE_TOL:
            overlap = iou(other, d)
            if abs(overlap - iou_threshold) <= THRESHOLD_TOL:
                return f"IoU {overlap:.8f} with {other} within {THRESHOLD_TOL} of the NMS threshold"
    if len(own) == max_detections and abs(d.score - min(o.score for o in own)) <= THRESHOLD_TOL:
        return "ties the max_detections cut-off"
    for other in explained:
        if other.label == d.label and other.score > d.score and iou(other, d) > iou_threshold - THRESHOLD_TOL:
            return f"suppressed or not by the borderline {other}"
    return None


def assert_matches(detections, expected: list[dict], **settings) -> Comparison:
    """Assert a ``Detections`` equals upstream's JSON detections up to explained differences."""
    got = from_arrays(detections.xyxy, detections.scores, detections.class_ids)
    result = compare(got, from_json(expected), **(SETTINGS | settings))
    assert not result.unexplained, f"unexplained differences: {result.unexplained}; explained: {result.explained}"
    return result
