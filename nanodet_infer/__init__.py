"""nanodet-infer: torch-free NanoDet-Plus inference on ONNX Runtime and OpenVINO CPUs."""

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
    UnsafeCheckpointError,
)
from .metadata import ModelMetadata

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "ExportError",
    "ImageReadError",
    "IncompatibleModelError",
    "InvalidArgumentError",
    "InvalidImageError",
    "MetadataError",
    "ModelLoadError",
    "ModelMetadata",
    "NanoDetError",
    "UnsafeCheckpointError",
    "__version__",
]
