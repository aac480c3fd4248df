"""``cv2.warpPerspective`` (INTER_LINEAR, constant border 0, BGR ``uint8 [H, W, 3]``) reproduced bit for bit.

NanoDet-Plus's reference resize is OpenCV's perspective warp, and OpenCV changed that kernel's arithmetic between
releases: 4.x rounds source coordinates to 1/32 pixel and interpolates with 15-bit fixed-point weights, 5.0
interpolates at float32 coordinates, and 5.1 computes those coordinates in float64. The results differ by up to
7 grey levels (4.x vs 5.0) or 1 level (5.1 vs 5.0), enough to move detections. So the runtime does not call the
warp: it reproduces one **named arithmetic**, whatever OpenCV release is installed.

Arithmetics (``ARITHMETICS``; a model's metadata names one, ``resize_arithmetic``):

``"opencv-5.0"`` (default: upstream's reference outputs were made with OpenCV 5.0.0)
    ``M = inv(matrix)`` (OpenCV's closed-form 3x3 inverse, float64), cast to float32. Per destination row ``y``:
    ``r = y * M[1] + M[2]`` in float32 (a product, then a sum); per pixel ``x``: ``sx = fma(M[0], x, r)``, likewise
    ``sy`` and the projective ``sw``, then ``sx / sw``, ``sy / sw`` in float32. ``ix = floor(sx)``, ``ax = sx - ix``;
    ``v0 = fma(ax, p01 - p00, p00)``, ``v1 = fma(ax, p11 - p10, p10)``, ``v = fma(ay, v1 - v0, v0)`` in float32,
    rounded half to even and saturated. Neighbours outside the image read 0.
``"opencv-4"`` (OpenCV 4.x, for models trained with it)
    Coordinates in float64, accumulated per OpenCV's 1024-pixel blocks, scaled by 32 and rounded to integers:
    the integer part selects the 2x2 neighbourhood and the 5+5 fraction bits one of 32x32 fixed-point weight
    sets (``cv2.remap`` with ``CV_16SC2`` + ``CV_16UC1`` maps, unchanged from OpenCV 4.x to 5.1).

Kernels: the coordinate maps are computed here in numpy (cached per matrix and size); the interpolation runs in
``cv2.remap`` when the installed OpenCV's remap reproduces the arithmetic on a probe (checked once per process),
else ``"opencv-5.0"`` falls back to the numpy interpolation below (OpenCV 4.x has no float32 remap kernel), and
``"opencv-4"`` raises :class:`~nanodet_infer.errors.IncompatibleModelError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache, lru_cache

import cv2
import numpy as np

from ...errors import IncompatibleModelError, InvalidArgumentError

ARITHMETICS = ("opencv-5.0", "opencv-4")
DEFAULT_ARITHMETIC = "opencv-5.0"

_OPENCV4_PROBE_SHA256 = "855d37ccb04ed108c9347acdea436d091f762fa52b292f735bdf7b8df48ce6ee"
"""sha256 of OpenCV 4.12.0's ``warpPerspective`` outputs on :func:`_probe_cases`, concatenated."""


def opencv_inverse(matrix: np.ndarray) -> np.ndarray:
    """``[9]`` float64: OpenCV's closed-form inverse of a 3x3 matrix (``cv::invert``, ``DECOMP_LU``), row-major.

    A singular matrix gives zeros, as OpenCV's warp does.
    """
    s = np.asarray(matrix, dtype=np.float64).reshape(3, 3)
    det = (
        s[0, 0] * (s[1, 1] * s[2, 2] - s[1, 2] * s[2, 1])
        - s[0, 1] * (s[1, 0] * s[2, 2] - s[1, 2] * s[2, 0])
        + s[0, 2] * (s[1, 0] * s[2, 1] - s[1, 1] * s[2, 0])
    )
    if det == 0:
        return np.zeros(9)
    d = 1.0 / det
    return np.array(
        [
            (s[1, 1] * s[2, 2] - s[1, 2] * s[2, 1]) * d,
            (s[0, 2] * s[2, 1] - s[0, 1] * s[2, 2]) * d,
            (s[0, 1] * s[1, 2] - s[0, 2] * s[1, 1]) * d,
            (s[1, 2] * s[2, 0] - s[1, 0] * s[2, 2]) * d,
            (s[0, 0] * s[2, 2] - s[0, 2] * s[2, 0]) * d,
            (s[0, 2] * s[1, 0] - s[0, 0] * s[1, 2]) * d,
            (s[1, 0] * s[2, 1] - s[1, 1] * s[2, 0]) * d,
            (s[0, 1] * s[2, 0] - s[0, 0] * s[2, 1]) * d,
            (s[0, 0] * s[1, 1] - s[0, 1] * s[1, 0]) * d,
        ]
    )


