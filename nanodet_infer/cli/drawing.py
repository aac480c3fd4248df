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
        top = max(y1 - th - base, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw, top + th + base), colour, -1)
        cv2.putText(canvas, label, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas
