"""Drift guards: each dependency-computed step the families rely on, against stored reference digests.

The references (``tests/data/dependency_references.json``) were made by the libraries that made the upstream
fixtures (OpenCV 5.0.0; see ``tests/data/README.md``). A failure names the library and version that changed, so
an upgrade that would move detections is a one-line diagnosis. NanoDet-Plus's warp does not depend on the
installed OpenCV and has its own test (``tests/families/nanodet_plus/test_warp.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data"
REFS = json.loads((DATA / "dependency_references.json").read_text())
IMAGES = DATA / "shapes-m-256" / "images"
MADE_WITH = f"OpenCV {REFS['made_with']['opencv']}"


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_jpeg_decoding_matches_the_fixtures_opencv() -> None:
    """cv2.imread (libjpeg-turbo inside the OpenCV wheel) decodes the fixture JPEGs to the same pixels."""
    wrong = [name for name, want in REFS["imdecode"].items() if _digest(cv2.imread(str(IMAGES / name))) != want]
    assert not wrong, (
        f"cv2.imread decodes {wrong} differently with the installed OpenCV {cv2.__version__} than {MADE_WITH} "
        "(its bundled JPEG decoder changed): every family's input moves; pin opencv-python-headless"
    )


def test_linear_resize_matches_the_fixtures_opencv() -> None:
    """cv2.resize INTER_LINEAR (YOLOv7's letterbox) gives the same pixels as the fixtures' OpenCV."""
    wrong = []
    for name, want in REFS["resize"].items():
        file, size = name.split("@")
        w, h = (int(v) for v in size.split("x"))
        resized = cv2.resize(cv2.imread(str(IMAGES / file)), (w, h), interpolation=cv2.INTER_LINEAR)
        if _digest(resized) != want:
            wrong.append(name)
    assert not wrong, (
        f"cv2.resize(INTER_LINEAR) with the installed OpenCV {cv2.__version__} differs from {MADE_WITH} on "
        f"{len(wrong)} cases ({wrong[:3]}): YOLOv7's letterbox no longer reproduces upstream; pin "
        "opencv-python-headless or reproduce the resize as nanodet_infer/families/nanodet_plus/warp.py does"
    )


def test_normalisation_lookup_is_a_pure_table_read() -> None:
    """cv2.LUT / cv2.split (all families' normalisation) return the table entries exactly."""
    plane = np.arange(256, dtype=np.uint8).reshape(16, 16)
    table = (np.arange(256, dtype=np.float32) * np.float32(0.37) - np.float32(3.1)).reshape(256, 1)
    looked_up = cv2.LUT(plane, table)
    np.testing.assert_array_equal(looked_up.ravel(), table.ravel(), err_msg=f"cv2.LUT in OpenCV {cv2.__version__}")
    planes = cv2.split(np.dstack([plane, plane + 1, plane + 2]))
    assert all(np.array_equal(p, plane + i) for i, p in enumerate(planes)), f"cv2.split in OpenCV {cv2.__version__}"
