"""SSD default boxes: torchvision's ``DefaultBoxGenerator``, bit for bit.

For feature map ``k`` (size ``(f_w, f_h)``) with scale ``s_k``: the (w, h) pairs ``(s_k, s_k)``,
``(s'_k, s'_k)`` with ``s'_k = sqrt(s_k * s_{k+1})``, then for each aspect ratio ``ar``
``(s_k * sqrt(ar), s_k / sqrt(ar))`` and its transpose; computed in float64, stored as float32 and, with
``clip``, clamped to ``[0, 1]``. Centres are ``(float32(j) + 0.5) / x_f`` with ``x_f = f_w`` or, with
``steps``, ``x_f = W / steps[k]`` (the same for y). The box is ``(c -/+ 0.5 * wh) * (W, H)`` in float32,
xyxy in network-input pixels. Order: level, then y, then x, then the pairs (the head's anchor order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ...errors import InvalidArgumentError


def default_box_scales(num_levels: int, min_ratio: float, max_ratio: float) -> tuple[float, ...]:
    """torchvision's scales when none are given: ``min + (max - min) * k / (m - 1)`` for ``k < m``, then 1.0.

    One level: ``(min_ratio, max_ratio)``. Python float64 arithmetic, as torchvision's builder computes them.
    """
    if num_levels < 1:
        raise InvalidArgumentError(f"num_levels must be >= 1, got {num_levels}")
    if num_levels == 1:
        return (float(min_ratio), float(max_ratio))
    span = max_ratio - min_ratio
    return tuple(min_ratio + span * k / (num_levels - 1.0) for k in range(num_levels)) + (1.0,)


def wh_pairs(scales: Sequence[float], aspect_ratios: Sequence[Sequence[float]], clip: bool) -> list[np.ndarray]:
    """Per level, float32 ``[2 + 2 * len(ratios), 2]`` (w, h) pairs relative to the image (see module doc)."""
    pairs = []
    for k, ratios in enumerate(aspect_ratios):
        s_k, s_prime = scales[k], math.sqrt(scales[k] * scales[k + 1])
        level = [[s_k, s_k], [s_prime, s_prime]]
        for ar in ratios:
            root = math.sqrt(ar)
            level += [[s_k * root, s_k / root], [s_k / root, s_k * root]]
        level32 = np.asarray(level, dtype=np.float32)
        pairs.append(np.clip(level32, np.float32(0), np.float32(1)) if clip else level32)
    return pairs


def default_boxes(
    feature_sizes: Sequence[Sequence[int]],
    image_size: Sequence[int],
    aspect_ratios: Sequence[Sequence[float]],
    scales: Sequence[float],
    steps: Sequence[float] | None = None,
    clip: bool = True,
) -> np.ndarray:
    """Default boxes of an ``image_size`` ``(W, H)`` input with ``feature_sizes`` ``[(f_w, f_h), ...]``.

    ``aspect_ratios``: one list per level; ``scales``: one per level plus one (:func:`default_box_scales`);
    ``steps``: one per level or None (centres spaced by the feature size). Returns float32 ``[N, 4]``
    xyxy in network-input pixels, ``N = sum(f_w * f_h * (2 + 2 * len(ratios)))``; cached, read-only.
    """
    levels = len(aspect_ratios)
    if len(feature_sizes) != levels or len(scales) != levels + 1 or (steps is not None and len(steps) != levels):
        raise InvalidArgumentError(
            f"{len(feature_sizes)} feature maps, {levels} aspect-ratio lists, {len(scales)} scales and "
            f"{'no' if steps is None else len(steps)} steps: give one per level (scales: one more)"
        )
    return _default_boxes(
        tuple((int(w), int(h)) for w, h in feature_sizes),
        (int(image_size[0]), int(image_size[1])),
        tuple(tuple(float(r) for r in level) for level in aspect_ratios),
        tuple(float(s) for s in scales),
        None if steps is None else tuple(float(s) for s in steps),
        bool(clip),
    )


@lru_cache(maxsize=8)
def _default_boxes(
    feature_sizes: tuple[tuple[int, int], ...],
    image_size: tuple[int, int],
    aspect_ratios: tuple[tuple[float, ...], ...],
    scales: tuple[float, ...],
    steps: tuple[float, ...] | None,
    clip: bool,
) -> np.ndarray:
    width, height = image_size
    size = np.array([width, height], dtype=np.float32)
    levels = []
    for k, ((f_w, f_h), pairs) in enumerate(zip(feature_sizes, wh_pairs(scales, aspect_ratios, clip), strict=True)):
        x_f, y_f = (width / steps[k], height / steps[k]) if steps is not None else (f_w, f_h)
        xs = (np.arange(f_w, dtype=np.float32) + np.float32(0.5)) / np.float32(x_f)
        ys = (np.arange(f_h, dtype=np.float32) + np.float32(0.5)) / np.float32(y_f)
        centres = np.empty((f_h, f_w, len(pairs), 2), dtype=np.float32)
        centres[..., 0] = xs[None, :, None]
        centres[..., 1] = ys[:, None, None]
        half = np.float32(0.5) * pairs  # [A, 2], broadcast over locations
        levels.append(np.concatenate([(centres - half) * size, (centres + half) * size], axis=-1).reshape(-1, 4))
    boxes = np.concatenate(levels)
    boxes.flags.writeable = False
    return boxes
