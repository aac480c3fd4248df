"""Turn a path or an array into the image every other stage expects: BGR ``uint8`` ``[H, W, 3]``, C-contiguous.

Arrays are taken to be in OpenCV's channel order (BGR / BGRA). Grayscale ``[H, W]`` / ``[H, W, 1]`` and
BGRA ``[H, W, 4]`` are converted; anything else raises :class:`InvalidImageError` with the fix in the
message. Paths are decoded with ``cv2.imread`` (3-channel BGR, 8-bit, EXIF orientation applied), exactly as
upstream's demo reads them; a missing or undecodable file raises :class:`ImageReadError`.

Decoder bombs: before a file is decoded, the size its header declares (:mod:`.image_header`) is compared with a
pixel budget, :data:`MAX_IMAGE_PIXELS` unless the caller gives another (``Detector(max_image_pixels=...)``,
``--max-image-pixels``); above it :class:`ImageTooLargeError` is raised and nothing is decoded. A format whose
header is not parsed there is decoded under OpenCV's own limit (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30 by default)
and the decoded size is checked against the budget.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageReadError, ImageTooLargeError, InvalidImageError
from .image_header import declared_size

ImageInput = str | os.PathLike | np.ndarray
"""What :func:`load_image` (and the :class:`~nanodet_infer.Detector`) accepts."""

MAX_IMAGE_PIXELS = 100_000_000
"""Default pixel budget of an image file (width x height as its header declares it): 100 megapixels, 300 MB once
decoded as BGR; PIL's default decompression-bomb limit is 89 megapixels."""

_DTYPE_FIXES = {
    "f": "float images in [0, 1]: (img * 255).round().clip(0, 255).astype(np.uint8); in [0, 255]: "
    "img.clip(0, 255).astype(np.uint8)",
    "u": "16-bit images: (img >> 8).astype(np.uint8), or cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)",
    "i": "integer images in [0, 255]: img.clip(0, 255).astype(np.uint8)",
    "b": "boolean masks: img.astype(np.uint8) * 255",
}


def load_image(image: ImageInput, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read or validate ``image`` and return it as a C-contiguous BGR ``uint8 [H, W, 3]`` array.

    A valid BGR array that is already contiguous is returned as is (not copied); read-only and
    non-contiguous arrays are accepted (the latter are copied). A file declaring more than ``max_pixels``
    pixels raises :class:`ImageTooLargeError` before it is decoded (arrays are already in memory: not checked).
    """
    if isinstance(image, (str, os.PathLike)):
        return _read(Path(image), max_pixels)
    if image is None:
        raise InvalidImageError(
            "image is None; if it came from cv2.imread, the path was wrong or the file unreadable "
            "(pass the path itself to get a precise error)"
        )
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(
            f"image must be a path or a numpy array (BGR uint8 HxWx3), got {type(image).__name__}; "
            "for a PIL image use cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)"
        )
    if image.size == 0:
        raise InvalidImageError(f"image is empty (shape {image.shape}); pass an image with at least one pixel")
    if image.dtype != np.uint8:
        fix = _DTYPE_FIXES.get(image.dtype.kind, "convert to 8-bit with .astype(np.uint8)")
        raise InvalidImageError(f"image dtype is {image.dtype}, expected uint8; convert {fix}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] > 4:
        hint = "it looks channels-first; use img.transpose(1, 2, 0)"
    elif image.ndim == 4:
        hint = "it looks like a batch; pass a list of images to detect_batch"
    else:
        hint = "pass a grayscale HxW, BGR HxWx3 or BGRA HxWx4 image"
    raise InvalidImageError(f"image shape {image.shape} is not HxW, HxWx1, HxWx3 or HxWx4; {hint}")


def check_pixels(path: Path, max_pixels: int) -> None:
    """:class:`ImageTooLargeError` when ``path``'s header declares more than ``max_pixels`` pixels, and
    :class:`ImageReadError` when it names a format but is malformed; nothing is decoded."""
    try:
        size = declared_size(path)
    except ValueError as exc:
        raise ImageReadError(f"{str(path)!r} is not a decodable image ({exc})") from None
    except OSError as exc:
        raise ImageReadError(f"cannot read image {str(path)!r} ({exc.strerror})") from None
    if size is not None:
        _check_budget(path, size, max_pixels, "declares")


def _check_budget(path: Path, size: tuple[int, int], max_pixels: int, verb: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image {str(path)!r} {verb} {width}x{height} = {width * height / 1e6:.1f} megapixels, above the budget of "
            f"{max_pixels / 1e6:g} megapixels; if you trust the file, raise --max-image-pixels "
            "(Python: Detector(max_image_pixels=...))"
        )


def _read(path: Path, max_pixels: int) -> np.ndarray:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ImageReadError(f"image path {str(path)!r} {what}; pass the path of an image file")
    check_pixels(path, max_pixels)
    try:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's own limits (OPENCV_IO_MAX_IMAGE_PIXELS), a decoder failing
        reason = " ".join(str(exc).split())[-160:]
        raise ImageReadError(f"{str(path)!r} could not be decoded by OpenCV ({reason})") from None
    if image is None:
        raise ImageReadError(
            f"{str(path)!r} is not a decodable image (empty, truncated or an unsupported format); "
            "OpenCV reads JPEG, PNG, BMP, TIFF, WebP and others"
        )
    _check_budget(path, (image.shape[1], image.shape[0]), max_pixels, "decodes to")
    return image
