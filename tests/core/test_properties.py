"""Property-based tests of decoding + NMS: random logits and shapes against a plain reference, finite or not.

The reference decodes *every* prior (our float32 decode, checked against a plain float64 softmax), thresholds,
and runs upstream's NMS one box at a time: ``batched_nms``'s class offset and torchvision's float32 IoU,
reproduced in numpy. Our postprocess (candidate-first and all-priors) must give bit-identical detections, and
always: no exception, no NaN, boxes inside the canvas, scores sorted descending, at most
``max_detections``. Non-finite outputs follow the documented rule (``docs/robustness.md``): a NaN/inf score
is not a candidate, a NaN box logit drops its candidate, infinite box logits decode to the softmax's limit.
"""

from __future__ import annotations

import importlib
import warnings
from unittest import mock

import numpy as np
import pytest
from _reference import reference_decode, upstream_nms
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nanodet_infer.families.nanodet_plus.decode import decode_boxes, integral, make_priors
from nanodet_infer.families.nanodet_plus.postprocess import postprocess
from nanodet_infer.nms import batched_nms

POSTPROCESS_MODULE = importlib.import_module("nanodet_infer.families.nanodet_plus.postprocess")

PROPERTY_SETTINGS = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- the reference
def reference_postprocess(
    scores, box_dist, priors, *, reg_max, score_threshold, iou_threshold, max_detections, canvas_size, multi_label
):
    """Decode all, threshold, upstream's NMS. Returns ``(boxes float32 [K, 4], scores [K], class_ids [K])``.

    The boxes are our float32 decode (upstream's NMS decisions depend on every float32 bit), asserted equal
    to the float64 reference decode within 2e-3 px and NaN exactly where it is NaN.
    """
    decoded = decode_boxes(box_dist, priors, reg_max, canvas_size)
    np.testing.assert_allclose(decoded, reference_decode(box_dist, priors, reg_max, canvas_size), rtol=0, atol=2e-3)
    usable = np.where(np.isfinite(scores), scores, -np.inf)
    if multi_label:
        rows, cls = np.nonzero(usable > np.float32(score_threshold))
    else:
        rows = np.flatnonzero(usable.max(axis=1) > np.float32(score_threshold))
        cls = usable[rows].argmax(axis=1)
    cand_scores = scores[rows, cls]
    good = np.isfinite(decoded[rows]).all(axis=1)  # NaN boxes: dropped before NMS, not in max_coordinate
    rows, cls, cand_scores = rows[good], cls[good], cand_scores[good]
    keep = np.asarray(upstream_nms(decoded[rows], cand_scores, cls, iou_threshold, max_detections), dtype=np.int64)
    return decoded[rows[keep]], cand_scores[keep], cls[keep]


# ---------------------------------------------------------------- random problems
SIZES = st.one_of(st.sampled_from([32, 64, 96, 128]), st.integers(1, 130))


@st.composite
def problems(draw, non_finite: bool = False):
    """A random postprocess problem: outputs, priors and settings."""
    width, height = draw(SIZES), draw(SIZES)
    strides = draw(st.sampled_from([(8, 16, 32, 64), (8, 16, 32), (16, 32)]))
    num_classes = draw(st.integers(1, 80))
    reg_max = draw(st.integers(1, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    priors = make_priors((width, height), strides)
    n = len(priors)
    scores = rng.random((n, num_classes), dtype=np.float32)
    if draw(st.booleans()):
        scores = np.round(scores, 1)  # many exact ties
    box_dist = rng.normal(0.0, draw(st.sampled_from([0.0, 0.5, 3.0, 40.0])), (n, 4 * (reg_max + 1)))
    box_dist = box_dist.astype(np.float32)
    if non_finite:
        for array in (scores, box_dist):
            fraction = draw(st.sampled_from([0.001, 0.02, 0.3]))
            hit = rng.random(array.shape) < fraction
            array[hit] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), int(hit.sum()))
    settings_ = {
        "reg_max": reg_max,
        "score_threshold": draw(st.floats(0.0, 1.0)),
        "iou_threshold": draw(st.floats(0.0, 1.0)),
        "max_detections": draw(st.one_of(st.integers(1, 300), st.none())),
        "canvas_size": (width, height),
        "multi_label": draw(st.booleans()),
    }
    # keep the one-at-a-time reference affordable
    assume(int((scores > settings_["score_threshold"]).sum()) <= 6000)
    return scores, box_dist, priors, settings_


