"""YOLOv7 runtime maths (letterbox, non_max_suppression, scale_coords) vs upstream's own outputs.

The ``shared`` tests compare with ``../shared/fixtures/yolov7-*`` (made by upstream's code): the letterboxed
image bit for bit, the input tensor's sha256, and NMS on the stored deploy rows (every row with obj > 0.001,
so NMS on them equals NMS on the full output) against upstream's detections at detect.py's and test.py's
settings — same count, labels and order, boxes within 1e-3 px and scores within 1e-6 (measured: identical).
The other tests check the rules on hand-made cases and against a plain loop re-implementation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from _reference import upstream_nms

from nanodet_infer.errors import InvalidArgumentError, InvalidImageError
from nanodet_infer.families.yolov7.postprocess import non_max_suppression, scale_coords, xywh2xyxy
from nanodet_infer.families.yolov7.preprocess import letterbox, letterbox_input, plan_letterbox
from nanodet_infer.nms import nms

FIXTURES = ("yolov7-s", "yolov7-tiny-s", "yolov7-w6-aux-s")
STEMS = ("val_00000", "val_00001", "val_00002")
BOX_TOL, SCORE_TOL = 1e-3, 1e-6


# ---------------------------------------------------------------- a plain re-implementation (loops)
def loop_nms(pred, conf_thres, iou_thres, *, multi_label=False, agnostic=False, classes=None, max_det=300):
    """Upstream's rules row by row (no max_nms cut), then :func:`upstream_nms`: a list of (box, score, label)."""
    pred = np.asarray(pred, np.float32)
    thr = np.float32(conf_thres)
    nc = pred.shape[1] - 5
    cands = []
    for row in pred:
        if not row[4] > thr:
            continue
        conf = [row[4]] if nc == 1 else [row[5 + c] * row[4] for c in range(nc)]
        half_w, half_h = row[2] / np.float32(2), row[3] / np.float32(2)
        box = np.array([row[0] - half_w, row[1] - half_h, row[0] + half_w, row[1] + half_h], np.float32)
        if multi_label and nc > 1:
            pairs = [(c, conf[c]) for c in range(nc) if conf[c] > thr]
        else:
            best = int(np.argmax(conf))
            pairs = [(best, conf[best])] if conf[best] > thr else []
        cands += [(box, s, c) for c, s in pairs if classes is None or c in classes]
    # torchvision's nms on the boxes offset by class * 4096 (one class for the reference's own offset)
    shifted = [box + np.float32(0 if agnostic else c * 4096) for box, _, c in cands]
    scores = [s for _, s, _ in cands]
    kept = upstream_nms(np.reshape(shifted, (-1, 4)), scores, np.zeros(len(cands), np.int64), iou_thres, max_det)
    return [cands[i] for i in kept]


def _as_arrays(dets):
    boxes = np.array([d[0] for d in dets], np.float32).reshape(-1, 4)
    return boxes, np.array([d[1] for d in dets], np.float32), np.array([d[2] for d in dets], np.int64)