def _fma32(a: np.ndarray | np.float32, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``fma(a, b, c)``: the float32 operands' product and sum in float64, rounded once to float32.

    Exact for the operands used here (a float32 times an integer below 2^16 or a grey-level difference, plus a
    float32 of similar magnitude): the float64 intermediate holds the exact result.
    """
    return (np.asarray(a, dtype=np.float64) * b + c).astype(np.float32)


def _float_maps(matrix: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``"opencv-5.0"`` source coordinates: two float32 ``[h, w]`` maps (x, y) for destination ``size`` ``(w, h)``."""
    w, h = size
    m = opencv_inverse(matrix).astype(np.float32)
    x = np.arange(w, dtype=np.float32)
    y = np.arange(h, dtype=np.float32)[:, None]
    if m[1] == 0 and m[3] == 0 and m[6] == 0 and m[7] == 0 and m[8] == 1:
        # scale + translation (every NanoDet plan): sx depends on x only, sy on y only, and the w term is 1;
        # the same float32 values as below (y * 0 + c == c, fma(0, x, c) == c), computed once per row/column
        sx = np.repeat(_fma32(m[0], x, m[2])[None, :], h, axis=0)
        sy = np.repeat(y * m[4] + m[5], w, axis=1)
        return sx, sy
    sx = _fma32(m[0], x, y * m[1] + m[2])
    sy = _fma32(m[3], x, y * m[4] + m[5])
    sw = _fma32(m[6], x, y * m[7] + m[8])
    with np.errstate(divide="ignore", invalid="ignore"):
        return sx / sw, sy / sw


def _fixed_maps(matrix: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``"opencv-4"`` maps: int16 ``[h, w, 2]`` integer coordinates and uint16 ``[h, w]`` 32x32 weight-set indices."""
    w, h = size
    m = opencv_inverse(matrix)
    block_h = min(16, h)
    block_w = min(1024 // block_h, w)
    xs = np.arange(w)
    x0 = (xs // block_w * block_w).astype(np.float64)
    x1 = (xs % block_w).astype(np.float64)
    y = np.arange(h, dtype=np.float64)[:, None]
    wsum = m[6] * x0 + m[7] * y + m[8] + m[6] * x1
    with np.errstate(divide="ignore"):
        scale = np.where(wsum != 0, 32.0 / np.where(wsum != 0, wsum, 1.0), 0.0)
    limit = float(np.iinfo(np.int32).max)
    fx = np.rint(np.clip((m[0] * x0 + m[1] * y + m[2] + m[0] * x1) * scale, -limit - 1, limit)).astype(np.int64)
    fy = np.rint(np.clip((m[3] * x0 + m[4] * y + m[5] + m[3] * x1) * scale, -limit - 1, limit)).astype(np.int64)
    xy = np.clip(np.stack([fx >> 5, fy >> 5], axis=-1), -32768, 32767).astype(np.int16)
    weights = ((fy & 31) * 32 + (fx & 31)).astype(np.uint16)
    return xy, weights


@lru_cache(maxsize=8)
def _maps(matrix_bytes: bytes, size: tuple[int, int], arithmetic: str) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.frombuffer(matrix_bytes, dtype=np.float64).reshape(3, 3)
    maps = _float_maps(matrix, size) if arithmetic == "opencv-5.0" else _fixed_maps(matrix, size)
    for array in maps:
        array.flags.writeable = False
    return maps


def interpolate_float(image: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """The ``"opencv-5.0"`` bilinear interpolation in numpy: ``uint8 [h, w, 3]`` at float32 maps ``[h, w]``."""
    height, width = image.shape[:2]
    finite = np.isfinite(sx) & np.isfinite(sy)
    fx = np.floor(np.where(finite, sx, -4.0))
    fy = np.floor(np.where(finite, sy, -4.0))
    ax = (np.where(finite, sx, 0) - fx).astype(np.float32)[..., None]
    ay = (np.where(finite, sy, 0) - fy).astype(np.float32)[..., None]
    # two zero pixels around the image: a neighbour outside it reads 0, as with OpenCV's constant border
    padded = np.zeros((height + 4, width + 4, 3), dtype=np.uint8)
    padded[2:-2, 2:-2] = image
    cx = np.clip(fx, -2, width).astype(np.intp) + 2
    cy = np.clip(fy, -2, height).astype(np.intp) + 2
    p00, p01 = padded[cy, cx].astype(np.float32), padded[cy, cx + 1].astype(np.float32)
    p10, p11 = padded[cy + 1, cx].astype(np.float32), padded[cy + 1, cx + 1].astype(np.float32)
    v0 = _fma32(ax, p01 - p00, p00)
    v1 = _fma32(ax, p11 - p10, p10)
    return np.clip(np.rint(_fma32(ay, v1 - v0, v0)), 0, 255).astype(np.uint8)


def _probe_cases() -> tuple[np.ndarray, list[tuple[np.ndarray, tuple[int, int]]]]:
    """A seeded 24x20 image and three matrices (downscale, upscale past the border, projective) at 30x26."""
    image = np.random.default_rng(20261203).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    matrices = [
        [[0.37, 0, 1.3], [0, 0.41, 0.7], [0, 0, 1]],
        [[1.9, 0, -0.45], [0, 1.55, 0.25], [0, 0, 1]],
        [[1.0, 0.2, -5.5], [0.1, 0.9, 3.25], [0.001, 0.002, 1]],
    ]
    return image, [(np.array(m, dtype=np.float64), (30, 26)) for m in matrices]


@cache
def remap_reproduces(arithmetic: str) -> bool:
    """Whether the installed ``cv2.remap`` reproduces ``arithmetic`` on the probe (computed once per process)."""
    image, cases = _probe_cases()
    if arithmetic == "opencv-5.0":
        for matrix, size in cases:
            sx, sy = _float_maps(matrix, size)
            if not np.array_equal(cv2.remap(image, sx, sy, cv2.INTER_LINEAR), interpolate_float(image, sx, sy)):
                return False
        return True
    digest = hashlib.sha256()
    for matrix, size in cases:
        digest.update(cv2.remap(image, *_fixed_maps(matrix, size), cv2.INTER_LINEAR).tobytes())
    return digest.hexdigest() == _OPENCV4_PROBE_SHA256


def check_arithmetic(arithmetic: str) -> str:
    """``arithmetic`` if it is one of :data:`ARITHMETICS`, else :class:`InvalidArgumentError` naming them."""
    if arithmetic not in ARITHMETICS:
        raise InvalidArgumentError(f"resize arithmetic must be one of {', '.join(ARITHMETICS)}; got {arithmetic!r}")
    return arithmetic


def kernel(arithmetic: str = DEFAULT_ARITHMETIC) -> str:
    """Which kernel interpolates ``arithmetic`` here: ``"cv2.remap"`` or ``"numpy"``."""
    check_arithmetic(arithmetic)
    if remap_reproduces(arithmetic):
        return "cv2.remap"
    if arithmetic == "opencv-5.0":
        return "numpy"
    raise IncompatibleModelError(
        f"the installed OpenCV {cv2.__version__} does not reproduce OpenCV 4's fixed-point warp; "
        "install opencv-python-headless 4.8 to 5.1, or export the model with --resize-arithmetic opencv-5.0"
    )


def warp_perspective(
    image: np.ndarray, matrix: np.ndarray, dsize: Sequence[int], arithmetic: str = DEFAULT_ARITHMETIC
) -> np.ndarray:
    """``cv2.warpPerspective(image, matrix, dsize)`` in the named ``arithmetic``: BGR ``uint8 [h, w, 3]``.

    ``matrix``: 3x3 float64, source pixels → destination pixels. ``dsize``: destination ``(w, h)``.
    """
    size = (int(dsize[0]), int(dsize[1]))
    how = kernel(arithmetic)
    map1, map2 = _maps(np.ascontiguousarray(matrix, dtype=np.float64).tobytes(), size, arithmetic)
    if how == "numpy":
        return interpolate_float(image, map1, map2)
    return cv2.remap(image, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
