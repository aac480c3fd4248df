"""The one switch of the optional compiled kernels (``_nms_kernel``, ``_preprocess_kernel``, built by ``pip install``
where a C compiler exists): ``NANODET_NO_KERNEL=1`` turns all of them off, and the numpy / OpenCV paths, which give
the same results, run everywhere."""

from __future__ import annotations

import os

ENABLED = os.environ.get("NANODET_NO_KERNEL", "") in ("", "0")
"""Whether compiled kernels may run (read once, at import)."""
