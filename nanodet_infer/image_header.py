"""An image file's pixel dimensions read from its header, before anything decodes it (decoder-bomb guard).

A 1 kB PNG can declare 100000 x 100000 pixels; decoding it would allocate 30 GB. :func:`declared_size` reads
the ``(width, height)`` a file declares from its first bytes (JPEG: the segments before the frame header; TIFF:
the first IFD, wherever it lies), for the formats OpenCV decodes: PNG (IHDR), JPEG (the first SOF marker), BMP (the DIB
header, OS/2 and Windows), TIFF (classic and BigTIFF, the first image, as ``cv2.imread`` reads it), WebP
(``VP8 ``, ``VP8L``, ``VP8X``), GIF (the logical screen), PBM/PGM/PPM/PFM, Sun raster, Radiance HDR and
JPEG 2000 (JP2 ``ihdr``, J2K ``SIZ``). For any other
content it returns ``None`` (the caller decides); a header that names its format but is cut short or
inconsistent raises :class:`ValueError`. EXIF orientation does not change the pixel count, so it is ignored.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

HEADER_BYTES = 64 * 1024
"""How far into a file the PNM parser looks for its size (comments may come first)."""

_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
_JPEG_SEGMENTS = 4096  # more segments before the frame header than any real JPEG has
_TIFF_ENTRIES = 4096  # more IFD entries than any real TIFF holds


def declared_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` as ``path``'s header declares it; ``None`` for a format not parsed here.

    Raises :class:`ValueError` for a recognised header that is truncated or malformed, ``OSError`` when the
    file cannot be read.
    """
    with open(path, "rb") as f:
        return declared_size_of(f)


def declared_size_of(f: BinaryIO) -> tuple[int, int] | None:
    """:func:`declared_size` of an open binary file positioned at its start (e.g. ``io.BytesIO(body)``)."""
    head = f.read(32)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(head)
    if head.startswith(b"\xff\xd8"):
        return _jpeg(f)
    if head.startswith(b"BM"):
        return _bmp(head)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff(f, head)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp(head)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _unpack("<HH", head, 6)
    if head[:4] == b"\x59\xa6\x6a\x95":  # Sun raster
        return _unpack(">II", head, 4)
    if len(head) >= 2 and head[0:1] == b"P" and head[1:2] in b"123456fF":  # PBM/PGM/PPM, PFM
        f.seek(0)
        return _pnm(f.read(HEADER_BYTES))
    if head.startswith(b"#?"):  # Radiance HDR
        f.seek(0)
        return _radiance(f.read(HEADER_BYTES))
    if head[4:12] == b"jP  \r\n\x87\n" or head.startswith(b"\xff\x4f\xff\x51"):  # JPEG 2000 (JP2, J2K)
        f.seek(0)
        return _jpeg2000(f.read(HEADER_BYTES))
    return None


def _unpack(layout: str, data: bytes, offset: int) -> tuple[int, int]:
    try:
        width, height = struct.unpack_from(layout, data, offset)[:2]
    except struct.error:
        raise ValueError("the image header is truncated") from None
    return int(width), int(height)


def _png(head: bytes) -> tuple[int, int]:
    if head[12:16] != b"IHDR":
        raise ValueError("a PNG whose first chunk is not IHDR")
    return _unpack(">II", head, 16)


def _jpeg(f: BinaryIO) -> tuple[int, int]:
    """The size in the first start-of-frame segment, skipping the segments before it (APPn: EXIF, ICC, ...)."""
    f.seek(2)
    for _ in range(_JPEG_SEGMENTS):
        marker = f.read(2)
        while marker[:1] == b"\xff" and marker[1:] == b"\xff":  # fill bytes
            marker = marker[1:] + f.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise ValueError("a JPEG with a malformed or missing marker before its frame header")
        if marker[1] in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            continue
        segment = f.read(7)
        if len(segment) < 2:
            break
        if marker[1] in _JPEG_SOF:
            height, width = _unpack(">HH", segment, 3)
            return width, height
        length = int.from_bytes(segment[:2], "big")
        if marker[1] == 0xDA or length < 2:  # scan data before any frame header
            break
        f.seek(length - len(segment), 1)
    raise ValueError("a JPEG without a frame header")