def check_invariants(result, settings_: dict) -> None:
    """No NaN, boxes inside the canvas, sorted scores above the threshold, at most max_detections."""
    boxes, scores, class_ids = result
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and class_ids.dtype == np.int64
    assert boxes.shape == (len(scores), 4) and class_ids.shape == scores.shape
    assert np.isfinite(boxes).all() and np.isfinite(scores).all()
    width, height = settings_["canvas_size"]
    assert (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert (np.diff(scores) <= 0).all()
    assert (scores > np.float32(settings_["score_threshold"])).all()
    if settings_["max_detections"] is not None:
        assert len(scores) <= settings_["max_detections"]


def run_both(scores, box_dist, priors, settings_):
    """Our postprocess, candidate-first and all-priors, with warnings as errors; they must agree bit for bit."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = postprocess(scores, box_dist, priors, **settings_)
        full = postprocess(scores, box_dist, priors, candidate_first=False, **settings_)
    for a, b in zip(fast, full, strict=True):
        np.testing.assert_array_equal(a, b)
    return fast


def assert_matches_reference(result, scores, box_dist, priors, settings_) -> None:
    """Bit-identical detections to the reference."""
    ref_boxes, ref_scores, ref_cls = reference_postprocess(scores, box_dist, priors, **settings_)
    boxes, out_scores, class_ids = result
    np.testing.assert_array_equal(out_scores, ref_scores)
    np.testing.assert_array_equal(class_ids, ref_cls)
    np.testing.assert_array_equal(boxes, ref_boxes)


# ---------------------------------------------------------------- properties
@PROPERTY_SETTINGS
@given(problems())
def test_postprocess_equals_reference_on_random_outputs(problem) -> None:
    scores, box_dist, priors, settings_ = problem
    result = run_both(scores, box_dist, priors, settings_)
    check_invariants(result, settings_)
    assert_matches_reference(result, scores, box_dist, priors, settings_)


@PROPERTY_SETTINGS
@given(problems(non_finite=True))
def test_non_finite_outputs_never_reach_the_result(problem) -> None:
    scores, box_dist, priors, settings_ = problem
    result = run_both(scores, box_dist, priors, settings_)
    check_invariants(result, settings_)
    assert_matches_reference(result, scores, box_dist, priors, settings_)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 400),
    classes=st.integers(1, 80),
    iou=st.floats(0.0, 1.0),
    max_keep=st.one_of(st.none(), st.integers(1, 300)),
    fraction=st.sampled_from([0.0, 0.05, 0.5]),
)
def test_batched_nms_drops_non_finite_candidates(seed, n, classes, iou, max_keep, fraction) -> None:
    """NaN/inf scores or boxes are dropped; the rest is NMS'd as if they were not there."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 50, (n, 2))], axis=1).astype(np.float32)
    scores = rng.choice(np.linspace(0.05, 1, 20), n).astype(np.float32)
    class_ids = rng.integers(0, classes, n)
    specials = np.array([np.nan, np.inf, -np.inf], np.float32)
    for array in (boxes, scores):
        hit = rng.random(array.shape) < fraction
        array[hit] = rng.choice(specials, int(hit.sum()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keep = batched_nms(boxes, scores, class_ids, iou, max_keep)
    valid = np.flatnonzero(np.isfinite(scores) & np.isfinite(boxes).all(axis=1))
    expected = valid[batched_nms(boxes[valid], scores[valid], class_ids[valid], iou, max_keep)]
    np.testing.assert_array_equal(keep, expected)
    assert np.isfinite(scores[keep]).all() and np.isfinite(boxes[keep]).all()


@PROPERTY_SETTINGS
@given(problems())
def test_many_candidates_path_equals_reference(problem) -> None:
    """The path for many candidate priors (bounded max_coordinate, boxes decoded as NMS visits them), forced."""
    scores, box_dist, priors, settings_ = problem
    with mock.patch.object(POSTPROCESS_MODULE, "_EAGER_ROWS", 0):
        result = run_both(scores, box_dist, priors, settings_)
    check_invariants(result, settings_)
    assert_matches_reference(result, scores, box_dist, priors, settings_)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 700),
    clusters=st.integers(1, 40),
    classes=st.sampled_from([1, 3, 80]),
    scale=st.sampled_from([1e-30, 1e-3, 1.0, 300.0, 1e30]),
    iou=st.one_of(st.sampled_from([0.0, 1e-30, 0.5, 0.6, 1.0]), st.floats(0.0, 1.0)),
    max_keep=st.one_of(st.none(), st.integers(1, 150)),
    integer=st.booleans(),
)
def test_batched_nms_on_crowded_clusters_equals_upstream(
    seed, n, clusters, classes, scale, iou, max_keep, integer
) -> None:
    """Detector-like crowds (jittered boxes around a few objects, ties in x1 and scores, tiny and huge scales).

    The sparse NMS forms only the pairs whose IoU can exceed the threshold; here most pairs overlap, and
    the decisions must still be upstream's one box at a time.
    """
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 100, (clusters, 2))[rng.integers(0, clusters, n)]
    sizes = rng.uniform(1, 40, (clusters, 2))[rng.integers(0, clusters, n)] * rng.uniform(0.6, 1.4, (n, 2))
    xy = centers + rng.normal(0, 2, (n, 2)) - sizes / 2
    boxes = np.concatenate([xy, xy + sizes], axis=1)
    boxes = (np.round(boxes) if integer else boxes) * scale
    boxes = boxes.astype(np.float32)
    scores = rng.choice(np.linspace(0.05, 1, 30), n).astype(np.float32)
    class_ids = rng.integers(0, classes, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference overflows at 1e30, as torch would silently
        expected = upstream_nms(boxes, scores, class_ids, iou, max_keep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = batched_nms(boxes, scores, class_ids, iou, max_keep)
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------- the documented limits, spelled out
@pytest.mark.parametrize(
    ("side", "expected"),
    [
        ([np.inf, 0, 0, 0], 0.0),  # one +inf bin: one-hot
        ([0, 0, 0, np.inf], 3.0),
        ([0, np.inf, np.inf, 0], 1.5),  # several +inf bins share the weight
        ([-np.inf, -np.inf, 5, -np.inf], 2.0),  # -inf bins get no weight
        ([-np.inf] * 4, 1.5),  # all equal (all -inf): uniform, as for any equal logits
        ([3e38, -3e38, 0, 0], 0.0),  # huge finite differences: no overflow warning
        ([np.nan, 0, 0, 0], np.nan),  # undefined: the candidate is dropped by NMS
        ([np.nan, np.inf, 0, 0], np.nan),
    ],
)
def test_integral_limits_of_infinite_logits(side, expected) -> None:
    row = np.array([side + [0, 0, 0, 0] * 3], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = integral(row, 3)
    np.testing.assert_array_equal(got[0, 1:], [1.5, 1.5, 1.5])
    np.testing.assert_array_equal(got[0, 0], np.float32(expected))


def test_nan_best_class_falls_back_to_the_best_finite_one() -> None:
    """multi_label=False: argmax would pick a NaN/inf score; the best finite class is used instead."""
    priors = make_priors((32, 32), (8, 16, 32))
    scores = np.zeros((len(priors), 3), np.float32)
    scores[0] = [np.nan, 0.9, 0.2]
    scores[5] = [np.inf, 0.1, 0.7]
    box_dist = np.zeros((len(priors), 32), np.float32)
    settings_ = {
        "reg_max": 7,
        "score_threshold": 0.5,
        "iou_threshold": 0.6,
        "max_detections": 10,
        "canvas_size": (32, 32),
        "multi_label": False,
    }
    boxes, out_scores, class_ids = run_both(scores, box_dist, priors, settings_)
    np.testing.assert_array_equal(out_scores, np.float32([0.9, 0.7]))
    np.testing.assert_array_equal(class_ids, [1, 2])
