"""Priors, Integral, distance2bbox, NMS and postprocess: against plain reference implementations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _reference import reference_decode, upstream_nms
from conftest import PLUS320, SHAPES
from hypothesis import given, settings
from hypothesis import strategies as st

from nanodet_infer.errors import InvalidArgumentError
from nanodet_infer.families.nanodet_plus.decode import decode_boxes, distance2bbox, integral, make_priors, num_priors
from nanodet_infer.families.nanodet_plus.postprocess import _bounded_max_coordinate, postprocess
from nanodet_infer.nms import batched_nms, box_iou, max_coordinate

STRIDES = (8, 16, 32, 64)


# ---------------------------------------------------------------- reference implementations
def plain_iou_nms(boxes, scores, class_ids, iou_threshold):
    """The old rule: per-class greedy NMS with the float32 IoU of the *unshifted* boxes."""
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if class_ids[k] == class_ids[i]]
        if same and np.any(_f32_iou(boxes[i], boxes[same]).astype(np.float64) > iou_threshold):
            continue
        kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def _f32_iou(box, others):
    """torchvision's float32 IoU of one box with ``others`` ``[K, 4]``."""
    w = np.maximum(np.float32(0), np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]))
    h = np.maximum(np.float32(0), np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]))
    inter = w * h
    return inter / (
        (box[2] - box[0]) * (box[3] - box[1]) + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter
    )


def random_boxes(rng, n, size=100.0, min_wh=0.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(min_wh, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


# ---------------------------------------------------------------- priors and decoding
def test_priors_layout() -> None:
    priors = make_priors((320, 192), STRIDES)
    assert priors.shape == (40 * 24 + 20 * 12 + 10 * 6 + 5 * 3, 3) == (num_priors((320, 192), STRIDES), 3)
    assert priors.dtype == np.float32 and not priors.flags.writeable
    np.testing.assert_array_equal(priors[:3], [[0, 0, 8], [8, 0, 8], [16, 0, 8]])  # x inner, offset 0
    np.testing.assert_array_equal(priors[40], [0, 8, 8])  # second row of stride 8
    np.testing.assert_array_equal(priors[960], [0, 0, 16])  # first prior of stride 16
    np.testing.assert_array_equal(priors[-1], [256, 128, 64])
    assert make_priors((320, 192), STRIDES) is priors  # cached
    assert len(make_priors((256, 256), STRIDES)) == 1360  # the shapes model's output rows
    assert len(make_priors((416, 416), STRIDES)) == 3598  # ceil(416/64) = 7
    np.testing.assert_array_equal(make_priors((16, 16), (8,), offset=0.5)[:, :2], [[4, 4], [12, 4], [4, 12], [12, 12]])


def test_integral_and_distance2bbox_match_a_float64_reference() -> None:
    rng = np.random.default_rng(1)
    priors = make_priors((256, 256), STRIDES)
    box_dist = rng.normal(0, 3, (len(priors), 32)).astype(np.float32)
    dist = integral(box_dist, 7)
    assert dist.shape == (len(priors), 4) and dist.dtype == np.float32
    assert dist.min() >= 0 and dist.max() <= 7
    boxes = distance2bbox(priors[:, :2], dist * priors[:, 2:3], (256, 200))
    np.testing.assert_allclose(boxes, reference_decode(box_dist, priors, 7, (256, 200)), atol=2e-4)  # float32
    assert boxes[:, [0, 2]].max() <= 256 and boxes[:, [1, 3]].max() <= 200 and boxes.min() >= 0


def test_integral_side_order_is_ltrb() -> None:
    logits = np.full((1, 4, 8), -50.0, np.float32)
    for side, value in enumerate((1, 2, 3, 4)):
        logits[0, side, value] = 50.0
    np.testing.assert_allclose(integral(logits.reshape(1, 32), 7), [[1, 2, 3, 4]], atol=1e-6)
    box = distance2bbox(np.array([[100, 100]], np.float32), np.array([[1, 2, 3, 4]], np.float32), (320, 320))
    np.testing.assert_array_equal(box, [[99, 98, 103, 104]])


def test_integral_rows_do_not_depend_on_the_batch() -> None:
    rng = np.random.default_rng(2)
    box_dist = rng.normal(0, 4, (3000, 32)).astype(np.float32)
    full = integral(box_dist, 7)
    for rows in (np.array([5]), np.arange(7, 20), rng.choice(3000, 333, replace=False)):
        np.testing.assert_array_equal(integral(box_dist[rows], 7), full[rows])  # bit-exact


# ---------------------------------------------------------------- NMS
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 700),
    classes=st.sampled_from([1, 2, 5, 80]),
    iou=st.sampled_from([0.0, 0.3, 0.5, 0.6, 1.0]),
    max_keep=st.one_of(st.none(), st.integers(0, 120)),
)
def test_batched_nms_equals_upstream(seed, n, classes, iou, max_keep) -> None:
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, n)
    scores = rng.choice(np.linspace(0.05, 1, 50), n).astype(np.float32)  # many exact ties
    class_ids = rng.integers(0, classes, n)
    expected = upstream_nms(boxes, scores, class_ids, iou, max_keep)
    np.testing.assert_array_equal(batched_nms(boxes, scores, class_ids, iou, max_keep), expected)


