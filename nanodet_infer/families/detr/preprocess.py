"""DETR's eval transform, bit for bit: ``T.RandomResize([min_size], max_size)`` + ``ToTensor`` + ``Normalize``.

:func:`eval_size` is ``datasets/transforms.py``'s ``get_size_with_aspect_ratio`` (Python ``round``, half to
even, for the bounded size; ``int()`` truncation for the long side): 245x482 → 678x1333, 288x509 →
754x1332, 580x616 → 800x849 (H x W). :func:`preprocess` resizes with **Pillow**'s bilinear filter on the
uint8 RGB image (the reference's own library and kernel: antialiased when downscaling, rounded to uint8),
then ``(u8 / 255 - mean) / std`` in float32 through a per-channel 256-entry table of exactly that arithmetic
(torchvision's, :func:`~..torchvision_common.normalisation_tables`).
Pillow's kernel is a dependency fact: the drift test in tests/families/detr names its version when it moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ...errors import InvalidArgumentError
from ..torchvision_common import normalisation_tables, normalise_planes


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


def resize_u8(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Pillow ``Image.resize(size (W, H), BILINEAR)`` of uint8 ``[H, W, 3]`` → uint8 ``[h, w, 3]``. Pillow resizes
    each channel on its own, so the channel order (RGB as the reference has it, or BGR) does not matter."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image), "RGB").resize(tuple(int(v) for v in size),
                                                                                 Image.BILINEAR))


def preprocess(bgr: np.ndarray, plan: DetrPlan, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """BGR uint8 ``[H, W, 3]`` → float32 RGB ``[3, h, w]`` (``plan.canvas_size``); ``mean``/``std`` on the 0-1 scale.
    The BGR image is resized as it is (:func:`resize_u8`), then each plane goes through its channel's table."""
    resized = resize_u8(bgr, plan.canvas_size)
    return normalise_planes(resized, normalisation_tables(tuple(float(v) for v in mean), tuple(float(v) for v in std)))