def _bmp(head: bytes) -> tuple[int, int]:
    dib = int.from_bytes(head[14:18], "little")
    if dib == 12:  # OS/2 BITMAPCOREHEADER
        return _unpack("<HH", head, 18)
    if len(head) < 26:
        raise ValueError("the image header is truncated")
    width, height = struct.unpack_from("<ii", head, 18)
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _tiff(f: BinaryIO, head: bytes) -> tuple[int, int]:
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    f.seek(8 if big else 4)
    raw = f.read(8 if big else 4)
    if len(raw) < (8 if big else 4):
        raise ValueError("the image header is truncated")
    offset = struct.unpack(order + ("Q" if big else "I"), raw)[0]
    f.seek(offset)
    count_size, entry_size = (8, 20) if big else (2, 12)
    raw = f.read(count_size)
    if len(raw) < count_size:
        raise ValueError("a TIFF whose first IFD lies beyond the end of the file")
    count = struct.unpack(order + ("Q" if big else "H"), raw)[0]
    if count > _TIFF_ENTRIES:
        raise ValueError(f"a TIFF whose first IFD declares {count} entries")
    entries = f.read(count * entry_size)
    found: dict[int, int] = {}
    for k in range(len(entries) // entry_size):
        entry = entries[k * entry_size : (k + 1) * entry_size]
        tag, kind = struct.unpack_from(order + "HH", entry)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4) (LONG8 (16) in BigTIFF)
            value_at = 12 if big else 8
            layout = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if layout is None:
                raise ValueError(f"a TIFF whose image size has field type {kind}")
            found[tag] = struct.unpack_from(order + layout, entry, value_at)[0]
    if 256 not in found or 257 not in found:
        raise ValueError("a TIFF without ImageWidth / ImageLength")
    return found[256], found[257]


def _webp(head: bytes) -> tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8X":
        if len(head) < 30:
            raise ValueError("the image header is truncated")
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8L":
        if len(head) < 25 or head[20] != 0x2F:
            raise ValueError("a lossless WebP with a malformed header")
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            raise ValueError("a lossy WebP with a malformed frame header")
        width, height = _unpack("<HH", head, 26)
        return width & 0x3FFF, height & 0x3FFF
    raise ValueError(f"a WebP whose first chunk is {chunk!r}")


def _pnm(data: bytes) -> tuple[int, int]:
    numbers: list[int] = []
    for line in data[2:].split(b"\n"):
        for word in line.split(b"#", 1)[0].split():
            if not word.isdigit():
                raise ValueError("a PNM header with a malformed size")
            numbers.append(int(word))
            if len(numbers) == 2:
                return numbers[0], numbers[1]
    raise ValueError("a PNM header without its size")


def _radiance(data: bytes) -> tuple[int, int]:
    lines = data.split(b"\n")
    for k, line in enumerate(lines[:-1]):
        if not line.strip():  # the size line follows the first blank line: "-Y H +X W" (or another orientation)
            words = lines[k + 1].split()
            if len(words) == 4 and words[1].isdigit() and words[3].isdigit():
                first, second = int(words[1]), int(words[3])
                return (second, first) if words[0][1:] == b"Y" else (first, second)
            break
    raise ValueError("a Radiance HDR header without its size")


def _jpeg2000(data: bytes) -> tuple[int, int]:
    box = data.find(b"ihdr")  # JP2: the image header box, height then width
    if box >= 0:
        height, width = _unpack(">II", data, box + 4)
        return width, height
    if data.startswith(b"\xff\x4f\xff\x51"):  # J2K codestream: SIZ, Xsiz Ysiz XOsiz YOsiz
        width, height = _unpack(">II", data, 8)
        x0, y0 = _unpack(">II", data, 16)
        return max(width - x0, 0), max(height - y0, 0)
    raise ValueError("a JPEG 2000 file without its image header")
