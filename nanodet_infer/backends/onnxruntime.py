"""ONNX Runtime backend: CPU execution provider, full graph optimisation.

``InferenceSession.run`` is thread-safe, so one session serves every thread without a lock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, IncompatibleModelError, InvalidArgumentError, ModelLoadError
from .base import Backend, Shape, check_model_path, engine_message
from .inspection import check_model


class OnnxRuntimeBackend(Backend):
    """An ``.onnx`` model in an ``onnxruntime.InferenceSession`` on the CPU provider.

    ``num_threads`` sets ``intra_op_num_threads`` (``None``: the library default, one per core).
    Metadata comes from the ONNX ``metadata_props`` (``get_modelmeta().custom_metadata_map``). The file is
    checked by :func:`~.inspection.check_model` before ONNX Runtime reads it.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        num_threads: int | None = None,
        precision: str = "f32",
        allow_control_flow: bool = False,
    ) -> None:
        if precision != "f32":
            raise InvalidArgumentError(
                f"precision {precision!r} is not available on ONNX Runtime's CPU provider; use precision='f32' "
                "or backend='openvino' for bf16/f16"
            )
        model = check_model_path(path, (".onnx",), self.name)
        check_model(model, allow_control_flow=allow_control_flow)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                f"ONNX Runtime is not installed ({exc}); install it with `pip install onnxruntime`"
            ) from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        try:
            self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
            properties = dict(self._session.get_modelmeta().custom_metadata_map)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ModelLoadError(f"ONNX Runtime cannot load {str(model)!r}: {engine_message(exc)}") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise IncompatibleModelError(
                f"{model.name!r} has {len(inputs)} inputs ({[i.name for i in inputs]}); a detector has exactly one"
            )
        outputs = self._session.get_outputs()
        self._input_name = inputs[0].name
        self._input_shape = _shape(inputs[0].shape)
        self._output_names = tuple(o.name for o in outputs)
        self._output_shapes = tuple(_shape(o.shape) for o in outputs)
        self._properties = properties

    def _run(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self._session.run(list(self._output_names), {self._input_name: tensor})


def _shape(dims: list) -> Shape:
    """ORT reports symbolic dimensions as strings or None; map them to None."""
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in dims)
