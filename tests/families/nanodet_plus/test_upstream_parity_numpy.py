"""postprocess + boxes_to_original on upstream's own network outputs vs upstream's own detections.

Tolerances: same labels in the same order, boxes within 0.01 px, scores within 1e-5 (upstream's ONNX and
torch outputs differ by up to 1.5e-5, and its decoding runs in torch). Where a candidate's score or a
pair's IoU lies within 1e-5 of its threshold the two may legitimately differ from that rank on; the test
then requires that this is the reason.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import PLUS320, SHAPES

from nanodet_infer.families.nanodet_plus.decode import make_priors
from nanodet_infer.families.nanodet_plus.postprocess import postprocess
from nanodet_infer.families.nanodet_plus.resize import InputPlan, boxes_to_original, plan_input
from nanodet_infer.nms import box_iou

SCORE_THR, IOU_THR, MAX_DET = 0.05, 0.6, 100
BOX_TOL, SCORE_TOL, EDGE = 0.01, 1e-5, 1e-5


def _reference(detections: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.array([d["bbox"] for d in detections], np.float64).reshape(-1, 4)
    return boxes, np.array([d["score"] for d in detections]), np.array([d["label"] for d in detections])


def _near_threshold(boxes, scores, labels, rank) -> bool:
    """Is detection ``rank`` within EDGE of a threshold (its score, or its IoU with a higher same-class one)?"""
    if abs(scores[rank] - SCORE_THR) <= EDGE:
        return True
    same = np.flatnonzero(labels[:rank] == labels[rank])
    if not len(same):
        return False
    ious = box_iou(boxes[rank : rank + 1].astype(np.float32), boxes[same].astype(np.float32))[0]
    return bool(np.any(np.abs(ious - IOU_THR) <= EDGE))


def assert_matches_upstream(ours, upstream) -> int:
    """Compare rank by rank; return the number of matching ranks (all, unless explained by a threshold edge)."""
    (b, s, c), (rb, rs, rc) = ours, upstream
    n = max(len(s), len(rs))
    for k in range(n):
        same = (
            k < len(s)
            and k < len(rs)
            and c[k] == rc[k]
            and abs(float(s[k]) - rs[k]) <= SCORE_TOL
            and np.abs(b[k] - rb[k]).max() <= BOX_TOL
        )
        if not same:
            explained = (k < len(s) and _near_threshold(b, s, c, k)) or (k < len(rs) and _near_threshold(rb, rs, rc, k))
            assert explained, f"rank {k} differs and no score/IoU lies within {EDGE} of a threshold"
            return k
    return n


@pytest.mark.parametrize("index", range(4))
def test_shapes_onnx_output_matches_upstream_detections(index: int) -> None:
    data = json.loads((SHAPES / "detections_upstream.json").read_text())
    entry = data["images"][index]
    assert entry["file_name"] == f"val_0000{index}.jpg"
    assert (data["score_thr"], data["nms_iou"], data["max_num"]) == (SCORE_THR, IOU_THR, MAX_DET)
    out = np.load(SHAPES / "raw" / f"val_0000{index}_onnx_output.npy")
    assert out.shape == (1, 1360, 35)
    boxes, scores, labels = postprocess(
        out[0, :, :3],
        out[0, :, 3:],
        make_priors((256, 256), (8, 16, 32, 64)),
        reg_max=7,
        score_threshold=SCORE_THR,
        iou_threshold=IOU_THR,
        max_detections=MAX_DET,
        canvas_size=(256, 256),
    )
    plan = plan_input((entry["width"], entry["height"]), (256, 256), keep_ratio=False, dynamic_hw=False)
    np.testing.assert_array_equal(plan.matrix, entry["warp_matrix"])
    ours = (boxes_to_original(boxes, plan), scores, labels)
    upstream = _reference(entry["detections"])
    assert len(upstream[1]) > 50  # a real, crowded comparison
    matched = assert_matches_upstream(ours, upstream)
    assert matched == len(upstream[1]) == len(scores)  # these fixtures have no threshold-edge case


def test_plus320_torch_output_matches_upstream_post_process() -> None:
    out = np.load(PLUS320 / "torch_output_sigmoid_seed0.npy")
    assert out.shape == (1, 2125, 112)
    boxes, scores, labels = postprocess(
        out[0, :, :80],
        out[0, :, 80:],
        make_priors((320, 320), (8, 16, 32, 64)),
        reg_max=7,
        score_threshold=SCORE_THR,
        iou_threshold=IOU_THR,
        max_detections=MAX_DET,
        canvas_size=(320, 320),
    )
    identity = InputPlan((320, 320), (320, 320), (320, 320), np.eye(3))
    ours = (boxes_to_original(boxes, identity), scores, labels)
    upstream = _reference(json.loads((PLUS320 / "post_process_seed0.json").read_text())["detections"])
    assert len(upstream[1]) == MAX_DET
    assert assert_matches_upstream(ours, upstream) == MAX_DET


def test_the_comparison_can_fail_and_explains_edges() -> None:
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float64)
    ours = (boxes.astype(np.float32), np.array([0.9, 0.5], np.float32), np.array([0, 1]))
    with pytest.raises(AssertionError):
        assert_matches_upstream(ours, (boxes + [0, 0, 0, 0.1], np.array([0.9, 0.5]), np.array([0, 1])))
    with pytest.raises(AssertionError):
        assert_matches_upstream(ours, (boxes[:1], np.array([0.9]), np.array([0])))
    edge = (boxes[:1], np.array([0.9]), np.array([0]))
    at_threshold = (boxes.astype(np.float32), np.array([0.9, SCORE_THR + 5e-6], np.float32), np.array([0, 1]))
    assert assert_matches_upstream(at_threshold, edge) == 1
