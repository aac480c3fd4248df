"""NanoDet-Plus's warp reproduces OpenCV's ``warpPerspective`` arithmetic bit for bit, whatever OpenCV is installed.

References: ``tests/data/dependency_references.json``, sha256 digests of the real ``cv2.warpPerspective`` outputs of
OpenCV 5.0.0 (``opencv-5.0``, the arithmetic upstream's fixtures were made with) and 4.12.0 (``opencv-4``) on 8
fixture images x 4 resize plans (``tests/tools/make_dependency_references.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from nanodet_infer.errors import IncompatibleModelError, InvalidArgumentError, MetadataError
from nanodet_infer.families.nanodet_plus import warp
from nanodet_infer.families.nanodet_plus.resize import plan_input
from nanodet_infer.families.nanodet_plus.section import NanoDetPlusSection

DATA = Path(__file__).resolve().parents[2] / "data"
REFS = json.loads((DATA / "dependency_references.json").read_text())
IMAGES = DATA / "shapes-m-256" / "images"
PLANS = {"256x256": ((256, 256), False), "256x256-keep": ((256, 256), True), "320x320-keep": ((320, 320), True),
         "416x320-keep": ((416, 320), True)}


def _cases(arithmetic: str):
    for name, want in sorted(REFS["warp"][arithmetic].items()):
        file, plan_name = name.split("@")
        image = cv2.imread(str(IMAGES / file), cv2.IMREAD_COLOR)
        size, keep_ratio = PLANS[plan_name]
        plan = plan_input((image.shape[1], image.shape[0]), size, keep_ratio=keep_ratio, dynamic_hw=True)
        yield name, image, plan, want


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize("arithmetic", warp.ARITHMETICS)
def test_warp_matches_the_reference_release(arithmetic: str) -> None:
    made_with = REFS["made_with"][f"warp/{arithmetic}"]
    wrong = [
        name
        for name, image, plan, want in _cases(arithmetic)
        if _digest(warp.warp_perspective(image, plan.matrix, plan.content_size, arithmetic)) != want
    ]
    assert not wrong, (
        f"warp arithmetic {arithmetic!r} (kernel {warp.kernel(arithmetic)}) no longer reproduces {made_with} "
        f"with the installed OpenCV {cv2.__version__} / numpy {np.__version__} on {len(wrong)} cases: {wrong[:3]}"
    )


def test_numpy_interpolation_matches_opencv_5_0() -> None:
    """The fallback kernel (used where cv2.remap cannot reproduce 5.0, e.g. OpenCV 4.x) is exact on its own."""
    for name, image, plan, want in list(_cases("opencv-5.0"))[::3]:
        sx, sy = warp._float_maps(plan.matrix, plan.content_size)
        assert _digest(warp.interpolate_float(image, sx, sy)) == want, name


def test_installed_opencv_uses_remap_for_both_arithmetics() -> None:
    """With OpenCV 5.x (what the constraints pin), both arithmetics run in cv2.remap, not the slow numpy kernel."""
    if not cv2.__version__.startswith("5."):
        pytest.skip(f"OpenCV {cv2.__version__}: the 5.0 arithmetic runs in numpy here (checked above)")
    assert warp.kernel("opencv-5.0") == "cv2.remap" and warp.kernel("opencv-4") == "cv2.remap"


def test_probe_detects_a_remap_that_does_not_reproduce(monkeypatch: pytest.MonkeyPatch) -> None:
    warp.remap_reproduces.cache_clear()
    monkeypatch.setattr(warp.cv2, "remap", lambda image, *args, **kwargs: np.zeros_like(image)[: len(args[0])])
    try:
        assert warp.kernel("opencv-5.0") == "numpy"
        with pytest.raises(IncompatibleModelError, match="--resize-arithmetic opencv-5.0"):
            warp.kernel("opencv-4")
    finally:
        warp.remap_reproduces.cache_clear()


def test_matrix_outside_the_image_gives_zeros_and_border_mixes_with_zero() -> None:
    image = np.full((10, 12, 3), 200, dtype=np.uint8)
    away = np.array([[1.0, 0, 100], [0, 1, 100], [0, 0, 1]])
    assert not warp.warp_perspective(image, away, (8, 6)).any()
    half = np.array([[1.0, 0, 0.5], [0, 1, 0], [0, 0, 1]])  # destination x = 0 reads source x = -0.5
    out = warp.warp_perspective(image, half, (12, 10))
    assert out[0, 0, 0] == 100 and out[0, 5, 0] == 200


def test_unknown_arithmetic_is_a_typed_error() -> None:
    with pytest.raises(InvalidArgumentError, match="opencv-5.0, opencv-4"):
        warp.kernel("opencv-3")
    with pytest.raises(MetadataError, match="resize_arithmetic"):
        NanoDetPlusSection(reg_max=7, strides=(8, 16, 32), resize_arithmetic="opencv-3").validate()


def test_opencv_inverse_of_a_singular_matrix_is_zero() -> None:
    assert not warp.opencv_inverse(np.zeros((3, 3))).any()
