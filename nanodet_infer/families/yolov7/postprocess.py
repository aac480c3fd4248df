"""YOLOv7 predictions → detections: upstream's ``utils/general.py`` ``non_max_suppression`` and ``scale_coords``.

Float32 throughout, as upstream's tensors, with torch's scalar rules: a Python-float threshold or offset
meets a float32 tensor as a float32 (``obj > conf_thres`` compares with ``np.float32(conf_thres)``; 0.001
rounds up, so a value of exactly ``float32(0.001)`` is not a candidate), while torchvision's NMS compares
the float32 IoU with the threshold as a double (:mod:`nanodet_infer.nms`).

``non_max_suppression`` for one image's rows ``[N, 5 + C]`` (``[cx, cy, w, h, obj, cls...]``):

1. candidates ``obj > conf_thres``; ``conf = cls * obj`` (``conf = obj`` when ``C == 1``: upstream's
   single-class rule, whose class probability is meaningless);
2. boxes ``xywh2xyxy`` (``x - w / 2`` ...);
3. ``multi_label`` (forced off when ``C == 1``): one row per (box, class) with ``conf > conf_thres``,
   ordered by box then class (``nonzero``); otherwise the best class per box (first index on ties) when its
   ``conf > conf_thres``;
4. ``classes``: keep only those class ids;
5. more than ``max_nms`` rows: keep the ``max_nms`` highest ``conf`` (see the caveat below);
6. NMS: ``torchvision.ops.nms`` on the boxes offset by ``class * max_wh`` (float32; 0 when ``agnostic``),
   so boxes of different classes only meet when coordinates exceed ``max_wh`` — exactly as upstream; IoU
   ``> iou_thres`` suppresses; score order descending, ties by row order; the first ``max_det`` kept.

Not reproduced: upstream's 10 s time limit (it only cuts the batch loop short on slow hardware and prints
a warning; results never depend on it here), merge-NMS and apriori labels (both off in detect.py/test.py),
and the tie order of step 5: upstream sorts with torch's unstable ``argsort(descending=True)`` (introsort),
here the sort is stable. The two differ only when more than ``max_nms`` candidates have exactly equal
float32 scores (which ones survive the cut, and their NMS order among equals).

Non-finite values: a NaN obj or class probability is never a candidate (as upstream: NaN fails ``>``); a
candidate whose box has a NaN or infinite coordinate is dropped by NMS (:func:`nanodet_infer.nms.nms`),
where upstream would keep it (a NaN IoU suppresses nothing) and return NaN coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...arguments import check_positive_int, check_unit_interval
from ...errors import InvalidArgumentError
from ...nms import nms
from .preprocess import LetterboxPlan

MAX_WH = 4096  # upstream's class offset (pixels)
MAX_NMS = 30000  # upstream's cap on the boxes entering NMS
MAX_DET = 300  # upstream's cap on the detections per image


def xywh2xyxy(xywh: np.ndarray) -> np.ndarray:
    """float32 ``[K, 4]`` centre/size boxes → float32 ``[K, 4]`` corners, upstream's arithmetic (``x ± w / 2``)."""
    xywh = np.asarray(xywh, dtype=np.float32).reshape(-1, 4)
    half = xywh[:, 2:4] / np.float32(2)
    return np.concatenate([xywh[:, 0:2] - half, xywh[:, 0:2] + half], axis=1)


