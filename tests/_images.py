"""Decoder-bomb test images: a PNG whose header declares any size while the file stays ~100 bytes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, *, pixel_data: bool = False) -> bytes:
    """PNG bytes whose IHDR declares ``width`` x ``height`` (RGB, 8 bits). Without ``pixel_data`` nothing follows the
    header (a bomb's header, cut there); with it a tiny deflate stream and IEND follow (a complete-looking file)."""
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return png + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"") if pixel_data else png


def write_png_declaring(path: Path, width: int, height: int) -> Path:
    """:func:`png_declaring` with its pixel data, written to ``path``; returns ``path``."""
    path.write_bytes(png_declaring(width, height, pixel_data=True))
    return path
