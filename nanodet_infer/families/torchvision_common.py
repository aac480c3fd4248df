"""torchvision detection arithmetic shared by the ``ssd`` and ``retinanet`` families, in numpy, exactly.

Reproduces, bit for bit where stated, what torchvision 0.28 does on CPU around the network:
``GeneralizedRCNNTransform`` (normalise, resize, pad; :func:`fixed_size_plan`, :func:`min_max_size_plan`,
:func:`transform`), ``BoxCoder.decode_single`` (:func:`decode_boxes`), ``box_ops.clip_boxes_to_image``
(:func:`clip_boxes`), ``box_ops.batched_nms`` (:func:`torchvision_batched_nms`) and
``transform.postprocess`` (:func:`boxes_to_original`).

Conventions: sizes are ``(W, H)`` like the rest of this package (torchvision itself writes ``(h, w)``);
images are BGR ``uint8 [H, W, 3]``; the network input is float32 ``[3, Hc, Wc]``, RGB, normalised;
boxes are float32 xyxy ``[K, 4]``; ``mean``/``std`` are torchvision's own values (0-1 scale, RGB).

What is exact: the transform reproduces ``images.tensors`` bit for bit (the normalisation is a per-channel
256-entry table computed in torch's float32 order; the bilinear resize follows torch's CPU kernel with
its fused multiply-adds, see :func:`bilinear_resize`); decode, clip, NMS decisions and the rescale use
torchvision's float32 operation order, so they differ from torchvision only where ``exp`` (numpy's vs
torch's vectorised one) differs in the last bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InvalidArgumentError
from ..kernels import ENABLED
from ..nms import greedy_nms, max_coordinate
from ..preprocess import _preprocess_kernel, lookup_into
from .torchvision_section import BBOX_XFORM_CLIP

COORDINATE_TRICK_MAX_BOXES = 1000
"""CPU ``batched_nms`` uses the coordinate trick up to this many boxes (``boxes.numel() <= 4000``)."""


def _size(name: str, size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(v) != v or v < 1 for v in size):
        raise InvalidArgumentError(f"{name} must be (W, H) positive integers, got {tuple(size)!r}")
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class ResizePlan:
    """How one image becomes the network input (``GeneralizedRCNNTransform`` in eval mode).

    ``src_size``: original image ``(W, H)``. ``resized_size``: ``(W, H)`` after the resize, at the top-left
    of the canvas (torchvision's ``image_sizes``; boxes are clipped to it and rescaled from it).
    ``canvas_size``: ``(W, H)`` of the network input, the resized image zero-padded bottom/right.
    """

    src_size: tuple[int, int]
    resized_size: tuple[int, int]
    canvas_size: tuple[int, int]


def fixed_size_plan(src_size: Sequence[int], size: Sequence[int]) -> ResizePlan:
    """SSD's transform (``fixed_size``, ``size_divisible=1``): stretch to ``size`` ``(W, H)``, no padding."""
    size = _size("size", size)
    return ResizePlan(_size("src_size", src_size), size, size)


def min_max_size_plan(
    src_size: Sequence[int],
    min_size: int,
    max_size: int,
    size_divisible: int,
    canvas: Sequence[int] | None = None,
) -> ResizePlan:
    """RetinaNet's transform: keep the aspect ratio, short side to ``min_size`` unless the long side exceeds
    ``max_size``, then pad to multiples of ``size_divisible``.

    ``scale = min(min_size / min(h, w), max_size / max(h, w))`` in float64 and the resized side is
    ``floor(side * scale)`` (``F.interpolate`` with ``recompute_scale_factor=True``), so the short side can
    come out one pixel below ``min_size``. A side that would be 0 (an image thinner than about 1:1333)
    is made 1, where torchvision would raise. With a fixed ``canvas`` ``(W, H)`` (a model with a static
    input) the scale is also limited to ``canvas / side`` so the image fits, and the canvas is not rounded.
    """
    w, h = _size("src_size", src_size)
    if min_size < 1 or max_size < 1 or size_divisible < 1:
        raise InvalidArgumentError(
            f"min_size, max_size and size_divisible must be positive, got {min_size}, {max_size}, {size_divisible}"
        )
    scale = min(float(min_size) / min(h, w), float(max_size) / max(h, w))
    if canvas is not None:
        canvas = _size("canvas", canvas)
        scale = min(scale, canvas[0] / w, canvas[1] / h)
    resized = (max(1, math.floor(w * scale)), max(1, math.floor(h * scale)))
    if canvas is None:
        canvas = tuple(-(-v // size_divisible) * size_divisible for v in resized)
    else:
        resized = (min(resized[0], canvas[0]), min(resized[1], canvas[1]))
    return ResizePlan((w, h), resized, canvas)


@lru_cache(maxsize=16)
def normalisation_tables(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32 ``[3, 256, 1]`` (cv2.LUT's shape): ``(float32(v) / 255 - mean[c]) / std[c]`` in torch's float32
    order (``ToTensor`` + ``Normalize``), per RGB channel."""
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    mean32 = np.asarray(mean, dtype=np.float32)[:, None, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None, None]
    tables = (values[None, :, None] - mean32) / std32
    tables.flags.writeable = False
    return tables


def normalise_planes(image: np.ndarray, tables: np.ndarray, *, compiled: bool = ENABLED) -> np.ndarray:
    """BGR ``uint8 [H, W, 3]`` → float32 RGB planes ``[3, H, W]`` through :func:`normalisation_tables`'s
    ``tables``: plane ``c`` is ``tables[c][image[..., 2 - c]]`` (:func:`~nanodet_infer.preprocess.lookup_into`)."""
    out = np.empty((3, image.shape[0], image.shape[1]), dtype=np.float32)
    return lookup_into(image, tables, True, out, compiled=compiled)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 ``a * b + c`` rounded once (torch's contracted FMA), via float64: the float32 product is exact
    there. Written into the float32 ``out`` when given."""
    product = np.multiply(a, b, dtype=np.float64)
    if out is None:
        return np.add(product, c, out=product).astype(np.float32)
    return np.add(product, c, out=out, casting="same_kind")


@lru_cache(maxsize=64)
def _axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear source indices and weights along one axis (``align_corners=False``, no antialias).

    ``scale = float32(in) / float32(out)``; ``src = fma(scale, dst + 0.5, -0.5)`` rounded once to float32,
    clamped at 0; ``i0 = min(floor(src), in - 1)``, ``i1 = i0 + (i0 < in - 1)``; ``l1 = src - i0``,
    ``l0 = 1 - l1`` in float32. Returns ``(i0, i1, l0, l1)``.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    src = np.maximum(_fma(np.full(out_size, scale), dst, np.float64(-0.5)), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = i0 + (i0 < in_size - 1)
    l1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1))
    l0 = np.float32(1) - l1
    for array in (i0, i1, l0, l1):
        array.flags.writeable = False
    return i0, i1, l0, l1


def bilinear_resize(planes: np.ndarray, size: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
    """``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` of float32 ``[C, H, W]``
    planes to ``size`` ``(W, H)``, bit-exact with torch's CPU kernel (on >= 2 threads).

    Per output pixel, width first: ``t0 = fma(x[h0, w0], lw0, x[h0, w1] * lw1)``, the same for row ``h1``,
    then ``fma(t0, lh0, t1 * lh1)``, each product inside an ``fma`` exact and rounded once with the sum.
    The width pass only depends on the source row, so it runs once per source row that is used.
    Writes into ``out`` (float32 ``[C, H', W']``, may be a view) when given.
    """
    out_w, out_h = _size("size", size)
    channels, in_h, in_w = planes.shape
    if out is None:
        out = np.empty((channels, out_h, out_w), dtype=np.float32)
    w0, w1, lw0, lw1 = _axis_weights(in_w, out_w)
    h0, h1, lh0, lh1 = _axis_weights(in_h, out_h)
    rows, inverse = np.unique(np.concatenate([h0, h1]), return_inverse=True)
    r0, r1 = inverse[:out_h], inverse[out_h:]
    lh0, lh1 = lh0[:, None], lh1[:, None]
    across = np.empty((len(rows), out_w), dtype=np.float32)
    for c in range(channels):
        source = planes[c, rows]
        _fma(source[:, w0], lw0, source[:, w1] * lw1, out=across)
        _fma(across[r0], lh0, across[r1] * lh1, out=out[c])
    return out


def transform(
    image: np.ndarray,
    plan: ResizePlan,
    mean: Sequence[float],
    std: Sequence[float],
    out: np.ndarray | None = None,
    *,
    compiled: bool = ENABLED,
) -> np.ndarray:
    """BGR ``uint8 [H, W, 3]`` (as :func:`..images.load_image` returns it) → float32 ``[3, Hc, Wc]``,
    torchvision's ``images.tensors`` bit for bit.

    ``rgb / 255`` (float32), normalised per channel with torchvision's ``mean``/``std`` (0-1 scale, RGB),
    *then* resized bilinearly to ``plan.resized_size`` (:func:`bilinear_resize`), then zero-padded to
    ``plan.canvas_size`` (the padding is 0 after normalisation). With ``out`` (float32 ``[3, Hc, Wc]``,
    e.g. one batch slot) the result is written there. With ``compiled`` (default: unless ``NANODET_NO_KERNEL=1``)
    and the C kernel ``_preprocess_kernel`` built, the table lookup and the resize run fused in C, with the same
    arithmetic (the tests compare the two paths bit for bit).
    """
    if (image.shape[1], image.shape[0]) != plan.src_size:
        raise InvalidArgumentError(
            f"image is {image.shape[1]}x{image.shape[0]} (WxH) but the plan was made for "
            f"{plan.src_size[0]}x{plan.src_size[1]}; make the plan from this image's size"
        )
    (rw, rh), (cw, ch) = plan.resized_size, plan.canvas_size
    if out is None:
        out = np.empty((3, ch, cw), dtype=np.float32)
    elif out.shape != (3, ch, cw) or out.dtype != np.float32:
        raise InvalidArgumentError(f"out must be float32 [3, {ch}, {cw}], got {out.dtype} {out.shape}")
    tables = normalisation_tables(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    resize = plan.resized_size != plan.src_size  # torch's kernel copies when in == out (scale 1, weights 0/1)
    if resize and compiled and _preprocess_kernel is not None and out.flags.c_contiguous:
        in_w, in_h = plan.src_size
        _preprocess_kernel.transform(np.ascontiguousarray(image), in_h, in_w, tables, *_axis_weights(in_w, rw),
                                    *_axis_weights(in_h, rh), out, ch, cw)
    elif resize:
        bilinear_resize(normalise_planes(image, tables, compiled=compiled), plan.resized_size, out=out[:, :rh, :rw])
    else:
        out[:, :rh, :rw] = normalise_planes(image, tables, compiled=compiled)
    out[:, rh:, :] = 0
    out[:, :rh, rw:] = 0
    return out


def decode_boxes(
    deltas: np.ndarray, anchors: np.ndarray, weights: Sequence[float], clip: float = BBOX_XFORM_CLIP
) -> np.ndarray:
    """``BoxCoder(weights, clip).decode_single``: float32 deltas ``[K, 4]`` on xyxy anchors ``[K, 4]`` → xyxy.

    float32 throughout, in torchvision's order: ``w = x2 - x1``, ``cx = x1 + 0.5 * w``, ``dx = d0 / wx``,
    ``dw = min(d2 / ww, clip)``, ``pcx = dx * w + cx`` (two roundings, no FMA), ``pw = exp(dw) * w``,
    ``x1' = pcx - 0.5 * pw``, ``x2' = pcx + 0.5 * pw``; the same for y. Row by row, so decoding a subset of
    rows gives the same rows.
    """
    deltas = np.asarray(deltas, dtype=np.float32).reshape(-1, 4)
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 4)
    wx, wy, ww, wh = (np.float32(v) for v in weights)
    half, limit = np.float32(0.5), np.float32(clip)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    ctr_x = anchors[:, 0] + half * widths
    ctr_y = anchors[:, 1] + half * heights
    with np.errstate(over="ignore", invalid="ignore"):
        pred_x = deltas[:, 0] / wx * widths + ctr_x
        pred_y = deltas[:, 1] / wy * heights + ctr_y
        half_w = half * (np.exp(np.minimum(deltas[:, 2] / ww, limit)) * widths)
        half_h = half * (np.exp(np.minimum(deltas[:, 3] / wh, limit)) * heights)
        return np.stack([pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h], axis=1)


def clip_boxes(boxes: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``clip_boxes_to_image``: clamp x to ``[0, W]`` and y to ``[0, H]`` of ``size`` ``(W, H)``, in place."""
    width, height = size
    np.clip(boxes[:, 0::2], np.float32(0), np.float32(width), out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], np.float32(0), np.float32(height), out=boxes[:, 1::2])
    return boxes


@dataclass(frozen=True)
class DetectionParams:
    """The settings of one torchvision ``postprocess_detections`` call.

    ``image_size``: ``(W, H)`` of the resized image (boxes are clipped to it). ``score_threshold``: a candidate's
    score must be ``>`` it (float32 compare). ``iou_threshold``: NMS suppresses ``IoU >`` it. ``max_detections``:
    kept after NMS (None: all). ``topk_candidates``: torchvision's per-label (SSD) / per-level (RetinaNet) top-k.
    ``coder_weights``, ``bbox_xform_clip``: the ``BoxCoder``. ``multi_label=False`` lets only each anchor's best
    class be a candidate (torchvision: True).
    """

    image_size: tuple[int, int]
    score_threshold: float
    iou_threshold: float
    max_detections: int | None
    topk_candidates: int
    coder_weights: tuple[float, ...]
    multi_label: bool = True
    bbox_xform_clip: float = BBOX_XFORM_CLIP

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0 or not 0.0 <= self.iou_threshold <= 1.0:
            raise InvalidArgumentError(
                f"score_threshold and iou_threshold must lie in [0, 1], got {self.score_threshold} and "
                f"{self.iou_threshold}"
            )
        if self.topk_candidates < 1 or (self.max_detections is not None and self.max_detections < 1):
            raise InvalidArgumentError(
                f"topk_candidates and max_detections must be >= 1, got {self.topk_candidates} and {self.max_detections}"
            )


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """``scores.topk(min(k, len))`` indices, sorted by score descending; ties (undefined in torch) by index."""
    if k < len(scores):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(len(scores))
    return candidates[np.argsort(-scores[candidates], kind="stable")][:k]


def torchvision_batched_nms(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float, max_keep: int | None
) -> np.ndarray:
    """``box_ops.batched_nms(boxes, scores, labels, iou_threshold)[:max_keep]`` as torchvision runs it on CPU.

    Up to :data:`COORDINATE_TRICK_MAX_BOXES` boxes: one NMS on the boxes shifted by
    ``label * (max_coordinate + 1)`` (float32). Above: NMS class by class on the unshifted boxes, then every
    kept index sorted by score, descending. Both use :func:`..nms.greedy_nms` (torchvision's kernel: float32
    IoU without +1, suppressed when ``IoU > iou_threshold`` compared in double, stable score order). The two
    paths can differ in the last bits of IoU near the threshold, which is why both are reproduced. Ties in
    score, which torchvision leaves unordered, are broken by index. Returns int64 indices.
    """
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) <= COORDINATE_TRICK_MAX_BOXES:
        return greedy_nms(scores, labels, iou_threshold, max_keep, boxes.__getitem__, max_coordinate(boxes))[0]
    kept = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        class_boxes = boxes[rows]
        same = np.zeros(len(rows), dtype=np.int64)  # one class: the shift is 0 and boxes stay as they are
        kept.append(rows[greedy_nms(scores[rows], same, iou_threshold, max_keep, class_boxes.__getitem__, 0)[0]])
    keep = np.sort(np.concatenate(kept))
    return keep[np.argsort(-scores[keep], kind="stable")][:max_keep]


def boxes_to_original(boxes: np.ndarray, plan: ResizePlan) -> np.ndarray:
    """``transform.postprocess``: x times ``float32(W) / float32(w)``, y times ``float32(H) / float32(h)``
    (original ``W, H`` over resized ``w, h``), in float32. Not clipped (torchvision does not clip here)."""
    ratio_w = np.float32(plan.src_size[0]) / np.float32(plan.resized_size[0])
    ratio_h = np.float32(plan.src_size[1]) / np.float32(plan.resized_size[1])
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.array([ratio_w, ratio_h] * 2, dtype=np.float32)
