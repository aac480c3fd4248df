"""``Detector.stream``: the throughput API yields exactly the synchronous results, in input order."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from conftest import SHAPES

from nanodet_infer import Detector
from nanodet_infer.errors import ImageReadError, InvalidArgumentError

MODEL = SHAPES / "upstream_export.onnx"
CLASS_NAMES = ("circle", "rectangle", "triangle")
IMAGES = sorted((SHAPES / "images").glob("*.jpg"))[:8]


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def detector(request) -> Detector:
    return Detector(MODEL, backend=request.param, num_threads=1, score_threshold=0.05, class_names=CLASS_NAMES)


def _same(a, b) -> bool:
    return (
        np.array_equal(a.xyxy, b.xyxy)
        and np.array_equal(a.scores, b.scores)
        and np.array_equal(a.class_ids, b.class_ids)
        and a.image_size == b.image_size
    )


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_stream_equals_synchronous_calls_in_order(detector, workers):
    # arrays and paths mixed, more images than the read-ahead window, given as a generator
    images = [cv2.imread(str(p)) if i % 2 else p for i, p in enumerate(IMAGES)]
    expected = [detector(image) for image in images]
    got = list(detector.stream((image for image in images), workers=workers))
    assert len(got) == len(expected) and all(_same(a, b) for a, b in zip(got, expected, strict=True))
    assert sum(len(d) for d in got) > 0


def test_stream_is_lazy_and_can_stop_early(detector):
    consumed = []

    def source():
        for path in itertools.cycle(IMAGES):  # endless: only a bounded window may be read ahead
            consumed.append(path)
            yield path

    stream = detector.stream(source(), workers=2)
    first = [next(stream) for _ in range(3)]
    stream.close()
    assert all(_same(a, detector(p)) for a, p in zip(first, IMAGES, strict=False))
    assert len(consumed) <= 3 + 2 * 2


def test_stream_raises_an_image_error_in_its_turn(detector, tmp_path):
    missing = tmp_path / "missing.jpg"
    stream = detector.stream([IMAGES[0], missing, IMAGES[1]], workers=2)
    assert _same(next(stream), detector(IMAGES[0]))
    with pytest.raises(ImageReadError, match="missing.jpg"):
        next(stream)


@pytest.mark.parametrize(("images", "workers"), [(IMAGES[0], 2), (cv2.imread(str(IMAGES[0])), 2), (IMAGES, 0)])
def test_stream_argument_errors(detector, images, workers):
    with pytest.raises(InvalidArgumentError):
        detector.stream(images, workers=workers)
