"""PyTorch deploy module → in-memory ONNX model (traced, simplified, metadata embedded, checked).

Exporter: torch's TorchScript-based ("legacy", ``dynamo=False``) exporter. It traces the deploy
module in a fraction of a second, keeps the input/output names we give it, honours ``dynamic_axes``
with the axis names we choose, folds BatchNorm into the convolutions and writes a single file. The
``torch.export`` (dynamo) exporter would need the extra ``onnxscript`` package, names symbolic output
dims after shape expressions, and writes weights to a separate ``.onnx.data`` file by default. See
``docs/export.md``.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn

from nanodet_infer.errors import ExportError

INPUT_NAME = "images"
SCORES_NAME = "scores"
BOXES_NAME = "boxes"
AUX_PREFIXES = ("aux_fpn", "aux_head")

# What torch's legacy exporter announces on every call (it still works and is what we choose).
_EXPORTER_WARNINGS = (
    (DeprecationWarning, "You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, "The feature will be removed"),
)


def trace_to_onnx(
    deploy: nn.Module,
    size_wh: tuple[int, int],
    channels: tuple[int, int],
    *,
    dynamic: bool,
    opset: int,
    simplify: bool,
) -> onnx.ModelProto:
    """Trace ``deploy`` (``x -> (scores, boxes)``) at ``size_wh`` and return the ONNX model.

    The input is ``images`` ``[B, 3, H, W]``; outputs ``scores`` ``[B, N, C]`` and ``boxes``
    ``[B, N, 4 * (reg_max + 1)]``, whose last dims are ``channels``. With ``dynamic`` the batch,
    height and width are symbolic (``batch``, ``height``, ``width``; the prior axis is ``priors``).
    """
    width, height = size_wh
    example = torch.zeros(1, 3, height, width)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {
            INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            SCORES_NAME: {0: "batch", 1: "priors"},
            BOXES_NAME: {0: "batch", 1: "priors"},
        }
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            for category, message in _EXPORTER_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            torch.onnx.export(
                deploy,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[SCORES_NAME, BOXES_NAME],
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    except (RuntimeError, ValueError, torch.onnx.errors.OnnxExporterError) as exc:
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {exc}; try another --opset") from exc
    model = onnx.load_from_string(buffer.getvalue())
    if simplify:
        model = _simplify(model)
    if dynamic:
        # Shape inference loses the static channel dims behind the dynamic reshapes: restore them.
        for output, size in zip(model.graph.output, channels, strict=True):
            output.type.tensor_type.shape.dim[2].dim_value = size
    return model


def _simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxsim  # imports torch itself; only the exporter pays for it

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise ExportError("onnxsim could not validate the simplified graph; export again with --no-simplify")
    return simplified


def embed_metadata(model: onnx.ModelProto, properties: dict[str, str]) -> None:
    """Write ``properties`` into ``metadata_props`` (replacing any there) and run ``onnx.checker``."""
    onnx.helper.set_model_props(model, properties)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX graph is invalid: {exc}") from exc


def folded_parameter_count(deploy: nn.Module) -> int:
    """Parameter count of ``deploy`` once each BatchNorm is folded into the convolution before it.

    Folding turns a BatchNorm's weight and bias (2 x C) into the bias of its bias-free convolution
    (C), so a faithful export of ``deploy`` holds exactly this many weight values.
    """
    count = sum(p.numel() for p in deploy.parameters())
    for module in deploy.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            count -= module.num_features
    return count


def check_deploy_parameters(model: onnx.ModelProto, deploy: nn.Module) -> int:
    """Verify that the graph holds the deploy weights and nothing else; return the count.

    The float weights read by Conv/Gemm/MatMul nodes (counted per node: the exporter stores equal
    tensors, e.g. the zero biases of a fresh model, once) must add up to
    :func:`folded_parameter_count` of ``deploy``, and no initializer may be named after the
    training-only ``aux_fpn``/``aux_head``; otherwise :class:`ExportError`.
    """
    by_name = {init.name: init for init in model.graph.initializer}
    aux = sorted(name for name in by_name if name.startswith(AUX_PREFIXES))
    if aux:
        raise ExportError(f"training-only weights leaked into the graph: {', '.join(aux[:3])}")
    alias = {node.output[0]: node.input[0] for node in model.graph.node if node.op_type == "Identity"}

    def initializer(name: str) -> onnx.TensorProto | None:
        while name in alias:
            name = alias[name]
        return by_name.get(name)

    found = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            found += sum(_numel(t) for t in map(initializer, node.input[1:]) if t is not None)
    expected = folded_parameter_count(deploy)
    if found != expected:
        raise ExportError(
            f"the graph holds {found} weight values, the deploy model {expected}; "
            "the export does not match the deploy model"
        )
    return found


def _numel(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count


def output_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """``{name: dims}`` of the graph outputs; symbolic dims as their names."""
    return {
        out.name: [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] for out in model.graph.output
    }