def random_predictions(rng, n=400, nc=5, size=200.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(2, size / 3, (n, 2))
    obj = rng.uniform(0, 1, (n, 1))
    cls = rng.uniform(0, 1, (n, nc))
    return np.concatenate([xy, wh, obj, cls], axis=1).astype(np.float32)


# ---------------------------------------------------------------- upstream fixtures
def _fixture_image(shared: Path, stem: str) -> np.ndarray:
    image = cv2.imread(str(shared / "shapes-m-256" / "images" / f"{stem}.jpg"))
    assert image is not None
    return image


@pytest.mark.shared
@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("stem", STEMS)
def test_letterbox_matches_upstream(shared_fixtures: Path, fixture: str, stem: str) -> None:
    folder = shared_fixtures / fixture
    meta = json.loads((folder / "meta.json").read_text())
    facts = meta["per_image"][stem]
    image = _fixture_image(shared_fixtures, stem)
    plan = plan_letterbox((image.shape[1], image.shape[0]), meta["img_size"], stride=meta["max_stride"])
    up = facts["letterbox"]
    assert plan.ratio == tuple(up["ratio"]) and plan.pad == tuple(up["pad_dw_dh"])
    assert plan.content_size == tuple(up["new_unpad_wh"]) and plan.border == tuple(up["border_top_bottom_left_right"])
    assert (1, 3, plan.canvas_size[1], plan.canvas_size[0]) == tuple(facts["input_shape"])

    padded = letterbox(image, plan)
    reference = cv2.imread(str(folder / f"{stem}_letterbox.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(padded, reference)
    assert hashlib.sha256(padded.tobytes()).hexdigest() == facts["letterbox_u8_sha256"]
    x = letterbox_input(image, plan)[None]
    assert hashlib.sha256(x.tobytes()).hexdigest() == facts["input_sha256"]
    if (folder / f"{stem}_input.npz").is_file():
        np.testing.assert_array_equal(x, np.load(folder / f"{stem}_input.npz")["x"])


@pytest.mark.shared
@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("setting", ["detect", "test"])
def test_nms_and_scale_coords_match_upstream(shared_fixtures: Path, fixture: str, setting: str) -> None:
    folder = shared_fixtures / fixture
    meta = json.loads((folder / "meta.json").read_text())
    reference = json.loads((folder / f"detections_{setting}.json").read_text())
    assert (reference["max_det"], reference["max_nms"], reference["max_wh"]) == (300, 30000, 4096)
    for stem in STEMS:
        stored = np.load(folder / f"{stem}_pred.npz")
        assert np.all(np.diff(stored["index"]) > 0)  # rows in output order: ties and nonzero order preserved
        boxes, scores, labels = non_max_suppression(
            stored["deploy"],
            reference["conf_thres"],
            reference["iou_thres"],
            multi_label=reference["multi_label"],
            agnostic=reference["agnostic"],
            classes=reference["classes"],
        )
        assert len(boxes) == meta["per_image"][stem]["nms_counts"][setting]["output"]
        in_input = np.array(reference["images_input_coords"][stem], np.float64).reshape(-1, 6)
        original = np.array(reference["images"][stem], np.float64).reshape(-1, 6)
        assert len(boxes) == len(in_input) == len(original), stem
        np.testing.assert_array_equal(labels, in_input[:, 5])
        np.testing.assert_allclose(scores, in_input[:, 4], rtol=0, atol=SCORE_TOL)
        np.testing.assert_allclose(boxes, in_input[:, :4], rtol=0, atol=BOX_TOL)

        facts = meta["per_image"][stem]
        canvas = (facts["input_shape"][3], facts["input_shape"][2])
        source = (facts["orig_shape_hw"][1], facts["orig_shape_hw"][0])
        np.testing.assert_allclose(scale_coords(boxes, canvas, source), original[:, :4], rtol=0, atol=BOX_TOL)


# ---------------------------------------------------------------- letterbox geometry
def test_minimal_rectangle_and_square_letterbox() -> None:
    auto = plan_letterbox((482, 245), 640, stride=32)
    assert auto.content_size == (640, 325) and auto.canvas_size == (640, 352)
    assert auto.pad == (0.0, 13.5) and auto.border == (13, 14, 0, 0)  # round(13.4), round(13.6)
    square = plan_letterbox((482, 245), 640, stride=32, auto=False)
    assert square.content_size == (640, 325) and square.canvas_size == (640, 640)
    assert square.pad == (0.0, 157.5) and square.border == (157, 158, 0, 0)
    wide = plan_letterbox((482, 245), (320, 256), auto=False)  # (W, H)
    assert wide.canvas_size == (320, 256) and wide.content_size == (320, 163)


def test_round_half_even_padding_split() -> None:
    # dh = 1 -> 0.5: top round(0.4) = 0, bottom round(0.6) = 1; dw = 5 -> 2.5: round(2.4) = 2, round(2.6) = 3
    plan = plan_letterbox((27, 31), (32, 32), stride=1, auto=False, scaleup=False)
    assert plan.pad == (2.5, 0.5) and plan.border == (0, 1, 2, 3) and plan.canvas_size == (32, 32)


def test_scaleup_false_and_scale_fill() -> None:
    small = plan_letterbox((100, 50), 640, stride=32, scaleup=False)
    assert small.ratio == (1.0, 1.0) and small.content_size == (100, 50)
    assert small.canvas_size == (128, 64) and small.border == (7, 7, 14, 14)
    stretched = plan_letterbox((100, 50), (64, 48), auto=False, scale_fill=True)
    assert stretched.content_size == stretched.canvas_size == (64, 48)
    assert stretched.ratio == (0.64, 0.96) and stretched.border == (0, 0, 0, 0)
    # auto wins over scale_fill, as upstream's if/elif
    assert plan_letterbox((100, 50), 64, auto=True, scale_fill=True).canvas_size == (64, 32)


def test_letterbox_pixels_and_input_conversion() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)
    plan = plan_letterbox((64, 40), 64, stride=32)  # no resize: content = source
    padded = letterbox(image, plan)
    top, bottom, left, right = plan.border
    assert padded.shape == (64, 64, 3) and (top, bottom) == (12, 12)
    np.testing.assert_array_equal(padded[top : top + 40], image)
    assert np.all(padded[:top] == 114) and np.all(padded[top + 40 :] == 114)
    x = letterbox_input(image, plan)
    np.testing.assert_array_equal(x, padded[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255))
    out = np.full((3, 64, 64), np.nan, np.float32)
    assert letterbox_input(image, plan, out=out) is out and np.array_equal(out, x)
    assert np.all(letterbox(image, plan, color=(0, 1, 2))[0] == [0, 1, 2])


def test_letterbox_bad_inputs() -> None:
    image = np.zeros((40, 64, 3), np.uint8)
    plan = plan_letterbox((64, 40), 64)
    with pytest.raises(InvalidImageError, match="plan_letterbox"):
        letterbox(image[:20], plan)
    with pytest.raises(InvalidImageError, match="elongated"):
        plan_letterbox((10000, 1), 640)
    for bad in ({"stride": 0}, {"stride": 1.5}):
        with pytest.raises(InvalidArgumentError, match="stride"):
            plan_letterbox((64, 40), 64, **bad)
    for size in (0, (64,), (64.5, 64), -3):
        with pytest.raises(InvalidArgumentError, match="new_shape"):
            plan_letterbox((64, 40), size)
    with pytest.raises(InvalidArgumentError, match="color"):
        letterbox(image, plan, color=256)


# ---------------------------------------------------------------- non_max_suppression rules
@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_nms_equals_the_loop_implementation(seed: int, multi_label: bool) -> None:
    rng = np.random.default_rng(seed)
    pred = random_predictions(rng)
    for conf, iou in ((0.25, 0.45), (0.001, 0.65), (0.1, 0.3)):
        got = non_max_suppression(pred, conf, iou, multi_label=multi_label)
        want = _as_arrays(loop_nms(pred, conf, iou, multi_label=multi_label))
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_agnostic_and_classes_options() -> None:
    rng = np.random.default_rng(11)
    pred = random_predictions(rng, n=300, nc=4)
    for kwargs in ({"agnostic": True}, {"classes": [1, 3]}, {"agnostic": True, "classes": [2]}):
        got = non_max_suppression(pred, 0.05, 0.5, multi_label=True, **kwargs)
        want = _as_arrays(loop_nms(pred, 0.05, 0.5, multi_label=True, **kwargs))
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    _, _, labels = non_max_suppression(pred, 0.05, 0.5, classes=[1, 3])
    assert set(labels.tolist()) <= {1, 3}


def _row(cx, cy, w, h, obj, *cls) -> list[float]:
    return [cx, cy, w, h, obj, *cls]


def test_single_class_score_is_obj_and_multi_label_is_off() -> None:
    pred = np.array([_row(10, 10, 4, 4, 0.9, 0.1), _row(50, 50, 4, 4, 0.3, 0.99)], np.float32)
    boxes, scores, labels = non_max_suppression(pred, 0.25, 0.45, multi_label=True)
    np.testing.assert_array_equal(scores, np.float32([0.9, 0.3]))  # obj, the class column is ignored
    np.testing.assert_array_equal(labels, [0, 0])
    np.testing.assert_array_equal(boxes, [[8, 8, 12, 12], [48, 48, 52, 52]])


def test_multi_label_rows_in_box_then_class_order() -> None:
    pred = np.array([_row(10, 10, 4, 4, 1.0, 0.3, 0.9, 0.5), _row(50, 50, 4, 4, 1.0, 0.8, 0.1, 0.7)], np.float32)
    _, scores, labels = non_max_suppression(pred, 0.25, 0.45, multi_label=True)
    assert labels.tolist() == [1, 0, 2, 2, 0] and np.all(np.diff(scores) <= 0)
    _, _, best = non_max_suppression(pred, 0.25, 0.45)
    assert best.tolist() == [1, 0]


def test_thresholds_are_float32_and_strict() -> None:
    at = np.float32(0.001)  # float32(0.001) > 0.001: upstream compares in float32, so it is not a candidate
    pred = np.array([_row(10, 10, 4, 4, at, 1.0, 0.0), _row(30, 30, 4, 4, np.nextafter(at, 1), 1.0, 0.0)], np.float32)
    _, scores, _ = non_max_suppression(pred, 0.001, 0.65)
    assert scores.tolist() == [np.nextafter(at, np.float32(1))]
    # [0, 0, 4, 4] and [0, 0, 4, 2]: IoU exactly 0.5 does not suppress at 0.5 (strict), does at 0.49
    pair = np.array([_row(2, 2, 4, 4, 0.9, 1.0, 0.0), _row(2, 1, 4, 2, 0.8, 1.0, 0.0)], np.float32)
    assert len(non_max_suppression(pair, 0.25, 0.5)[0]) == 2
    assert len(non_max_suppression(pair, 0.25, 0.49)[0]) == 1
    # the float32 IoU is compared as a double: float32(1/3) > 1/3, so IoU 8/24 suppresses at 1/3
    third = np.array([_row(10, 10, 4, 4, 0.9, 1.0, 0.0), _row(12, 10, 4, 4, 0.8, 1.0, 0.0)], np.float32)
    assert len(non_max_suppression(third, 0.25, 1 / 3)[0]) == 1
    assert len(non_max_suppression(third, 0.25, 0.33334)[0]) == 2


def test_class_offset_is_max_wh_and_lets_far_boxes_meet() -> None:
    # upstream adds class * 4096 to all four coordinates: a class-0 box at (4100, 4106) and a class-1 box at
    # (4, 10) coincide after the shift, so upstream suppresses across classes there
    pred = np.array([_row(4100, 4106, 8, 8, 0.9, 1.0, 0.0), _row(4, 10, 8, 8, 0.8, 0.0, 1.0)], np.float32)
    assert non_max_suppression(pred, 0.25, 0.45)[2].tolist() == [0]
    assert non_max_suppression(pred, 0.25, 0.45, max_wh=8192)[2].tolist() == [0, 1]


def test_max_det_and_max_nms_caps() -> None:
    rng = np.random.default_rng(5)
    pred = random_predictions(rng, n=500, nc=3, size=2000.0)
    full = non_max_suppression(pred, 0.01, 0.45)
    capped = non_max_suppression(pred, 0.01, 0.45, max_det=7)
    for a, b in zip(capped, full, strict=True):
        np.testing.assert_array_equal(a, b[:7])
    # max_nms: only the best max_nms candidates reach NMS
    top = non_max_suppression(pred, 0.01, 0.45, max_nms=10)
    best10 = np.argsort(-(pred[:, 5:] * pred[:, 4:5]).max(1), kind="stable")[:10]
    want = _as_arrays(loop_nms(pred[np.sort(best10)], 0.01, 0.45))
    for a, b in zip(top, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_nms_empty_and_bad_arguments() -> None:
    boxes, scores, labels = non_max_suppression(np.zeros((0, 85), np.float32))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,) and labels.dtype == np.int64
    with pytest.raises(InvalidArgumentError, match="5 \\+ num_classes"):
        non_max_suppression(np.zeros((1, 3, 85), np.float32))
    with pytest.raises(InvalidArgumentError, match="conf_thres"):
        non_max_suppression(np.zeros((1, 85), np.float32), conf_thres=1.5)
    with pytest.raises(InvalidArgumentError, match="max_det"):
        non_max_suppression(np.zeros((1, 85), np.float32), max_det=0)


def test_xywh2xyxy() -> None:
    np.testing.assert_array_equal(xywh2xyxy([[10, 20, 4, 6]]), np.float32([[8, 17, 12, 23]]))


def test_plain_nms_is_torchvision_single_class() -> None:
    rng = np.random.default_rng(9)
    pred = random_predictions(rng, n=300, nc=2)
    boxes = xywh2xyxy(pred[:, :4])
    keep = nms(boxes, pred[:, 4], 0.5)
    want = loop_nms(np.concatenate([pred[:, :5], np.ones((300, 1), np.float32)], 1), 0.0, 0.5, max_det=300)
    np.testing.assert_array_equal(boxes[keep], _as_arrays(want)[0])
    assert nms(boxes, pred[:, 4], 0.5, max_keep=3).tolist() == keep[:3].tolist()


# ---------------------------------------------------------------- scale_coords
def test_scale_coords_gain_pad_and_clip() -> None:
    # 482x245 image in a 640x352 canvas: gain = 640/482, pad_h = (352 - 245 * gain) / 2 = 13.3444 (not 13.5)
    gain = 640 / 482
    pad_h = (352 - 245 * gain) / 2
    boxes = np.float32([[100, 50, 200, 120], [-5, 0, 650, 352]])
    got = scale_coords(boxes, (640, 352), (482, 245))
    want = (boxes - np.float32([0, pad_h, 0, pad_h])) / np.float32(gain)
    want[1] = [0, 0, 482, 245]  # clipped to [0, W] x [0, H]
    np.testing.assert_array_equal(got, want)
    plan = plan_letterbox((482, 245), 640)
    with_pad = scale_coords(boxes[:1], plan.canvas_size, plan.src_size, ratio_pad=(plan.ratio, plan.pad))
    np.testing.assert_array_equal(with_pad, (boxes[:1] - np.float32([0, 13.5, 0, 13.5])) / np.float32(gain))
    assert scale_coords(np.zeros((0, 4)), (640, 352), (482, 245)).shape == (0, 4)


def test_non_finite_rows() -> None:
    nan = np.nan
    pred = np.array(
        [
            _row(nan, 10, 4, 4, 0.9, 1.0, 0.0),  # NaN box: dropped by NMS (upstream would return NaN coordinates)
            _row(10, 10, 4, 4, nan, 1.0, 0.0),  # NaN obj: not a candidate
            _row(30, 30, 4, 4, 0.8, nan, 0.5),  # NaN class: torch's max picks it, NaN > thr fails
            _row(50, 50, 4, 4, 0.7, 0.2, 0.9),
        ],
        np.float32,
    )
    assert non_max_suppression(pred)[1].tolist() == [np.float32(0.7) * np.float32(0.9)]
    _, scores, labels = non_max_suppression(pred, multi_label=True)
    assert labels.tolist() == [1, 1] and scores[1] == np.float32(0.8) * np.float32(0.5)
