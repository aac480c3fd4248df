"""YOLOv7 (WongKinYiu/yolov7): upstream's ``letterbox``, ``non_max_suppression`` and ``scale_coords`` in numpy.

The model is the deploy graph (``Detect`` head, eval mode): one output ``[B, N, 5 + C]`` of rows
``[cx, cy, w, h, obj, cls_0 .. cls_{C-1}]``, boxes already decoded in network-input pixels and obj/cls
already sigmoided, so the runtime only letterboxes the image (:mod:`.preprocess`) and runs NMS
(:mod:`.postprocess`). Nothing is imported here, so reading the metadata section stays cheap.
"""