def test_batched_nms_many_candidates_exercises_chunks() -> None:
    rng = np.random.default_rng(3)
    n = 5000  # > 2 x first chunk: partitioned chunks, and several blocks per chunk
    boxes = random_boxes(rng, n, size=60.0)  # crowded: heavy suppression
    scores = rng.uniform(0, 1, n).astype(np.float32)
    class_ids = rng.integers(0, 2, n)
    for max_keep in (None, 100, 7):
        expected = upstream_nms(boxes, scores, class_ids, 0.5, max_keep)
        np.testing.assert_array_equal(batched_nms(boxes, scores, class_ids, 0.5, max_keep), expected)


def test_nms_threshold_is_strict_and_class_aware() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 20]], np.float32)  # IoU(0, 1) = 0.5
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.zeros(3), 0.5), [0, 1])  # 0.5 is not > 0.5
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.zeros(3), 0.49), [0])
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.array([0, 1, 2]), 0.0), [0, 1, 2])
    third = np.array([[0, 0, 1, 3], [0, 0, 1, 1]], np.float32)  # IoU exactly 1/3 in float32
    iou = float(box_iou(third[:1], third[1:])[0, 0])
    assert np.float32(iou) == np.float32(1 / 3)
    assert len(batched_nms(third, scores[:2], np.zeros(2), iou)) == 2  # equal to the threshold: kept
    assert len(batched_nms(third, scores[:2], np.zeros(2), np.nextafter(iou, 0))) == 1


def _pair_iou(a, b):
    """Row-wise torchvision float32 IoU of ``a`` ``[K, 4]`` and ``b`` ``[K, 4]``."""
    w = np.maximum(np.float32(0), np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
    h = np.maximum(np.float32(0), np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]))
    inter = w * h
    return inter / ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter)


