"""Thread safety: one Detector shared by 8 threads x 200 calls gives exactly the serial results, on both backends.

Uses upstream's own export of the shapes model (a foreign model: ``num_classes=3``) with one engine thread,
the 20 fixture images as arrays (every fifth call by path) and, every third call, ``detect_batch`` of two
images. Every result must equal the serial result bit for bit (boxes, scores, class ids).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from conftest import SHAPES

from nanodet_infer import Detector
from nanodet_infer.results import Detections

THREADS = 8
CALLS = 200
PATHS = sorted((SHAPES / "images").glob("*.jpg"))


def _same(a: Detections, b: Detections) -> bool:
    return (
        np.array_equal(a.xyxy, b.xyxy)
        and np.array_equal(a.scores, b.scores)
        and np.array_equal(a.class_ids, b.class_ids)
        and a.image_size == b.image_size
    )


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in PATHS]


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_shared_detector_equals_serial(engine: str, images: list[np.ndarray]) -> None:
    detector = Detector(
        SHAPES / "upstream_export.onnx", backend=engine, num_threads=1, num_classes=3, score_threshold=0.3
    )
    serial = [detector(image) for image in images]
    assert sum(len(d) for d in serial) > 0  # not vacuous: there are detections to compare
    start = threading.Barrier(THREADS)
    failures: list[str] = []
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            start.wait()
            for call in range(CALLS):
                k = (offset * 7 + call) % len(images)
                if call % 3 == 2:
                    j = (k + 1) % len(images)
                    got = detector.detect_batch([images[k], images[j]])
                    pairs = [(got[0], k), (got[1], j)]
                else:
                    pairs = [(detector(PATHS[k] if call % 5 == 0 else images[k]), k)]
                failures.extend(f"thread {offset} call {call} image {i}" for d, i in pairs if not _same(d, serial[i]))
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert not failures, failures[:10]
