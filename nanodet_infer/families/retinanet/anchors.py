"""RetinaNet anchors: torchvision's ``AnchorGenerator``, bit for bit.

Cell anchors per level (float32): ``h_ratio = sqrt(ar)``, ``w_ratio = 1 / h_ratio``,
``ws = (w_ratio[:, None] * sizes[None, :]).ravel()`` (ratio-major, size-minor; ``hs`` alike), then
``round([-ws, -hs, ws, hs] / 2)`` (half to even). Feature map ``k`` of a ``(W, H)`` canvas is
``ceil(W / s_k) x ceil(H / s_k)`` for the nominal strides ``s_k`` (8 .. 128: stride-2 convolutions with
padding 1 halve a side rounding up). The anchor stride is ``canvas // feature size``, integer and per
axis, so it is not a power of two when the canvas is not a multiple of the level's nominal stride
(P7 of 1344 x 704 is 122 x 117). Anchors are ``(x * stride_w, y * stride_h) * 2 + cell`` - centred on
the cell's top-left corner - ordered level, then y, then x, then the cell anchors.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ...errors import InvalidArgumentError


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
    """float32 ``[len(ratios) * len(sizes), 4]`` anchors around the origin (see the module docstring)."""
    scales = np.asarray(sizes, dtype=np.float32)
    h_ratios = np.sqrt(np.asarray(aspect_ratios, dtype=np.float32))
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2))


def feature_sizes(canvas_size: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """``(W, H)`` of each feature map: ``(ceil(W / s), ceil(H / s))`` per nominal stride ``s``."""
    width, height = int(canvas_size[0]), int(canvas_size[1])
    return [(-(-width // s), -(-height // s)) for s in strides]


def anchors(
    canvas_size: Sequence[int],
    strides: Sequence[int],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Anchors of a ``canvas_size`` ``(W, H)`` input (the padded network input).

    ``strides``: the nominal stride of each level; ``sizes`` and ``aspect_ratios``: one list per level.
    Returns ``(float32 [N, 4]`` xyxy network-input pixels, anchors per level``)``; cached, read-only.
    """
    if not len(strides) == len(sizes) == len(aspect_ratios) or not strides:
        raise InvalidArgumentError(
            f"{len(strides)} strides, {len(sizes)} size lists and {len(aspect_ratios)} aspect-ratio lists: "
            "give one of each per pyramid level"
        )
    return _anchors(
        (int(canvas_size[0]), int(canvas_size[1])),
        tuple(int(s) for s in strides),
        tuple(tuple(float(v) for v in level) for level in sizes),
        tuple(tuple(float(v) for v in level) for level in aspect_ratios),
    )


@lru_cache(maxsize=16)
def _anchors(
    canvas_size: tuple[int, int],
    strides: tuple[int, ...],
    sizes: tuple[tuple[float, ...], ...],
    aspect_ratios: tuple[tuple[float, ...], ...],
) -> tuple[np.ndarray, tuple[int, ...]]:
    width, height = canvas_size
    levels = []
    for (f_w, f_h), level_sizes, ratios in zip(feature_sizes(canvas_size, strides), sizes, aspect_ratios, strict=True):
        cell = cell_anchors(level_sizes, ratios)
        xs = np.arange(f_w, dtype=np.float32) * np.float32(width // f_w)
        ys = np.arange(f_h, dtype=np.float32) * np.float32(height // f_h)
        shifts = np.empty((f_h, f_w, 1, 4), dtype=np.float32)
        shifts[..., 0::2] = xs[None, :, None, None]
        shifts[..., 1::2] = ys[:, None, None, None]
        levels.append((shifts + cell).reshape(-1, 4))
    boxes = np.concatenate(levels)
    boxes.flags.writeable = False
    return boxes, tuple(len(level) for level in levels)