def near_threshold_pairs(threshold: float = 0.6, tries: int = 2000):
    """80 classes on a 320-px canvas: for each class 1..79, the first of ``tries`` random pairs (A, then a
    slightly jittered B around IoU = ``threshold``) whose plain and class-shifted float32 IoUs fall on
    different sides of the threshold; plus a ``[0, 0, 320, 320]`` box of class 0, so max_coordinate = 320.

    Returns ``(boxes float32 [M, 4], scores [M], class_ids [M], number of pairs)``; A outscores B.
    """
    rng = np.random.default_rng(20240611)
    step = np.float32(320) + np.float32(1)
    boxes, class_ids = [np.array([[0, 0, 320, 320]], np.float32)], [0]
    for c in range(1, 80):
        xy = rng.uniform(0, 100, (tries, 2))
        wh = rng.uniform(2, 120, (tries, 2))
        a = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        b = a.copy()  # B contains A, its width stretched to IoU = threshold, then jittered by up to 2e-3 px
        b[:, 2] = a[:, 0] + wh[:, 0] / threshold + rng.uniform(-2e-3, 2e-3, tries)
        offset = np.float32(c) * step
        plain = _pair_iou(a, b).astype(np.float64) > threshold
        shifted = _pair_iou(a + offset, b + offset).astype(np.float64) > threshold
        flips = np.flatnonzero(plain != shifted)
        if len(flips):
            boxes.append(np.stack([a[flips[0]], b[flips[0]]]))
            class_ids += [c, c]
    boxes = np.concatenate(boxes)
    scores = np.tile(np.float32([0.9, 0.5]), len(boxes) // 2 + 1)[: len(boxes)]
    scores[0] = 0.1  # the anchor box of class 0
    return boxes, scores, np.array(class_ids), len(boxes) // 2


def test_near_threshold_decisions_follow_upstreams_class_offset() -> None:
    """Where the IoU of the shifted boxes (upstream) and of the plain boxes disagree, upstream's wins."""
    boxes, scores, class_ids, pairs = near_threshold_pairs()
    assert pairs >= 40 and boxes.max() == 320
    expected = upstream_nms(boxes, scores, class_ids, 0.6)
    plain = plain_iou_nms(boxes, scores, class_ids, 0.6)
    assert len(set(expected.tolist()) ^ set(plain.tolist())) == pairs  # every pair is decided the other way
    np.testing.assert_array_equal(batched_nms(boxes, scores, class_ids, 0.6), expected)
    order = np.random.default_rng(5).permutation(len(boxes))  # any candidate order (ties aside): same set
    kept = order[batched_nms(boxes[order], scores[order], class_ids[order], 0.6)]
    np.testing.assert_array_equal(np.sort(kept), np.sort(expected))


def test_huge_coordinates_emit_no_warnings() -> None:
    """Offsets beyond float32's range give inf/NaN shifted boxes: nothing suppressed, no warning."""
    boxes = np.array([[0, 0, 3e38, 3e38], [0, 0, 3e38, 3e38], [1, 1, 2, 2]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keep = batched_nms(boxes, np.float32([0.9, 0.8, 0.7]), np.array([0, 5, 5]), 0.5)
    np.testing.assert_array_equal(keep, [0, 1, 2])


def test_nms_degenerate_inputs_emit_no_warnings() -> None:
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 0, 10]], np.float32)  # empty boxes: IoU 0/0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keep = batched_nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.zeros(3), 0.5)
    np.testing.assert_array_equal(keep, [0, 1, 2])
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5).shape == (0,)
    with pytest.raises(InvalidArgumentError):
        batched_nms(boxes, np.zeros(2), np.zeros(3), 0.5)


# ---------------------------------------------------------------- postprocess
def _outputs(name: str):
    if name == "plus320":
        out = np.load(PLUS320 / "torch_output_sigmoid_seed0.npy")[0]
        return out[:, :80], out[:, 80:], (320, 320)
    out = np.load(SHAPES / "raw" / f"{name}_onnx_output.npy")[0]
    return out[:, :3], out[:, 3:], (256, 256)


def _run(scores, box_dist, canvas, **kw):
    args = dict(reg_max=7, score_threshold=0.05, iou_threshold=0.6, max_detections=100, canvas_size=canvas)
    args.update(kw)
    return postprocess(scores, box_dist, make_priors(canvas, STRIDES), **args)


def _assert_same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)  # bit-exact


@pytest.mark.parametrize("name", ["val_00000", "val_00003", "seed0", "plus320"])
@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.35, 0.999])
@pytest.mark.parametrize("multi_label", [True, False])
def test_candidate_first_equals_all_priors(name, threshold, multi_label) -> None:
    scores, box_dist, canvas = _outputs(name)
    kw = dict(score_threshold=threshold, multi_label=multi_label)
    fast = _run(scores, box_dist, canvas, **kw)
    _assert_same(fast, _run(scores, box_dist, canvas, candidate_first=False, **kw))
    assert fast[0].dtype == np.float32 and fast[1].dtype == np.float32 and fast[2].dtype == np.int64
    assert len(fast[1]) <= 100 and np.all(np.diff(fast[1]) <= 0)


