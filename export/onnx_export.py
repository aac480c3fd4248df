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

import numpy as np
import onnx
import torch
from torch import nn

from nanodet_infer.errors import ExportError

INPUT_NAME = "images"

# What torch's legacy exporter announces on every call (it still works and is what we choose).
_EXPORTER_WARNINGS = (
    (DeprecationWarning, "You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, "The feature will be removed"),
)


def trace_to_onnx(
    deploy: nn.Module,
    size_wh: tuple[int, int],
    channels: tuple[int, ...],
    *,
    dynamic: bool,
    opset: int,
    simplify: bool,
    output_names: tuple[str, ...],
    dynamic_hw: bool | None = None,
) -> onnx.ModelProto:
    """Trace ``deploy`` (``x -> outputs``, e.g. NanoDet's ``(scores, boxes)``) at ``size_wh`` and return
    the ONNX model.

    The input is ``images`` ``[B, 3, H, W]``; the outputs, named ``output_names``, are ``[B, N, c]``
    with ``c`` the matching entry of ``channels`` (NanoDet: ``scores`` ``[B, N, C]`` and ``boxes``
    ``[B, N, 4 * (reg_max + 1)]``). With ``dynamic`` the batch is symbolic (``batch``; the row axis is
    ``priors``), and so are the height and width (``height``, ``width``) unless ``dynamic_hw`` is False.
    """
    width, height = size_wh
    example = torch.zeros(1, 3, height, width)
    dynamic_axes = None
    if dynamic:
        spatial = {2: "height", 3: "width"} if dynamic_hw is not False else {}
        dynamic_axes = {INPUT_NAME: {0: "batch", **spatial}}
        dynamic_axes.update({name: {0: "batch", 1: "priors"} for name in output_names})
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
                output_names=list(output_names),
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
    """Parameter count of ``deploy``'s convolutions once each BatchNorm is folded into the one before it.

    Folding turns a BatchNorm's weight and bias (2 x C) into the bias of its bias-free convolution
    (C), so a faithful export of ``deploy`` feeds exactly this many weight values to its convolutions.
    PReLU slopes are not counted: they feed ``PRelu`` nodes, and one module can serve several
    (``DepthwiseConvModule`` applies its activation twice, as upstream does).
    """
    count = sum(p.numel() for p in deploy.parameters())
    for module in deploy.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            count -= module.num_features
        elif isinstance(module, nn.PReLU):
            count -= module.weight.numel()
    return count


def check_deploy_parameters(
    model: onnx.ModelProto, deploy: nn.Module, *, elementwise: int = 0, training_only: tuple[str, ...] = ()
) -> int:
    """Verify that the graph holds the deploy weights and nothing else; return the count.

    The float weights read by Conv/Gemm/MatMul nodes (counted per distinct set of weight tensors a node
    reads: the exporter stores equal tensors, e.g. the zero biases of a fresh model, once, and a head
    shared by several levels feeds one set to several nodes) must add up to
    :func:`folded_parameter_count` of ``deploy`` less ``elementwise`` (parameters that feed element-wise
    nodes, e.g. SSD300's L2Norm scale), and no initializer may start with a ``training_only`` prefix (e.g.
    NanoDet-Plus's ``aux_fpn``/``aux_head``); otherwise :class:`ExportError`.
    """
    by_name = {init.name: init for init in model.graph.initializer}
    aux = sorted(name for name in by_name if training_only and name.startswith(training_only))
    if aux:
        raise ExportError(f"training-only weights leaked into the graph: {', '.join(aux[:3])}")
    alias = {node.output[0]: node.input[0] for node in model.graph.node if node.op_type == "Identity"}

    def initializer(name: str) -> onnx.TensorProto | None:
        while name in alias:
            name = alias[name]
        return by_name.get(name)

    found = 0
    weight_sets: set[tuple[str, ...]] = set()
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            tensors = [t for t in map(initializer, node.input[1:]) if t is not None]
            names = tuple(t.name for t in tensors)
            if names not in weight_sets:  # a module shared by several levels is one set of weights
                weight_sets.add(names)
                found += sum(_numel(t) for t in tensors)
    expected = folded_parameter_count(deploy) - elementwise
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


def output_dims(model: onnx.ModelProto, size_wh: tuple[int, int]) -> dict[str, list[int]]:
    """``{name: dims}`` of the outputs for a batch-1 ``size_wh`` input: as declared when every dim is
    static, else (dynamic graphs) measured by running the graph once on onnxruntime."""
    declared = output_shapes(model)
    if all(isinstance(d, int) and d > 0 for dims in declared.values() for d in dims):
        return declared  # type: ignore[return-value]
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, size_wh[1], size_wh[0]), dtype=np.float32)
    results = session.run(list(declared), {session.get_inputs()[0].name: x})
    return {name: list(result.shape) for name, result in zip(declared, results, strict=True)}


def output_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """``{name: dims}`` of the graph outputs; symbolic dims as their names."""
    return {
        out.name: [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] for out in model.graph.output
    }
