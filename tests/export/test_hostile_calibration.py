"""Reliability round 3, ``--calib-images``: symlink loops, FIFOs, decoder bombs and non-images named ``.jpg`` end in
one typed error or are passed over; nothing hangs, nothing is decoded beyond the pixel budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _images import png_declaring
from conftest import SHAPES
from nanodet_export.quantize import find_calibration_images

from nanodet_infer.errors import ImageReadError, ImageTooLargeError

IMAGES = sorted((SHAPES / "images").glob("*.jpg"))


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "calib"
    folder.mkdir()
    for image in IMAGES[:3]:
        (folder / image.name).write_bytes(image.read_bytes())
    return folder


def test_symlink_loops_and_fifos_are_passed_over_without_hanging(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    os.mkfifo(folder / "pipe.jpg")  # opening it for reading would block forever
    (folder / "sub.jpg").symlink_to(folder, target_is_directory=True)
    calibration = find_calibration_images(folder, None)
    assert [p.name for p in calibration.paths] == [p.name for p in IMAGES[:3]]


def test_a_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    folder = _folder(tmp_path)

    (folder / "a.png").write_bytes(png_declaring(10**5, 10**5))
    with pytest.raises(ImageTooLargeError, match="100000x100000"):
        find_calibration_images(folder, None)


def test_a_non_image_named_jpg_is_named(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.jpg"):
        find_calibration_images(folder, None)
