"""nanodet-export: upstream training checkpoint → ONNX / OpenVINO IR with metadata.

Use :func:`export_checkpoint` for a checkpoint file of any supported family (recognised from its
content, or forced with ``family=``; :data:`.families.FAMILIES`) and :func:`export_model` for an
in-memory NanoDet-Plus model (:func:`.yolov7.export_model` for YOLOv7); all return an
:class:`ExportReport`. The ``nanodet-export`` command is :mod:`.cli`.
"""

from .api import PRODUCER, ExportReport, export_checkpoint, export_model

__all__ = ["PRODUCER", "ExportReport", "export_checkpoint", "export_model"]
