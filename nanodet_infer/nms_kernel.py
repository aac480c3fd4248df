"""The compiled greedy NMS (``nanodet_infer._nms_kernel``, C), when it was built; ``None`` otherwise.

``pip install`` builds the extension from ``_nms_kernel.c`` where a C compiler and the Python headers
exist (an *optional* extension: without them the install still succeeds and the numpy path runs). It
computes the same float32 arithmetic as :func:`nanodet_infer.nms.greedy_nms`'s numpy path, one
candidate at a time against the boxes kept so far, so the results are identical (the tests compare the
two); it only changes the speed of small candidate sets, where numpy's per-call overhead dominates.
``NANODET_NO_KERNEL=1`` turns it off (the numpy path then runs everywhere).
"""

from __future__ import annotations

import numpy as np

from .kernels import ENABLED

try:
    from . import _nms_kernel
except ImportError:  # not built (no compiler at install time): the numpy path runs
    _nms_kernel = None

AVAILABLE = _nms_kernel is not None and ENABLED
"""Whether :func:`greedy_nms_ordered` runs (the extension is built and not turned off)."""


def greedy_nms_ordered(
    boxes: np.ndarray, order: np.ndarray, class_ids: np.ndarray, max_coord: np.float32, threshold: np.float32,
    limit: int,
) -> np.ndarray:
    """Greedy class-aware NMS visiting candidates in ``order``: int64 indices of the kept ones, in that order.

    ``boxes`` float32 ``[M, 4]`` xyxy (unshifted), ``order`` int64 ``[M]`` a permutation of ``0..M-1`` (by
    score descending, ties index ascending), ``class_ids`` ``[M]``, ``max_coord`` upstream's
    ``max_coordinate`` (the shift is ``class_id * (max_coord + 1)``), ``threshold`` the float32 threshold of
    :func:`nanodet_infer.nms._threshold_f32`; at most ``limit`` kept. Candidates with a non-finite box are
    dropped. Raises ``RuntimeError`` when the extension is not available.
    """
    if _nms_kernel is None:
        raise RuntimeError("nanodet_infer._nms_kernel is not built")
    out = np.empty(limit, dtype=np.int64)
    count = _nms_kernel.greedy_nms(
        np.ascontiguousarray(boxes, dtype=np.float32),
        np.ascontiguousarray(order, dtype=np.int64),
        np.ascontiguousarray(class_ids, dtype=np.int64),
        float(np.float32(max_coord) + np.float32(1)),
        float(threshold),
        limit,
        out,
    )
    return out[:count]
