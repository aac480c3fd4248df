"""Request bytes → image: the size read from the header (never decoding) matches what OpenCV decodes, for every
accepted format; a header over the pixel budget is refused before decoding; other bytes are typed errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _images import png_declaring

from nanodet_infer.errors import ImageReadError, ImageTooLargeError
from nanodet_infer.images import load_image
from nanodet_infer.serve.image_bytes import decode_image, image_size_from_header


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".webp"])
@pytest.mark.parametrize("size", [(1, 1), (37, 23), (640, 480)])
def test_header_size_matches_the_decoded_image(suffix, size, tmp_path) -> None:
    width, height = size
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    data = cv2.imencode(suffix, image)[1].tobytes()
    assert image_size_from_header(data) == (width, height)
    decoded = decode_image(data, max_pixels=width * height)
    (tmp_path / f"image{suffix}").write_bytes(data)  # the same bytes as a file, read as detect reads files
    np.testing.assert_array_equal(decoded, load_image(tmp_path / f"image{suffix}"))


def test_an_opencv_failure_is_an_image_read_error(monkeypatch) -> None:
    def fail(*args):
        raise cv2.error("OpenCV(5.0.0) imgcodecs: image too large")

    monkeypatch.setattr(cv2, "imdecode", fail)
    with pytest.raises(ImageReadError, match="could not be decoded by OpenCV"):
        decode_image(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes(), max_pixels=100)


def test_lossless_webp_header() -> None:
    image = np.zeros((9, 13, 3), np.uint8)
    data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert data[12:16] == b"VP8L" and image_size_from_header(data) == (13, 9)


def test_over_the_pixel_budget_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match="100000x100000"):
        decode_image(png_declaring(100_000, 100_000), max_pixels=50_000_000)


# a Windows icon: a format whose size the header parser does not read (GIF's, like cv2.imread's formats, it does)
@pytest.mark.parametrize("data", [b"", b"\0\0\1\0\1\0....", b"\xff\xd8\xff", png_declaring(4, 4), b"BM" + b"\0" * 40])
def test_unreadable_bytes_are_image_read_errors(data) -> None:
    with pytest.raises(ImageReadError):
        decode_image(data, max_pixels=10**6)
