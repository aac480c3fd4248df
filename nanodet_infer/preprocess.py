"""Shared preprocessing primitives: image checks and per-channel normalisation into a network input canvas.

Conventions: sizes are ``(W, H)``; images are BGR ``uint8`` arrays ``[H, W, 3]`` (OpenCV); the network input
is ``float32 [3, Hc, Wc]`` (one NCHW batch slot). A family resizes (its own plan kind, in its folder), then
:func:`normalize_into` writes the resized image at the top-left of the canvas.

Normalisation is ``x = (x / 255 - mean / 255) / (std / 255)`` in float32, per channel, ``mean``/``std`` on the
0-255 scale in the network's channel order (upstream NanoDet's ``color_aug_and_norm``; with ``mean=0``,
``std=255`` it is ``x / 255`` exactly). It maps each ``uint8`` value to one float32 value per channel, so it is
done with a 256-entry lookup table computed with that exact float32 arithmetic: the result is bit-identical
and ~15x faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from .errors import InvalidArgumentError, InvalidImageError
from .kernels import ENABLED

try:
    from . import _preprocess_kernel
except ImportError:  # not built (no compiler at install time): the OpenCV / numpy paths run
    _preprocess_kernel = None


@lru_cache(maxsize=16)
def _lookup_tables(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32 ``[3, 256, 1]`` (cv2.LUT's shape per channel): ``(v / 255 - mean / 255) / (std / 255)`` in upstream's
    float32 order."""
    values = np.arange(256, dtype=np.float32) / 255
    mean32 = np.asarray(mean, dtype=np.float32)[:, None, None] / 255
    std32 = np.asarray(std, dtype=np.float32)[:, None, None] / 255
    tables = (values[None, :, None] - mean32) / std32
    tables.flags.writeable = False
    return tables


def lookup_into(image: np.ndarray, tables: np.ndarray, reverse: bool, out: np.ndarray, *,
                compiled: bool = ENABLED) -> np.ndarray:
    """uint8 ``image`` ``[h, w, 3]`` through per-plane ``tables`` (float32 ``[3, 256, 1]``) into the top-left of
    ``out`` (float32 ``[3, Hc, Wc]``): plane ``c`` is ``tables[c][image[..., 2 - c if reverse else c]]``; the rest of
    ``out`` is left as it is. With ``compiled`` the C kernel ``_preprocess_kernel.lookup`` writes the same values
    (a lookup has no arithmetic), else cv2.LUT per plane. Returns ``out``."""
    h, w = image.shape[:2]
    if compiled and _preprocess_kernel is not None and out.flags.c_contiguous:
        _preprocess_kernel.lookup(np.ascontiguousarray(image), h, w, tables, reverse, out, out.shape[1], out.shape[2])
        return out
    planes = cv2.split(image)
    if reverse:
        planes = planes[::-1]
    for c in range(3):
        region = out[c, :h, :w]
        in_place = region.strides[-1] == region.itemsize  # cv2 writes rows of adjacent pixels only
        written = cv2.LUT(planes[c], tables[c], dst=region if in_place else None)
        if written is not region:  # cv2 allocated (strided canvas, or it could not write in place): copy
            region[...] = written
    return out


def check_image(image: np.ndarray) -> None:
    """Raise :class:`InvalidImageError` unless ``image`` is a BGR ``uint8 [H, W, 3]`` array."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array (BGR uint8 HxWx3), got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise InvalidImageError(
            f"image must be BGR uint8 HxWx3, got dtype {image.dtype} shape {image.shape}; "
            "convert with cv2.cvtColor / astype(np.uint8) first"
        )


def canvas_out(canvas_size: Sequence[int], out: np.ndarray | None) -> np.ndarray:
    """``out`` checked to be float32 ``[3, Hc, Wc]`` for ``canvas_size`` ``(Wc, Hc)``, or a new such array."""
    w, h = canvas_size
    if out is None:
        return np.empty((3, h, w), dtype=np.float32)
    if out.shape != (3, h, w) or out.dtype != np.float32:
        raise InvalidArgumentError(f"out must be float32 [3, {h}, {w}], got {out.dtype} {out.shape}")
    return out


def normalize_into(
    content: np.ndarray, mean: Sequence[float], std: Sequence[float], channel_order: str, out: np.ndarray
) -> np.ndarray:
    """Normalise BGR ``uint8 [h, w, 3]`` ``content`` into the top-left of ``out`` (float32 ``[3, Hc, Wc]``).

    ``mean``/``std`` are per network-input channel (in ``channel_order``, ``"BGR"`` or ``"RGB"``), 0-255 scale.
    The canvas outside the content region is set to 0. Returns ``out``.
    """
    if channel_order not in ("BGR", "RGB"):
        raise InvalidArgumentError(f"channel_order must be 'BGR' or 'RGB', got {channel_order!r}")
    ch, cw = content.shape[:2]
    h, w = out.shape[1:]
    lookup_into(content, _lookup_tables(tuple(float(v) for v in mean), tuple(float(v) for v in std)),
                channel_order == "RGB", out)
    if ch < h:
        out[:, ch:, :] = 0.0
    if cw < w:
        out[:, :ch, cw:] = 0.0
    return out
