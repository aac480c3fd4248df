"""The compiled greedy NMS gives bit-identical results to the numpy path it replaces for small candidate sets."""

from __future__ import annotations

import numpy as np
import pytest

from nanodet_infer import nms, nms_kernel
from nanodet_infer.families.nanodet_plus.decode import make_priors
from nanodet_infer.families.nanodet_plus.postprocess import postprocess


def test_kernel_is_built() -> None:
    # Not a skip: an install that silently lost its kernel would run 3x slower with every other test green.
    assert nms_kernel._nms_kernel is not None, "nanodet_infer._nms_kernel is not built: run pip install -e ."


def _numpy_path(monkeypatch: pytest.MonkeyPatch, call):  # noqa: ANN001, ANN202
    with monkeypatch.context() as patch:
        patch.setattr(nms_kernel, "AVAILABLE", False)
        return call()


def _kernel_path(monkeypatch: pytest.MonkeyPatch, call):  # noqa: ANN001, ANN202
    with monkeypatch.context() as patch:
        patch.setattr(nms_kernel, "AVAILABLE", True)
        return call()


def _candidates(rng: np.random.Generator, m: int, classes: int, size: float) -> tuple[np.ndarray, ...]:
    """Clustered boxes (many near-threshold overlaps), repeated scores and boxes, a few non-finite boxes."""
    centres = rng.uniform(0, size, (max(1, m // 12), 2)).astype(np.float32)
    pick = rng.integers(0, len(centres), m)
    xy = centres[pick] + rng.normal(0, 3, (m, 2)).astype(np.float32)
    wh = rng.uniform(1, size / 4, (m, 2)).astype(np.float32)
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1).astype(np.float32)
    boxes[rng.random(m) < 0.05] = boxes[0]  # exact duplicates
    boxes[rng.random(m) < 0.02, 2] = np.nan
    boxes[rng.random(m) < 0.01, 3] = np.inf
    scores = rng.choice(rng.random(max(1, m // 3)).astype(np.float32), m)  # ties
    class_ids = rng.integers(0, classes, m)
    return boxes, scores, class_ids


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("iou_threshold", [0.0, 0.3, 0.6, 0.999, 1.0])
def test_batched_nms_identical(monkeypatch: pytest.MonkeyPatch, seed: int, iou_threshold: float) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(0, 1500))
    boxes, scores, class_ids = _candidates(rng, m, int(rng.integers(1, 81)), float(rng.choice([32.0, 320.0, 4096.0])))
    for max_keep in (None, 1, 100):
        def call(k: int | None = max_keep) -> np.ndarray:
            return nms.batched_nms(boxes, scores, class_ids, iou_threshold, k)

        expected, got = _numpy_path(monkeypatch, call), _kernel_path(monkeypatch, call)
        assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_single_class_nms_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(99)
    boxes, scores, _ = _candidates(rng, 800, 1, 640.0)
    expected = _numpy_path(monkeypatch, lambda: nms.nms(boxes, scores, 0.45))
    assert np.array_equal(_kernel_path(monkeypatch, lambda: nms.nms(boxes, scores, 0.45)), expected)


@pytest.mark.parametrize("seed", range(4))
def test_postprocess_identical(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """NanoDet-Plus's post-process at upstream's evaluation threshold, both paths, every output array."""
    rng = np.random.default_rng(seed)
    priors = make_priors((256, 256), (8, 16, 32, 64))
    scores = (rng.random((len(priors), 3)) ** 6).astype(np.float32)
    box_dist = rng.normal(0, 2, (len(priors), 32)).astype(np.float32)

    def call() -> tuple[np.ndarray, ...]:
        return postprocess(scores, box_dist, priors, reg_max=7, score_threshold=0.05, iou_threshold=0.6,
                           max_detections=100, canvas_size=(256, 256))

    expected, got = _numpy_path(monkeypatch, call), _kernel_path(monkeypatch, call)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


def test_bad_buffers_raise() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        nms_kernel._nms_kernel.greedy_nms(
            np.zeros((2, 4), np.float32), np.arange(3), np.zeros(3, np.int64), 1.0, 0.5, 3, np.empty(3, np.int64)
        )
