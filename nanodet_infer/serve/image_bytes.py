"""Encoded image bytes from a request → BGR ``uint8 [H, W, 3]``, with the pixel budget checked *before* decoding.

A 50 KB PNG can declare 60000x60000 pixels (10 GiB once decoded): :func:`image_size_from_header` reads the
width and height from the file header (the runtime's :mod:`nanodet_infer.image_header`) without decoding, and
:func:`decode_image` refuses an image over ``max_pixels`` before OpenCV allocates anything. Formats whose size
cannot be read from the header are refused (a typed :class:`ImageReadError` naming the formats accepted).
"""

from __future__ import annotations

import io

import cv2
import numpy as np

from ..errors import ImageReadError, ImageTooLargeError
from ..image_header import declared_size_of

FORMATS = "JPEG, PNG, BMP, WebP, TIFF or another format OpenCV decodes"
"""The encodings the service decodes (the ones whose size the header gives: :mod:`nanodet_infer.image_header`)."""


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """``(W, H)`` an encoded image declares in its header (:func:`nanodet_infer.image_header.declared_size_of`,
    the formats ``cv2.imread`` decodes), or None when the header does not say (another format, or a truncated or
    malformed header). Reads only the first bytes; never decodes."""
    try:
        return declared_size_of(io.BytesIO(data))
    except ValueError:
        return None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode ``data`` (encoded image bytes, :data:`FORMATS`) into BGR ``uint8 [H, W, 3]``, exactly as ``cv2.imread``
    reads the same file. Raises :class:`ImageReadError` when the header gives no size or the bytes do not
    decode, and :class:`ImageTooLargeError` (an ``ImageReadError``) when ``W * H`` exceeds ``max_pixels`` (checked
    before decoding)."""
    size = image_size_from_header(data)
    if size is None:
        raise ImageReadError(f"the body is not a {FORMATS} image (or its header is truncated); send one of those")
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image declares {width}x{height} = {width * height} pixels, over the server's budget of "
            f"{max_pixels}; send a smaller image (or start the server with a larger --max-image-pixels)"
        )
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's own limits (OPENCV_IO_MAX_IMAGE_PIXELS), a decoder failing: 400, not 500
        reason = " ".join(str(exc).split())[-160:]
        raise ImageReadError(f"the body could not be decoded by OpenCV ({reason})") from None
    if image is None or image.shape[:2] not in ((height, width), (width, height)):  # EXIF may rotate
        raise ImageReadError(f"the body is not a decodable {FORMATS} image (empty, truncated or corrupt)")
    return image
