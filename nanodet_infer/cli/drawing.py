"""Boxes and ``name score`` labels drawn on a copy of an image (annotated outputs of ``detect``)."""

from __future__ import annotations

from typing import Any

from ..safetext import safe_text


def _colour(class_id: int) -> tuple[int, int, int]:
    """A fixed, well-spread BGR colour per class id."""
    import cv2
    import numpy as np

    hsv = np.uint8([[[(class_id * 47) % 180, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def label_origin(corner: tuple[int, int], label: tuple[int, int], image: tuple[int, int]) -> tuple[int, int]:
    """Top-left pixel of a ``label`` (W, H) box drawn above a box's top-left ``corner`` (x, y), moved so the
    whole label lies inside the ``image`` (W, H): below the corner when there is no room above it, shifted
    left at the right edge. A label wider than the image starts at x = 0."""
    (x, y), (width, height), (image_w, image_h) = corner, label, image
    top = y - height if y - height >= 0 else y
    top = max(0, min(top, image_h - height))
    left = max(0, min(x, image_w - width))
    return left, top


def draw_detections(image: Any, detections: Any) -> Any:
    """A copy of ``image`` (BGR uint8 ``[H, W, 3]``) with boxes (``xyxy`` in its pixels) and
    ``name score`` labels drawn on it; names pass through :func:`~nanodet_infer.safetext.safe_text`."""
    import cv2

    canvas = image.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    for box, score, class_id, name in zip(
        detections.xyxy, detections.scores, detections.class_ids, detections.labels, strict=True
    ):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        colour = _colour(int(class_id))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        label = f"{safe_text(name)} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, 1)
        left, top = label_origin((x1, y1), (tw, th + base), canvas.shape[1::-1])
        cv2.rectangle(canvas, (left, top), (left + tw, top + th + base), colour, -1)
        cv2.putText(canvas, label, (left, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas
