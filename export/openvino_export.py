"""ONNX → OpenVINO IR (``.xml`` + ``.bin``) with the metadata in ``rt_info``."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from nanodet_infer.errors import ExportError
from nanodet_infer.metadata import OV_RT_INFO_SECTION

if TYPE_CHECKING:  # openvino is imported lazily: only OpenVINO exports pay for it
    import openvino


def convert(model: onnx.ModelProto, properties: dict[str, str]) -> openvino.Model:
    """Convert the in-memory ONNX ``model`` and set each metadata entry under ``rt_info``.

    Entries land at ``rt_info[OV_RT_INFO_SECTION][key]``, where the runtime reads them back.
    """
    import openvino as ov

    try:
        # ovc prints its arguments whenever "--verbose" is in sys.argv (i.e. ours): keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            ov_model = ov.convert_model(io.BytesIO(model.SerializeToString()))
    except Exception as exc:  # ovc raises its own Error type for every conversion problem
        raise ExportError(f"OpenVINO could not convert the ONNX graph: {exc}") from exc
    for key, value in properties.items():
        ov_model.set_rt_info(value, [OV_RT_INFO_SECTION, key])
    return ov_model


def save(ov_model: openvino.Model, xml_path: Path, *, fp16: bool) -> None:
    """Write ``xml_path`` and its ``.bin``; FP32 weights unless ``fp16`` (never OpenVINO's default)."""
    import openvino as ov

    ov.save_model(ov_model, str(xml_path), compress_to_fp16=fp16)


def read_properties(xml_path: Path) -> dict[str, str]:
    """The ``rt_info`` metadata section of a saved IR, as a string map."""
    import openvino as ov

    model = ov.Core().read_model(str(xml_path))
    if not model.has_rt_info([OV_RT_INFO_SECTION]):
        return {}
    section = model.get_rt_info([OV_RT_INFO_SECTION]).astype(dict)
    return {key: value.astype(str) for key, value in section.items()}
