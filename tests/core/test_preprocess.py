"""Pre-processing vs upstream's own tensors and warp matrices (``tests/data/shapes-m-256``)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import SHAPES

from nanodet_infer.errors import InvalidArgumentError, InvalidImageError
from nanodet_infer.families.nanodet_plus.resize import InputPlan, boxes_to_original, plan_input, preprocess
from nanodet_infer.families.nanodet_plus.section import UPSTREAM_MEAN_BGR, UPSTREAM_STD_BGR
from nanodet_infer.families.nanodet_plus.warp import warp_perspective


def _image(name: str) -> np.ndarray:
    image = cv2.imread(str(SHAPES / "images" / name))
    assert image is not None
    return image


def _upstream_warp_boxes(boxes: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """Upstream ``warp_boxes`` (nanodet/data/transform/warp.py), transcribed for the comparison."""
    n = len(boxes)
    xy = np.ones((n * 4, 3))
    xy[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    xy = xy @ matrix.T
    xy = (xy[:, :2] / xy[:, 2:3]).reshape(n, 8)
    x = xy[:, [0, 2, 4, 6]]
    y = xy[:, [1, 3, 5, 7]]
    xy = np.concatenate((x.min(1), y.min(1), x.max(1), y.max(1))).reshape(4, n).T
    xy[:, [0, 2]] = xy[:, [0, 2]].clip(0, width)
    xy[:, [1, 3]] = xy[:, [1, 3]].clip(0, height)
    return xy.astype(np.float32)


@pytest.mark.parametrize("index", range(4))
def test_stretch_input_is_bit_identical_to_upstream(index: int) -> None:
    image = _image(f"val_0000{index}.jpg")
    plan = plan_input((image.shape[1], image.shape[0]), (256, 256), keep_ratio=False, dynamic_hw=False)
    ours = preprocess(image, plan, UPSTREAM_MEAN_BGR, UPSTREAM_STD_BGR)
    upstream = np.load(SHAPES / "raw" / f"val_0000{index}_input.npy")[0]
    assert ours.dtype == np.float32 and ours.shape == (3, 256, 256)
    np.testing.assert_array_equal(ours, upstream)  # tolerance 0: bit-exact


def test_stretch_plans_match_upstream_warp_matrices() -> None:
    data = json.loads((SHAPES / "detections_upstream.json").read_text())
    for entry in data["images"]:
        plan = plan_input((entry["width"], entry["height"]), (256, 256), keep_ratio=False, dynamic_hw=False)
        np.testing.assert_array_equal(plan.matrix, np.array(entry["warp_matrix"]))
        assert plan.content_size == plan.canvas_size == (256, 256)
        assert [1, 3, plan.canvas_size[1], plan.canvas_size[0]] == entry["model_input_shape_nchw"]


def test_keep_ratio_plans_match_upstream_matrices_and_shapes() -> None:
    data = json.loads((SHAPES / "detections_upstream_keep_ratio.json").read_text())
    assert data["keep_ratio"] is True
    for entry in data["images"]:
        src = (entry["width"], entry["height"])
        plan = plan_input(src, (256, 256), keep_ratio=True, dynamic_hw=True)
        np.testing.assert_array_equal(plan.matrix, np.array(entry["warp_matrix"]))  # exact, float64
        assert [1, 3, plan.canvas_size[1], plan.canvas_size[0]] == entry["model_input_shape_nchw"]
        assert all(c % 32 == 0 for c in plan.canvas_size)
        assert all(c <= d for c, d in zip(plan.content_size, plan.canvas_size, strict=True))
        fixed = plan_input(src, (256, 256), keep_ratio=True, dynamic_hw=False)
        assert fixed.canvas_size == (256, 256) and fixed.content_size == plan.content_size
        np.testing.assert_array_equal(fixed.matrix, plan.matrix)


def test_keep_ratio_example_from_the_brief() -> None:
    plan = plan_input((482, 245), (256, 256), keep_ratio=True, dynamic_hw=True)
    assert plan.content_size == (256, 130) and plan.canvas_size == (256, 160)
    np.testing.assert_allclose(plan.matrix, [[0.53061, 0, 0.12245], [0, 0.53061, 0], [0, 0, 1]], atol=1e-5)


def test_keep_ratio_input_pads_with_zero_after_normalisation() -> None:
    image = _image("val_00000.jpg")
    plan = plan_input((image.shape[1], image.shape[0]), (256, 256), keep_ratio=True, dynamic_hw=False)
    batch = np.full((2, 3, 256, 256), 7.0, dtype=np.float32)
    result = preprocess(image, plan, UPSTREAM_MEAN_BGR, UPSTREAM_STD_BGR, out=batch[1])
    assert np.shares_memory(result, batch) and np.all(batch[0] == 7.0)
    cw, ch = plan.content_size
    warped = warp_perspective(image, plan.matrix, (cw, ch)).astype(np.float32) / 255
    mean = np.array(UPSTREAM_MEAN_BGR, dtype=np.float32) / 255
    std = np.array(UPSTREAM_STD_BGR, dtype=np.float32) / 255
    expected = ((warped - mean) / std).transpose(2, 0, 1)  # upstream's float32 arithmetic
    np.testing.assert_array_equal(batch[1, :, :ch, :cw], expected)
    assert np.all(batch[1, :, ch:, :] == 0) and np.all(batch[1, :, :, cw:] == 0)


def test_rgb_channel_order_reverses_the_planes() -> None:
    image = _image("val_00001.jpg")
    plan = plan_input((image.shape[1], image.shape[0]), (128, 96), keep_ratio=False, dynamic_hw=False)
    bgr = preprocess(image, plan, (0, 0, 0), (1, 1, 1))
    rgb = preprocess(image, plan, (0, 0, 0), (1, 1, 1), channel_order="RGB")
    np.testing.assert_array_equal(rgb, bgr[::-1])
    blue = warp_perspective(image, plan.matrix, (128, 96))[:, :, 0]
    np.testing.assert_allclose(bgr[0], blue, atol=1e-4)  # (v/255 - 0)/(1/255) in float32 is v up to rounding


def test_preprocess_rejects_bad_input() -> None:
    plan = plan_input((10, 8), (32, 32), keep_ratio=False, dynamic_hw=False)
    with pytest.raises(InvalidImageError):
        preprocess(np.zeros((8, 10, 3), np.float32), plan, (0, 0, 0), (1, 1, 1))
    with pytest.raises(InvalidImageError):
        preprocess(np.zeros((9, 10, 3), np.uint8), plan, (0, 0, 0), (1, 1, 1))
    with pytest.raises(InvalidArgumentError):
        preprocess(np.zeros((8, 10, 3), np.uint8), plan, (0, 0, 0), (1, 1, 1), out=np.zeros((3, 32, 31), np.float32))
    with pytest.raises(InvalidArgumentError):
        plan_input((0, 8), (32, 32), keep_ratio=False, dynamic_hw=False)


@pytest.mark.parametrize("keep_ratio", [False, True])
def test_boxes_to_original_equals_upstream_warp_boxes_and_round_trips(keep_ratio: bool) -> None:
    rng = np.random.default_rng(0)
    plan = plan_input((482, 245), (256, 256), keep_ratio=keep_ratio, dynamic_hw=True)
    w, h = plan.content_size
    xy = rng.uniform(0, [482, 245], size=(200, 2))
    wh = rng.uniform(0, 150, size=(200, 2))
    original = np.concatenate([xy, np.minimum(xy + wh, [482, 245])], axis=1).astype(np.float32)
    boxes = _upstream_warp_boxes(original, plan.matrix, w, h)  # network-input pixels
    ours = boxes_to_original(boxes, plan)
    assert ours.dtype == np.float32 and ours.shape == (200, 4)
    np.testing.assert_array_equal(ours, _upstream_warp_boxes(boxes, np.linalg.inv(plan.matrix), 482, 245))
    np.testing.assert_allclose(ours, original, atol=1e-3)  # float32 round trip of pixel coordinates
    assert boxes_to_original(np.zeros((0, 4), np.float32), plan).shape == (0, 4)


def test_boxes_to_original_clips_to_the_image() -> None:
    plan = InputPlan((100, 50), (200, 200), (200, 200), np.diag([2.0, 4.0, 1.0]))
    out = boxes_to_original(np.array([[-10, -10, 250, 250], [20, 40, 60, 80]], np.float32), plan)
    np.testing.assert_array_equal(out, [[0, 0, 100, 50], [10, 10, 30, 20]])


def test_lookup_kernel_is_built() -> None:
    # Not a skip: an install that silently lost its kernel would normalise 2-4x slower with every other test green.
    from nanodet_infer import preprocess as shared

    assert shared._preprocess_kernel is not None, "nanodet_infer._preprocess_kernel is not built: run pip install -e ."


@pytest.mark.parametrize("channel_order", ["BGR", "RGB"])
def test_normalisation_kernel_gives_cv2_luts_values(channel_order: str) -> None:
    """The C lookup writes what cv2.LUT writes, into the top-left of a larger canvas; a strided canvas takes cv2."""
    from nanodet_infer import preprocess as shared

    rng = np.random.default_rng(5)
    content = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    tables = shared._lookup_tables(UPSTREAM_MEAN_BGR, UPSTREAM_STD_BGR)
    want = np.full((3, 40, 64), np.nan, np.float32)
    shared.lookup_into(content, tables, channel_order == "RGB", want, compiled=False)
    got = np.full((3, 40, 64), np.nan, np.float32)
    shared.lookup_into(content, tables, channel_order == "RGB", got, compiled=True)
    assert got.tobytes() == want.tobytes() and np.isnan(got[:, 37:]).all() and np.isnan(got[:, :, 53:]).all()
    source = 2 if channel_order == "RGB" else 0
    assert want[0, :37, :53].tobytes() == tables[0][content[..., source], 0].tobytes()
    strided = np.full((3, 40, 128), np.nan, np.float32)[:, :, ::2]
    shared.lookup_into(content, tables, channel_order == "RGB", strided, compiled=True)
    assert np.array_equal(strided, want, equal_nan=True)
