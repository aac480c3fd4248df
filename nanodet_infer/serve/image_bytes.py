"""Encoded image bytes from a request → BGR ``uint8 [H, W, 3]``, with the pixel budget checked *before* decoding.

A 50 KB PNG can declare 60000x60000 pixels (10 GiB once decoded): :func:`image_size_from_header` reads the
width and height from the file header (JPEG SOFn, PNG IHDR, BMP, WebP VP8/VP8L/VP8X) without decoding, and
:func:`decode_image` refuses an image over ``max_pixels`` before OpenCV allocates anything. Formats whose size
cannot be read from the header are refused (a typed :class:`ImageReadError` naming the formats accepted).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from ..errors import ImageReadError, InvalidImageError

FORMATS = "JPEG, PNG, BMP or WebP"
"""The encodings the service decodes (the ones whose size the header gives)."""

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG markers up to the first SOFn segment; its height/width fields."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """``(W, H)`` an encoded JPEG / PNG / BMP / WebP declares in its header, or None when the header does not
    say (another format, or truncated). Reads only the first bytes; never decodes."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    return None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode ``data`` (JPEG, PNG, BMP or WebP bytes) into BGR ``uint8 [H, W, 3]``, exactly as ``cv2.imread``
    reads the same file. Raises :class:`ImageReadError` when the header gives no size or the bytes do not
    decode, and :class:`InvalidImageError` when ``W * H`` exceeds ``max_pixels`` (checked before decoding)."""
    size = image_size_from_header(data)
    if size is None:
        raise ImageReadError(f"the body is not a {FORMATS} image (or its header is truncated); send one of those")
    width, height = size
    if width * height > max_pixels:
        raise InvalidImageError(
            f"the image declares {width}x{height} = {width * height} pixels, over the server's budget of "
            f"{max_pixels}; send a smaller image (or start the server with a larger --max-pixels)"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape[:2] not in ((height, width), (width, height)):  # EXIF may rotate
        raise ImageReadError(f"the body is not a decodable {FORMATS} image (empty, truncated or corrupt)")
    return image