def non_max_suppression(
    prediction: np.ndarray,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    *,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = MAX_DET,
    max_nms: int = MAX_NMS,
    max_wh: float = MAX_WH,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upstream ``non_max_suppression`` on one image's predictions ``[N, 5 + C]`` (float32, input pixels).

    Defaults are detect.py's (0.25 / 0.45, best class only); test.py evaluates with 0.001 / 0.65 and
    ``multi_label=True``. Returns ``(boxes float32 [K, 4] xyxy in network-input pixels, scores float32 [K],
    class_ids int64 [K])``, by score descending, ``K <= max_det`` — upstream's ``[K, 6]`` rows split by column.
    """
    prediction = np.asarray(prediction, dtype=np.float32)
    if prediction.ndim != 2 or prediction.shape[1] < 6:
        raise InvalidArgumentError(
            f"prediction must be one image's rows [N, 5 + num_classes], got shape {prediction.shape}"
        )
    conf_t = np.float32(check_unit_interval("conf_thres", conf_thres))
    iou_thres = check_unit_interval("iou_thres", iou_thres)
    max_det, max_nms = check_positive_int("max_det", max_det), check_positive_int("max_nms", max_nms)
    num_classes = prediction.shape[1] - 5
    x = prediction[prediction[:, 4] > conf_t]
    if num_classes == 1:
        conf = x[:, 4:5].copy()
        multi_label = False
    else:
        conf = x[:, 5:] * x[:, 4:5]
    box = xywh2xyxy(x[:, :4])
    if multi_label:
        rows, labels = np.nonzero(conf > conf_t)
        box, scores = box[rows], conf[rows, labels]
    else:
        labels = conf.argmax(axis=1)
        scores = conf[np.arange(len(conf)), labels]
        keep = scores > conf_t
        box, scores, labels = box[keep], scores[keep], labels[keep]
    if classes is not None:
        keep = np.isin(labels, np.asarray(classes, dtype=np.int64))
        box, scores, labels = box[keep], scores[keep], labels[keep]
    if len(scores) > max_nms:
        top = np.argsort(-scores, kind="stable")[:max_nms]
        box, scores, labels = box[top], scores[top], labels[top]
    offsets = labels.astype(np.float32) * np.float32(0 if agnostic else max_wh)
    keep = nms(box + offsets[:, None], scores, iou_thres, max_keep=max_det)
    return box[keep], scores[keep], labels[keep].astype(np.int64)


def scale_coords(
    boxes: np.ndarray,
    canvas_size: Sequence[int],
    src_size: Sequence[int],
    ratio_pad: tuple[Sequence[float], Sequence[float]] | None = None,
) -> np.ndarray:
    """Upstream ``scale_coords``: xyxy boxes in network-input pixels → original-image pixels, clipped.

    ``canvas_size`` and ``src_size`` are ``(W, H)`` of the network input and of the original image. Without
    ``ratio_pad`` (detect.py) the gain and padding come from the sizes — ``gain = min(Hc / H, Wc / W)``,
    ``pad = ((Wc - W * gain) / 2, (Hc - H * gain) / 2)`` in float64, which is *not* letterbox's own
    (integer-split) padding; with ``ratio_pad = ((gain, _), (pad_w, pad_h))`` (test.py passes letterbox's:
    ``(plan.ratio, plan.pad)`` of a :class:`~.preprocess.LetterboxPlan`) those are used. Then float32
    ``(xyxy - pad) / gain`` (the scalars rounded to float32, as torch does) and x clipped to ``[0, W]``, y to
    ``[0, H]``. Returns float32 ``[K, 4]`` (not rounded; detect.py rounds).
    """
    (cw, ch), (w0, h0) = tuple(canvas_size), tuple(src_size)
    if ratio_pad is None:
        gain = min(ch / h0, cw / w0)
        pad = ((cw - w0 * gain) / 2, (ch - h0 * gain) / 2)
    else:
        gain, pad = ratio_pad[0][0], tuple(ratio_pad[1])
    return _unpad_and_scale(boxes, pad, (gain, gain), (w0, h0))


def boxes_to_original(boxes: np.ndarray, plan: LetterboxPlan) -> np.ndarray:
    """xyxy boxes on ``plan``'s canvas → original-image pixels (float32 ``[K, 4]``, clipped).

    A letterbox (one ratio) maps back with detect.py's :func:`scale_coords` (gain and padding from the
    sizes); a stretch (``scale_fill``, a ratio per axis, no padding) divides x and y by their own ratios.
    """
    if plan.ratio[0] == plan.ratio[1]:
        return scale_coords(boxes, plan.canvas_size, plan.src_size)
    return _unpad_and_scale(boxes, (0.0, 0.0), plan.ratio, plan.src_size)


def _unpad_and_scale(
    boxes: np.ndarray, pad: Sequence[float], gain: Sequence[float], src_size: Sequence[int]
) -> np.ndarray:
    """float32 ``(xyxy - pad) / gain`` (per axis, scalars rounded to float32), clipped to ``[0, W] x [0, H]``."""
    out = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    out -= np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float32)
    out /= np.array([gain[0], gain[1], gain[0], gain[1]], dtype=np.float32)
    np.clip(out[:, 0::2], 0, src_size[0], out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, src_size[1], out=out[:, 1::2])
    return out
