"""NanoDet-Plus box decoding: priors, the Integral (DFL expectation) and distance → box.

Coordinates are network-input pixels, boxes xyxy. Every function here works row by row with a fixed
operation order, so decoding a subset of priors gives bit-identical rows to decoding all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ...errors import InvalidArgumentError
from . import decode_kernel

_SIDE_SIGNS = np.array([-1, -1, 1, 1], dtype=np.float32)  # distance signs of x1, y1, x2, y2


def make_priors(canvas_size: Sequence[int], strides: Sequence[int], offset: float = 0.0) -> np.ndarray:
    """Prior points of a ``canvas_size`` ``(W, H)`` input: float32 ``[N, 3]`` rows ``(x, y, stride)``.

    Level by level in ``strides`` order, row-major (y outer, x inner) within a level, with
    ``ceil(H / s) x ceil(W / s)`` points at ``((i + offset) * s, (j + offset) * s)``; NanoDet-Plus uses
    ``offset=0``. The result is cached per arguments and read-only.
    """
    return _priors(int(canvas_size[0]), int(canvas_size[1]), tuple(int(s) for s in strides), float(offset))


@lru_cache(maxsize=32)
def _priors(width: int, height: int, strides: tuple[int, ...], offset: float) -> np.ndarray:
    if width < 1 or height < 1 or not strides or min(strides) < 1:
        raise InvalidArgumentError(f"invalid canvas {width}x{height} or strides {list(strides)}")
    levels = []
    for stride in strides:
        cols, rows = -(-width // stride), -(-height // stride)
        xs = (np.arange(cols, dtype=np.float32) + np.float32(offset)) * np.float32(stride)
        ys = (np.arange(rows, dtype=np.float32) + np.float32(offset)) * np.float32(stride)
        level = np.empty((rows, cols, 3), dtype=np.float32)
        level[:, :, 0] = xs[None, :]
        level[:, :, 1] = ys[:, None]
        level[:, :, 2] = stride
        levels.append(level.reshape(-1, 3))
    priors = np.concatenate(levels)
    priors.flags.writeable = False
    return priors


def num_priors(canvas_size: Sequence[int], strides: Sequence[int]) -> int:
    """Number of priors (rows of the model output) for a ``canvas_size`` ``(W, H)`` input."""
    w, h = int(canvas_size[0]), int(canvas_size[1])
    return sum(-(-w // s) * -(-h // s) for s in strides)


def integral(box_dist: np.ndarray, reg_max: int) -> np.ndarray:
    """Expected bin per side: ``[K, 4*(reg_max+1)]`` raw logits → float32 ``[K, 4]`` (stride units).

    Softmax over each side's ``reg_max + 1`` bins, then the expectation over bin values ``0..reg_max``;
    side order left, top, right, bottom. Multiply by the prior's stride to get pixels.

    Infinite logits take the softmax's limit: the bins equal to the side's maximum share the weight (one
    ``+inf`` bin is one-hot, ``-inf`` bins below a larger one get none, all-equal bins are uniform), so only
    a NaN logit makes a side undefined (NaN); :func:`nanodet_infer.nms.greedy_nms` drops candidates whose box is not
    finite. No warnings are emitted.
    """
    weights = bin_weights(box_dist, reg_max)
    scaled = weights * _bin_values(reg_max)
    # Sums are spelled out bin by bin (not .sum(axis)) so their order never depends on K.
    total = weights[0].copy()
    expected = np.zeros_like(total)
    for b in range(1, reg_max + 1):
        total += weights[b]
        expected += scaled[b]
    expected /= total
    return expected


def bin_weights(box_dist: np.ndarray, reg_max: int) -> np.ndarray:
    """The softmax numerators of each side's bins, bin-major: float32 ``[reg_max+1, K, 4]``, ``exp(logit - max over
    the side's bins)`` (the maximal bins get 1 when the maximum is infinite, see :func:`integral`)."""
    logits = np.asarray(box_dist, dtype=np.float32).reshape(-1, 4, reg_max + 1)
    # Bin-major: every step is an element-wise op on contiguous [K, 4] planes.
    bins = logits.transpose(2, 0, 1).copy()
    peak = bins.max(axis=0)  # a max is exact: the same value in any order
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf (fixed below), huge finite differences
        weights = np.exp(bins - peak)
    if np.isinf(peak).any():  # inf - inf gave NaN: the maximal bins get exp(0) = 1, as with a finite peak
        weights[bins == peak] = 1.0
    return weights


@lru_cache(maxsize=8)
def _bin_values(reg_max: int) -> np.ndarray:
    """float32 ``[reg_max+1, 1, 1]`` bin values ``0..reg_max`` (read-only), broadcast over ``[reg_max+1, K, 4]``."""
    values = np.arange(reg_max + 1, dtype=np.float32).reshape(-1, 1, 1)
    values.flags.writeable = False
    return values


def distance2bbox(points: np.ndarray, distances: np.ndarray, max_size: Sequence[int]) -> np.ndarray:
    """Boxes from points and side distances, clamped to the canvas.

    ``points`` ``[K, 2]`` (x, y), ``distances`` ``[K, 4]`` (left, top, right, bottom) in pixels,
    ``max_size`` ``(W, H)``. Returns float32 ``[K, 4]`` xyxy with x in ``[0, W]`` and y in ``[0, H]``.
    """
    points = np.asarray(points, dtype=np.float32)
    distances = np.asarray(distances, dtype=np.float32)
    # p - d is p + (-d) in IEEE arithmetic: one signed product and one sum give (x - l, y - t, x + r, y + b).
    boxes = np.multiply(distances, _SIDE_SIGNS)
    boxes += points[:, [0, 1, 0, 1]]
    np.maximum(boxes, np.float32(0), out=boxes)  # np.clip's arithmetic (NaN stays NaN), without its overhead
    np.minimum(boxes, np.array([max_size[0], max_size[1]] * 2, dtype=np.float32), out=boxes)
    return boxes


def decode_boxes(box_dist: np.ndarray, priors: np.ndarray, reg_max: int, canvas_size: Sequence[int]) -> np.ndarray:
    """Decode ``[K, 4*(reg_max+1)]`` logits at ``priors`` ``[K, 3]`` → float32 ``[K, 4]`` xyxy canvas pixels.

    With the compiled kernel (:mod:`.decode_kernel`) everything after the ``exp`` runs in C, same arithmetic."""
    if decode_kernel.AVAILABLE:
        return decode_kernel.dfl_boxes(bin_weights(box_dist, reg_max), priors, canvas_size)
    distances = integral(box_dist, reg_max)
    distances *= priors[:, 2:3]
    return distance2bbox(priors[:, :2], distances, canvas_size)
