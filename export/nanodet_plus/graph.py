"""NanoDet-Plus's graph facts: its output names, its training-only modules, and the output layout check."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from nanodet_infer.errors import ExportError
from nanodet_infer.families.nanodet_plus.decode import num_priors

from ..onnx_export import output_dims

SCORES_NAME = "scores"
BOXES_NAME = "boxes"
#: Initializer prefixes of the training-only modules the deploy model drops.
AUX_PREFIXES = ("aux_fpn", "aux_head")


def check_output_layout(
    model: onnx.ModelProto, size_wh: tuple[int, int], strides: Sequence[int], channels: tuple[int, int]
) -> None:
    """Raise :class:`ExportError` unless the graph's outputs at ``size_wh`` fit the metadata.

    Each output must be ``[1, N, c]`` with ``N = Σ ceil(H/s)·ceil(W/s)`` over ``strides`` (what the
    runtime decodes with) and ``c`` the matching entry of ``channels`` (``C``, ``4 * (reg_max + 1)``).
    """
    expected = num_priors(size_wh, strides)
    for (name, dims), width in zip(output_dims(model, size_wh).items(), channels, strict=True):
        if dims[1] != expected:
            raise ExportError(
                f"output {name!r} has {dims[1]} rows at W,H = {size_wh[0]},{size_wh[1]} but the strides "
                f"{list(strides)} give {expected} priors; head.strides does not match the network's levels: "
                "fix head.strides in the config"
            )
        if dims[2] != width:
            raise ExportError(
                f"output {name!r} has {dims[2]} channels but the metadata (num_classes, reg_max) gives {width}"
            )
