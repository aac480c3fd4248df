"""The compiled decode kernels (``_decode_kernel``, C), when they were built; ``None`` otherwise.

Built by ``pip install`` like :mod:`nanodet_infer.nms_kernel` (an optional extension; ``NANODET_NO_KERNEL=1``
turns it off). Both compute the float arithmetic of the numpy paths they replace, in the same order, so the
results are bit-identical (the tests compare the two); they only cut the ~40 numpy calls of a post-process
that, right after an inference has emptied the CPU caches, cost several times their warm time.
"""

from __future__ import annotations

import numpy as np

from ...kernels import ENABLED

try:
    from . import _decode_kernel
except ImportError:  # not built (no compiler at install time): the numpy paths run
    _decode_kernel = None

AVAILABLE = _decode_kernel is not None and ENABLED
"""Whether :func:`dfl_boxes` and :func:`warp_boxes` run (the extension is built and not turned off)."""


def dfl_boxes(weights: np.ndarray, priors: np.ndarray, canvas_size: tuple[float, float]) -> np.ndarray:
    """Clamped xyxy boxes, float32 ``[K, 4]``, from the softmax weights of each side's bins, bin-major
    ``[reg_max + 1, K, 4]`` (``exp(logit - max)``, float32, :func:`.decode.bin_weights`) and the priors ``[K, 3]``
    (x, y, stride); ``canvas_size`` ``(W, H)``.
    The arithmetic of :func:`.decode.integral` after its ``exp``, then :func:`.decode.distance2bbox`."""
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    out = np.empty((weights.shape[1], 4), dtype=np.float32)
    _decode_kernel.dfl_boxes(
        weights, np.ascontiguousarray(priors, dtype=np.float32), weights.shape[0] - 1,
        float(canvas_size[0]), float(canvas_size[1]), out,
    )
    return out


def warp_boxes(xyxy: np.ndarray, matrix: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """float32 ``[K, 4]`` xyxy boxes mapped through the 3x3 ``matrix`` (float64) and clipped to ``image_size``
    ``(W, H)``: the arithmetic of :func:`.resize.boxes_to_original`."""
    boxes = np.ascontiguousarray(xyxy, dtype=np.float32).reshape(-1, 4)
    out = np.empty_like(boxes)
    _decode_kernel.warp_boxes(
        boxes, np.ascontiguousarray(matrix, dtype=np.float64), float(image_size[0]), float(image_size[1]), out
    )
    return out
