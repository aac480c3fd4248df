"""images.load_image: every accepted form becomes BGR uint8 HxWx3 (contiguous); every bad one a clear error."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import SHAPES

from nanodet_infer.errors import ImageReadError, InvalidImageError, NanoDetError
from nanodet_infer.images import load_image

IMAGE = SHAPES / "images" / "val_00000.jpg"


def _bgr(h: int = 5, w: int = 7) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_path_str_and_pathlib_match_cv2_imread():
    expected = cv2.imread(str(IMAGE))
    for source in (IMAGE, str(IMAGE)):
        image = load_image(source)
        assert image.dtype == np.uint8 and image.shape == expected.shape and image.flags.c_contiguous
        np.testing.assert_array_equal(image, expected)


def test_bgr_array_passes_through_without_copy():
    image = _bgr()
    assert load_image(image) is image


def test_grayscale_and_single_channel():
    gray = _bgr()[:, :, 0].copy()
    for source in (gray, gray[:, :, None]):
        image = load_image(source)
        assert image.shape == (5, 7, 3)
        for c in range(3):
            np.testing.assert_array_equal(image[:, :, c], gray)


def test_bgra_drops_alpha():
    bgra = np.dstack([_bgr(), np.full((5, 7), 9, np.uint8)])
    np.testing.assert_array_equal(load_image(bgra), bgra[:, :, :3])


def test_non_contiguous_and_read_only():
    big = _bgr(10, 14)
    strided = big[::2, ::2]
    assert not strided.flags.c_contiguous
    image = load_image(strided)
    assert image.flags.c_contiguous
    np.testing.assert_array_equal(image, strided)
    rgb_view = big[:, :, ::-1]
    np.testing.assert_array_equal(load_image(rgb_view), rgb_view)
    frozen = _bgr()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(load_image(frozen), frozen)
    frozen_gray = frozen[:, :, 0]
    assert load_image(frozen_gray).shape == (5, 7, 3)


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (None, "image is None"),
        ([[1, 2], [3, 4]], "numpy array"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((4, 0), np.uint8), "empty"),
        (np.zeros((4, 5, 3), np.float32), "(img * 255)"),
        (np.zeros((4, 5, 3), np.float64), "(img * 255)"),
        (np.zeros((4, 5, 3), np.uint16), "img >> 8"),
        (np.zeros((4, 5, 3), np.int32), "clip(0, 255)"),
        (np.zeros((4, 5, 3), bool), "astype(np.uint8)"),
        (np.zeros((4, 5, 2), np.uint8), "HxWx4"),
        (np.zeros((4, 5, 5), np.uint8), "HxWx4"),
        (np.zeros((3, 8, 9), np.uint8), "transpose(1, 2, 0)"),
        (np.zeros((2, 4, 5, 3), np.uint8), "detect_batch"),
        (np.zeros(7, np.uint8), "HxW"),
        (np.uint8(3), "numpy array"),
        (np.array(3, np.uint8), "HxW"),
    ],
)
def test_bad_arrays(image, fragment):
    with pytest.raises(InvalidImageError) as info:
        load_image(image)
    assert fragment in str(info.value)
    assert isinstance(info.value, (ValueError, NanoDetError))


def test_bad_paths(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError, match="is a directory"):
        load_image(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all" * 10)
    for path in (empty, garbage, str(garbage)):
        with pytest.raises(ImageReadError, match="not a decodable image"):
            load_image(path)
    with pytest.raises(OSError):  # ImageReadError is also an OSError
        load_image(garbage)
