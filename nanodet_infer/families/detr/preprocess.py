"""DETR's eval transform, bit for bit: ``T.RandomResize([min_size], max_size)`` + ``ToTensor`` + ``Normalize``.

:func:`eval_size` is ``datasets/transforms.py``'s ``get_size_with_aspect_ratio`` (Python ``round``, half to
even, for the bounded size; ``int()`` truncation for the long side): 245x482 → 678x1333, 288x509 →
754x1332, 580x616 → 800x849 (H x W). :func:`preprocess` resizes with **Pillow**'s bilinear filter on the
uint8 RGB image (the reference's own library and kernel: antialiased when downscaling, rounded to uint8),
then ``(u8 / 255 - mean) / std`` in float32 through a per-channel 256-entry table of exactly that arithmetic.
Pillow's kernel is a dependency fact: the drift test in tests/families/detr names its version when it moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from ...errors import InvalidArgumentError


@dataclass(frozen=True)
class DetrPlan:
    """``src_size`` original ``(W, H)``; ``canvas_size`` the resized ``(W, H)`` the network sees (no padding)."""

    src_size: tuple[int, int]
    canvas_size: tuple[int, int]


def eval_size(src_size: Sequence[int], size: int, max_size: int | None) -> tuple[int, int]:
    """``get_size_with_aspect_ratio((w, h), size, max_size)`` as ``(W, H)`` (see the module docstring)."""
    w, h = int(src_size[0]), int(src_size[1])
    if w < 1 or h < 1:
        raise InvalidArgumentError(f"image size must be positive, got {w}x{h}")
    if max_size is not None:
        min_original, max_original = float(min(w, h)), float(max(w, h))
        if max_original / min_original * size > max_size:
            size = int(round(max_size * min_original / max_original))
    if (w <= h and w == size) or (h <= w and h == size):
        return w, h
    if w < h:
        ow, oh = size, int(size * h / w)
    else:
        oh, ow = size, int(size * w / h)
    return max(ow, 1), max(oh, 1)


@lru_cache(maxsize=8)
def _table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32 ``[3, 256]``: ``(float32(v) / 255 - mean[c]) / std[c]`` (torch's ToTensor + Normalize order)."""
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    m = np.asarray(mean, dtype=np.float32)[:, None]
    s = np.asarray(std, dtype=np.float32)[:, None]
    table = (values[None, :] - m) / s
    table.flags.writeable = False
    return table


def resize_rgb(rgb: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Pillow ``Image.resize(size (W, H), BILINEAR)`` of uint8 RGB ``[H, W, 3]`` → uint8 ``[h, w, 3]``."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb, "RGB").resize(tuple(int(v) for v in size), Image.BILINEAR))


def preprocess(bgr: np.ndarray, plan: DetrPlan, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """BGR uint8 ``[H, W, 3]`` → float32 ``[3, h, w]`` (``plan.canvas_size``); ``mean``/``std`` on the 0-1 scale."""
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    resized = resize_rgb(rgb, plan.canvas_size)
    table = _table(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    out = np.empty((3, resized.shape[0], resized.shape[1]), dtype=np.float32)
    for c in range(3):
        np.take(table[c], resized[..., c], out=out[c])
    return out
