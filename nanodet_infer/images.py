"""Turn a path or an array into the image every other stage expects: BGR ``uint8`` ``[H, W, 3]``, C-contiguous.

Arrays are taken to be in OpenCV's channel order (BGR / BGRA). Grayscale ``[H, W]`` / ``[H, W, 1]`` and
BGRA ``[H, W, 4]`` are converted; anything else raises :class:`InvalidImageError` with the fix in the
message. Paths are decoded with ``cv2.imread`` (3-channel BGR, 8-bit), exactly as upstream's demo reads
them; a missing or undecodable file raises :class:`ImageReadError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageReadError, InvalidImageError

ImageInput = str | os.PathLike | np.ndarray
"""What :func:`load_image` (and the :class:`~nanodet_infer.Detector`) accepts."""

_DTYPE_FIXES = {
    "f": "float images in [0, 1]: (img * 255).round().clip(0, 255).astype(np.uint8); in [0, 255]: "
    "img.clip(0, 255).astype(np.uint8)",
    "u": "16-bit images: (img >> 8).astype(np.uint8), or cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)",
    "i": "integer images in [0, 255]: img.clip(0, 255).astype(np.uint8)",
    "b": "boolean masks: img.astype(np.uint8) * 255",
}


def load_image(image: ImageInput) -> np.ndarray:
    """Read or validate ``image`` and return it as a C-contiguous BGR ``uint8 [H, W, 3]`` array.

    A valid BGR array that is already contiguous is returned as is (not copied); read-only and
    non-contiguous arrays are accepted (the latter are copied).
    """
    if isinstance(image, (str, os.PathLike)):
        return _read(Path(image))
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


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ImageReadError(f"image path {str(path)!r} {what}; pass the path of an image file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(
            f"{str(path)!r} is not a decodable image (empty, truncated or an unsupported format); "
            "OpenCV reads JPEG, PNG, BMP, TIFF, WebP and others"
        )
    return image
