"""NanoDet-Plus's resize plan: image → network input and boxes back, reproducing upstream bit for bit.

Conventions: sizes are ``(W, H)``; images are BGR ``uint8`` arrays ``[H, W, 3]`` (OpenCV); the network
input is ``float32 [3, Hc, Wc]`` (one NCHW batch slot). A plan's ``matrix`` maps original-image pixels to
network-input pixels, exactly upstream's ``warp_matrix``.

Upstream (``ShapeTransform`` + ``color_aug_and_norm`` + ``stack_batch_img``) does, for validation:

1. ``keep_ratio=False``: ``cv2.warpPerspective`` with ``diag(Wc/Ws, Hc/Hs, 1)`` straight to the input size
   (reproduced by :mod:`.warp` in a named arithmetic, whatever OpenCV is installed).
   ``keep_ratio=True``: shrink the destination to the content size ``(int(r*Ws), int(r*Hs))`` with the
   limiting ratio ``r``, and warp with ``T @ Rs @ C`` (centre, scale by the ratio recomputed for the content
   size, move to the content centre).
2. ``x = (x / 255 - mean / 255) / (std / 255)`` in float32, per channel, on the BGR image
   (:func:`nanodet_infer.preprocess.normalize_into`).
3. Place the normalised image at the top-left of the canvas, padding with zeros (after normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...errors import InvalidArgumentError, InvalidImageError
from ...preprocess import canvas_out, check_image, normalize_into
from . import decode_kernel
from .warp import DEFAULT_ARITHMETIC, warp_perspective


@dataclass(frozen=True)
class InputPlan:
    """How one image becomes the network input.

    ``src_size``: original image ``(W, H)``. ``content_size``: ``(W, H)`` of the region the warp writes,
    at the top-left of the canvas. ``canvas_size``: ``(W, H)`` of the network input tensor. ``matrix``:
    3x3 float64, original-image pixels → network-input pixels (upstream's ``warp_matrix``).
    """

    src_size: tuple[int, int]
    content_size: tuple[int, int]
    canvas_size: tuple[int, int]
    matrix: np.ndarray

    @property
    def inverse(self) -> np.ndarray:
        """3x3 float64 ``np.linalg.inv(matrix)``: network-input pixels → original-image pixels."""
        return _inverse(self.matrix.tobytes())


@lru_cache(maxsize=64)
def _inverse(matrix_bytes: bytes) -> np.ndarray:
    inv = np.linalg.inv(np.frombuffer(matrix_bytes, dtype=np.float64).reshape(3, 3))
    inv.flags.writeable = False
    return inv


def _limiting_ratio(src: tuple[int, int], dst: tuple[int, int]) -> float:
    """Upstream's keep-ratio scale: the ratio of the side that limits the fit."""
    (s_w, s_h), (d_w, d_h) = src, dst
    return d_h / s_h if s_w / s_h < d_w / d_h else d_w / s_w


def _check_size(name: str, size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(v) != v or v < 1 for v in size):
        raise InvalidArgumentError(f"{name} must be (W, H) positive integers, got {tuple(size)!r}")
    return int(size[0]), int(size[1])


def plan_input(
    src_size: Sequence[int], input_size: Sequence[int], *, keep_ratio: bool, dynamic_hw: bool, divisor: int = 32
) -> InputPlan:
    """Plan the resize of a ``src_size`` ``(W, H)`` image for a model trained at ``input_size`` ``(W, H)``.

    ``keep_ratio=False`` stretches to ``input_size``. ``keep_ratio=True`` scales by the limiting ratio into
    the top-left content region; the canvas is the content size rounded up to a multiple of ``divisor``
    when ``dynamic_hw`` (a model with symbolic H/W, as upstream feeds it), else ``input_size``.
    """
    src = _check_size("src_size", src_size)
    dst = _check_size("input_size", input_size)
    if divisor < 1:
        raise InvalidArgumentError(f"divisor must be a positive integer, got {divisor!r}")
    matrix = np.eye(3)
    if not keep_ratio:
        matrix[0, 0] = dst[0] / src[0]
        matrix[1, 1] = dst[1] / src[1]
        return InputPlan(src, dst, dst, matrix)
    ratio = _limiting_ratio(src, dst)
    content = (max(1, int(ratio * src[0])), max(1, int(ratio * src[1])))
    # upstream get_resize_matrix(src, content, keep_ratio=True) = T @ Rs @ C, the ratio recomputed for content
    scale = _limiting_ratio(src, content)
    centre = np.eye(3)
    centre[:2, 2] = (-src[0] / 2, -src[1] / 2)
    resize = np.diag([scale, scale, 1.0])
    shift = np.eye(3)
    shift[:2, 2] = (0.5 * content[0], 0.5 * content[1])
    matrix = shift @ resize @ centre
    canvas = tuple(-(-v // divisor) * divisor for v in content) if dynamic_hw else dst
    return InputPlan(src, content, canvas, matrix)


def preprocess(
    image: np.ndarray,
    plan: InputPlan,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    channel_order: str = "BGR",
    arithmetic: str = DEFAULT_ARITHMETIC,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Warp and normalise a BGR ``uint8 [H, W, 3]`` image into ``float32 [3, Hc, Wc]``.

    ``mean``/``std`` are per network-input channel (in ``channel_order``), 0-255 scale. ``arithmetic`` names the
    OpenCV warp arithmetic to reproduce (:data:`.warp.ARITHMETICS`). With ``out`` (a
    ``float32 [3, Hc, Wc]`` array or view, e.g. one slot of a batch) the result is written there and
    returned; the padding outside the content region is set to 0.
    """
    check_image(image)
    if image.shape[1] != plan.src_size[0] or image.shape[0] != plan.src_size[1]:
        raise InvalidImageError(
            f"image is {image.shape[1]}x{image.shape[0]} (WxH) but the plan was made for "
            f"{plan.src_size[0]}x{plan.src_size[1]}; call plan_input with this image's size"
        )
    out = canvas_out(plan.canvas_size, out)
    warped = warp_perspective(image, plan.matrix, plan.content_size, arithmetic)
    return normalize_into(warped, mean, std, channel_order, out)


def boxes_to_original(xyxy: np.ndarray, plan: InputPlan) -> np.ndarray:
    """Map ``[K, 4]`` xyxy boxes from network-input pixels back to the original image.

    Upstream's ``warp_boxes(boxes, inv(warp_matrix), W, H)``: transform the 4 corners (float64), take their
    min/max, clip x to ``[0, W]`` and y to ``[0, H]``. Returns float32 ``[K, 4]``.
    """
    if decode_kernel.AVAILABLE and getattr(xyxy, "dtype", None) == np.float32:  # the same float64 arithmetic in C
        return decode_kernel.warp_boxes(xyxy, plan.inverse, plan.src_size)
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    inv = plan.inverse
    xs = boxes[:, [0, 2, 0, 2]]  # corners x1y1, x2y2, x1y2, x2y1 (order is irrelevant to min/max)
    ys = boxes[:, [1, 3, 3, 1]]
    den = inv[2, 0] * xs + inv[2, 1] * ys + inv[2, 2]
    tx = (inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]) / den
    ty = (inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]) / den
    width, height = plan.src_size
    out = np.empty((len(boxes), 4), dtype=np.float64)
    np.clip(tx.min(axis=1), 0, width, out=out[:, 0])
    np.clip(ty.min(axis=1), 0, height, out=out[:, 1])
    np.clip(tx.max(axis=1), 0, width, out=out[:, 2])
    np.clip(ty.max(axis=1), 0, height, out=out[:, 3])
    return out.astype(np.float32)
