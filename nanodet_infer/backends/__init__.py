"""Inference backends: thin adapters over ONNX Runtime and OpenVINO behind :class:`Backend`.

Neither engine is imported until a backend of that kind is created, so ``import nanodet_infer``
stays light.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..arguments import PRECISIONS, check_choice, check_flag, check_model_path, check_num_threads
from ..errors import BackendUnavailableError
from .base import Backend, Shape
from .inspection import ModelReport, check_model, inspect_model

BACKENDS = ("auto", "onnxruntime", "openvino")

__all__ = ["BACKENDS", "Backend", "ModelReport", "Shape", "check_model", "create_backend", "inspect_model"]


def create_backend(
    path: str | Path,
    backend: str = "auto",
    *,
    num_threads: int | None = None,
    precision: str = "f32",
    allow_control_flow: bool = False,
) -> Backend:
    """Load the model at ``path`` on the named backend.

    ``backend="auto"`` picks OpenVINO when it imports, else ONNX Runtime (an ``.xml`` IR always
    needs OpenVINO). ``num_threads=None`` keeps the engine's default thread count; ``precision`` is
    ``"f32"`` (default, fp32 parity), or ``"bf16"`` / ``"f16"`` (OpenVINO only).

    Before the engine reads the file, :func:`~.inspection.check_model` refuses a metadata key present twice
    (:class:`MetadataError`) and control flow that can run without bound (``Loop``, ``Scan``,
    ``TensorIterator``: :class:`UnsafeModelError`); ``allow_control_flow=True`` accepts the latter, for
    foreign models you trust that really need it.

    Raises :class:`InvalidArgumentError` for an unknown backend or a bad option,
    :class:`BackendUnavailableError` when the engine is not installed, :class:`ModelLoadError` when the
    file is missing or not a loadable model, and the two errors above.
    """
    path = check_model_path(path)
    check_choice("backend", backend, BACKENDS)
    num_threads = check_num_threads(num_threads)
    check_choice("precision", precision, PRECISIONS)
    check_flag("allow_control_flow", allow_control_flow)
    if backend == "auto":
        backend = _auto_backend(Path(path))
    if backend == "openvino":
        from .openvino import OpenVinoBackend

        return OpenVinoBackend(
            path, num_threads=num_threads, precision=precision, allow_control_flow=allow_control_flow
        )
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, num_threads=num_threads, precision=precision, allow_control_flow=allow_control_flow)


def _auto_backend(path: Path) -> str:
    if _importable("openvino"):
        return "openvino"
    if path.suffix.lower() == ".xml":
        raise BackendUnavailableError(
            f"{path.name!r} is an OpenVINO IR but OpenVINO is not installed; install it with `pip install openvino`"
        )
    if _importable("onnxruntime"):
        return "onnxruntime"
    raise BackendUnavailableError(
        "neither OpenVINO nor ONNX Runtime is installed; install one with `pip install openvino` "
        "or `pip install onnxruntime`"
    )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
