"""nanodet-infer: torch-free object detection (NanoDet-Plus and the other families in ``families/``) on CPUs.

``Detector``, ``Detections`` and ``StageTimings`` are imported on first use, so ``import nanodet_infer``
loads neither OpenCV nor an inference engine.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    BackendUnavailableError,
    CheckpointError,
    ExportError,
    ImageReadError,
    IncompatibleModelError,
    InvalidArgumentError,
    InvalidImageError,
    MetadataError,
    ModelLoadError,
    NanoDetError,
    StreamError,
    UnsafeCheckpointError,
)
from .metadata import ModelMetadata

if TYPE_CHECKING:
    from .detector import Detector
    from .results import Detections, StageTimings

__version__ = "0.1.0"

_LAZY = {"Detector": "detector", "Detections": "results", "StageTimings": "results"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "Detections",
    "Detector",
    "ExportError",
    "ImageReadError",
    "IncompatibleModelError",
    "InvalidArgumentError",
    "InvalidImageError",
    "MetadataError",
    "ModelLoadError",
    "ModelMetadata",
    "NanoDetError",
    "StageTimings",
    "StreamError",
    "UnsafeCheckpointError",
    "__version__",
]
