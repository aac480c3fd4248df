"""OpenVINO backend: CPU plugin, fp32 by default, one infer request per thread.

Thread safety: a ``CompiledModel`` may be shared between threads, an ``InferRequest`` may not. Each
thread that calls :meth:`OpenVinoBackend.run` gets its own request (kept in a ``threading.local``),
so calls from several threads run concurrently without a lock.

Metadata: OpenVINO IRs carry the exporter's string map in ``rt_info`` section ``model_info``;
for an ``.onnx`` file OpenVINO's ONNX frontend puts the ONNX ``metadata_props`` into ``rt_info``
section ``framework`` (OpenVINO 2023.0 and later). Both sections are read, ``model_info`` winning.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, IncompatibleModelError, ModelLoadError
from ..metadata import OV_RT_INFO_SECTION
from .base import Backend, Shape, check_model_path, engine_message
from .inspection import check_model

PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
"""Our precision names → OpenVINO ``INFERENCE_PRECISION_HINT`` values."""

_ONNX_RT_INFO_SECTION = "framework"


class OpenVinoBackend(Backend):
    """An OpenVINO IR (``.xml`` + ``.bin``) or ``.onnx`` model compiled for the CPU plugin.

    ``precision="f32"`` (default) sets ``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16 support
    OpenVINO would otherwise run in bf16 (about 2e-3 away from fp32). ``"bf16"`` / ``"f16"`` opt in to
    the faster reduced precision (where the CPU lacks f16 arithmetic OpenVINO picks its nearest
    supported type). ``num_threads`` sets ``INFERENCE_NUM_THREADS`` (``None``: the plugin default). The file
    (the ``.xml`` of an IR) is checked by :func:`~.inspection.check_model` before OpenVINO reads it.
    ``streams`` > 1 compiles that many CPU streams (``NUM_STREAMS``), so as many requests from different
    threads run at once (one stream serialises them), each on ``num_threads`` threads (default 1).
    """

    name = "openvino"

    def __init__(
        self,
        path: str | Path,
        *,
        num_threads: int | None = None,
        precision: str = "f32",
        allow_control_flow: bool = False,
        streams: int = 1,
    ) -> None:
        model_path = check_model_path(path, (".xml", ".onnx"), self.name)
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailableError(
                f"OpenVINO is not installed ({exc}); install it with `pip install openvino`"
            ) from None
        if model_path.suffix.lower() == ".xml" and not model_path.with_suffix(".bin").is_file():
            raise ModelLoadError(
                f"the weights file {model_path.with_suffix('.bin').name!r} of IR {str(model_path)!r} is missing; "
                "keep the .bin next to the .xml"
            )
        check_model(model_path, allow_control_flow=allow_control_flow)
        # No pinning: each process pins its threads from the first core on, unaware of the others, so two
        # 1-thread detectors in two processes (Ray actors, serve replicas, parallel CLI runs) shared one core and
        # ran at half speed each; unpinned they scale (docs/benchmark.md, "Processes side by side").
        config: dict[str, str] = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "ENABLE_CPU_PINNING": "NO"}
        if num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = str(num_threads)
        if streams > 1:
            config["NUM_STREAMS"] = str(streams)
            config["INFERENCE_NUM_THREADS"] = str((num_threads or 1) * streams)
        try:
            core = ov.Core()
            model = core.read_model(str(model_path))
            properties = _read_properties(model)
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError/its own types with C++ detail
            raise ModelLoadError(f"OpenVINO cannot load {str(model_path)!r}: {engine_message(exc)}") from None
        if len(model.inputs) != 1:
            raise IncompatibleModelError(
                f"{model_path.name!r} has {len(model.inputs)} inputs; a detector has exactly one"
            )
        self._input_name = _port_name(model.input(0), "input")
        self._input_shape = _shape(model.input(0).get_partial_shape())
        self._output_names = tuple(_port_name(o, f"output{i}") for i, o in enumerate(model.outputs))
        self._output_shapes = tuple(_shape(o.get_partial_shape()) for o in model.outputs)
        self._properties = properties
        self._local = threading.local()

    def _run(self, tensor: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        # share_outputs=False (default): the results are copies, not views of the request's buffers.
        result = request.infer({0: tensor}, share_inputs=True)
        return [result[port] for port in self._compiled.outputs]


def _read_properties(model) -> dict[str, str]:
    properties: dict[str, str] = {}
    rt_info = model.get_rt_info()
    for section in (_ONNX_RT_INFO_SECTION, OV_RT_INFO_SECTION):
        if model.has_rt_info([section]):
            entries = rt_info[section]
            if isinstance(entries, dict):
                properties.update({str(k): v.value for k, v in entries.items() if isinstance(v.value, str)})
    return properties


def _port_name(port, fallback: str) -> str:
    names = port.get_names()
    return port.get_any_name() if names else fallback


def _shape(partial_shape) -> Shape:
    if partial_shape.rank.is_dynamic:
        raise IncompatibleModelError(
            "the model has a tensor of dynamic rank; a detector has an NCHW input and [B, N, C] outputs"
        )
    return tuple(None if d.is_dynamic else d.get_length() for d in partial_shape)