def test_no_candidates_and_every_prior_a_candidate() -> None:
    scores, box_dist, canvas = _outputs("val_00001")
    none = _run(scores, box_dist, canvas, score_threshold=1.0)
    assert [len(x) for x in none] == [0, 0, 0] and none[0].shape == (0, 4)
    allp = _run(np.full_like(scores, 0.5), box_dist, canvas, max_detections=None, iou_threshold=1.0)
    assert len(allp[1]) == scores.size  # IoU > 1 never happens: every (prior, class) pair survives
    _assert_same(
        allp,
        _run(
            np.full_like(scores, 0.5), box_dist, canvas, max_detections=None, iou_threshold=1.0, candidate_first=False
        ),
    )


@pytest.mark.parametrize(("name", "threshold"), [("val_00002", 0.05), ("plus320", 0.05), ("plus320", 0.2)])
@pytest.mark.parametrize("multi_label", [True, False])
def test_postprocess_equals_decode_all_then_upstream_nms(name, threshold, multi_label) -> None:
    """Upstream's pipeline on our float32 boxes (checked against a float64 decode): bit-exact detections."""
    scores, box_dist, canvas = _outputs(name)
    priors = make_priors(canvas, STRIDES)
    decoded = decode_boxes(box_dist, priors, 7, canvas)
    np.testing.assert_allclose(decoded, reference_decode(box_dist, priors, 7, canvas), atol=2e-4)
    if multi_label:
        rows, cls = np.nonzero(scores > np.float32(threshold))
    else:
        rows = np.flatnonzero(scores.max(axis=1) > np.float32(threshold))
        cls = scores[rows].argmax(axis=1)
    cand_boxes = decoded[rows]
    keep = upstream_nms(cand_boxes, scores[rows, cls], cls, 0.6, 100)
    boxes, out_scores, out_cls = _run(scores, box_dist, canvas, multi_label=multi_label, score_threshold=threshold)
    np.testing.assert_array_equal(out_cls, cls[keep])
    np.testing.assert_array_equal(out_scores, scores[rows, cls][keep])
    np.testing.assert_array_equal(boxes, cand_boxes[keep])


def test_postprocess_rejects_mismatched_shapes() -> None:
    scores, box_dist, canvas = _outputs("val_00000")
    with pytest.raises(InvalidArgumentError):
        _run(scores, box_dist, (320, 320))  # 2125 priors for 1360 rows
    with pytest.raises(InvalidArgumentError):
        _run(scores, box_dist, canvas, reg_max=8)
    with pytest.raises(InvalidArgumentError):
        _run(scores, box_dist, canvas, max_detections=0)
    with pytest.raises(InvalidArgumentError):
        _run(scores, box_dist, canvas, iou_threshold=1.5)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    width=st.integers(1, 400),
    height=st.integers(1, 400),
    reg_max=st.integers(1, 16),
    edge_fraction=st.sampled_from([0.0, 0.002, 0.01, 0.5]),
    odd_fraction=st.sampled_from([0.0, 0.05]),
)
def test_bounded_max_coordinate_equals_decoding_every_row(
    seed, width, height, reg_max, edge_fraction, odd_fraction
) -> None:
    """The early-stopping max over many priors is bit-equal to the max over all their decoded boxes."""
    rng = np.random.default_rng(seed)
    priors = make_priors((width, height), STRIDES)
    box_dist = rng.normal(0, 3, (len(priors), 4, reg_max + 1)).astype(np.float32)
    box_dist[:, :, 0] += 6.0  # mostly small boxes, so the max is not always at the canvas edge
    reach = rng.random(len(priors)) < edge_fraction  # all weight on the last bin: boxes reach their bound
    box_dist[reach, :, -1] = 50.0
    odd = rng.random(box_dist.shape) < odd_fraction / (reg_max + 1)
    box_dist[odd] = rng.choice(np.array([np.inf, -np.inf, np.nan], np.float32), odd.sum())
    box_dist = box_dist.reshape(len(priors), -1)
    rows = np.flatnonzero(rng.random(len(priors)) < rng.uniform(0.05, 1.0))
    expected = max_coordinate(decode_boxes(box_dist[rows], priors[rows], reg_max, (width, height)))
    got = _bounded_max_coordinate(rows, box_dist, priors, reg_max, (width, height))
    assert got.dtype == np.float32 and got == expected
