"""nanodet-export: upstream NanoDet-Plus training checkpoint → ONNX / OpenVINO IR with metadata.

Use :func:`export_checkpoint` for a checkpoint file and :func:`export_model` for an in-memory
model; both return an :class:`ExportReport`. The ``nanodet-export`` command is :mod:`.cli`.
"""

from .api import PRODUCER, ExportReport, export_checkpoint, export_model

__all__ = ["PRODUCER", "ExportReport", "export_checkpoint", "export_model"]
