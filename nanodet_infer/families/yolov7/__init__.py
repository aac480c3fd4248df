"""YOLOv7 (WongKinYiu/yolov7): upstream's ``letterbox``, ``non_max_suppression`` and ``scale_coords`` in numpy.

The model is the deploy graph (``Detect`` head, eval mode): one output ``[B, N, 5 + C]`` of rows
``[cx, cy, w, h, obj, cls_0 .. cls_{C-1}]``, boxes already decoded in network-input pixels and obj/cls
already sigmoided, so the runtime only letterboxes the image and runs NMS.
"""

from .postprocess import non_max_suppression, scale_coords, xywh2xyxy
from .preprocess import LetterboxPlan, letterbox, letterbox_input, plan_letterbox

__all__ = [
    "LetterboxPlan",
    "letterbox",
    "letterbox_input",
    "non_max_suppression",
    "plan_letterbox",
    "scale_coords",
    "xywh2xyxy",
]
