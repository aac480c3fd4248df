"""NanoDet-Plus export adapter: upstream ``.ckpt``/``.pth`` → deploy model (no aux modules) → file.

Outputs ``scores`` ``[B, N, C]`` (sigmoided) and ``boxes`` ``[B, N, 4 * (reg_max + 1)]`` (raw DFL
logits); metadata :class:`~nanodet_infer.metadata.ModelMetadata`.
"""

from __future__ import annotations

import time
from pathlib import Path

from nanodet_models import ModelConfig, NanoDetPlus, build_model, load_weights, read_checkpoint
from nanodet_models.sniff import pickle_names
from torch import nn

from nanodet_infer.metadata import ModelMetadata

from .. import onnx_export, parity
from ..adapter import FamilyAdapter
from ..resolve import architecture_summary, check_input_size, resolve_config
from ..writer import PRODUCER, ExportOptions, ExportReport, check_options, check_round_trip, write_checked

NAME = "nanodet-plus"
# Every NanoDet-Plus checkpoint holds its head's per-level output convs (state-dict key prefixes below).
_HEAD_KEYS = tuple(f"{prefix}head.gfl_cls." for prefix in ("", "model.", "avg_model.", "module."))


def recognise(path: Path) -> bool:
    """Whether ``path``'s pickle holds NanoDet-Plus state-dict keys (``head.gfl_cls.*``, with or without
    the Lightning/EMA/DataParallel prefix; content sniffing, nothing executed or loaded)."""
    return any(text.startswith(_HEAD_KEYS) for text in pickle_names(path).strings)


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    *,
    options: ExportOptions,
    input_size: tuple[int, int] | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    config: str | Path | None = None,
    preset: str | None = None,
    trust_checkpoint: bool = False,
    activation: str | None = None,
) -> ExportReport:
    """Export an upstream NanoDet-Plus training checkpoint; see :func:`nanodet_export.export_checkpoint`."""
    start = time.perf_counter()
    check_options(out, options)
    checkpoint = read_checkpoint(Path(ckpt), trust=trust_checkpoint)
    cfg = resolve_config(
        checkpoint.state_dict,
        config=config,
        preset=preset,
        input_size=input_size,
        class_names=class_names,
        activation=activation,
    )
    model = build_model(cfg)
    load_weights(model, checkpoint.state_dict)
    return export_model_config(
        model,
        cfg,
        Path(out),
        options,
        source_sha256=checkpoint.sha256,
        used_ema=checkpoint.used_ema,
        source_format=checkpoint.source_format,
        start=start,
    )


def export_model_config(
    model: NanoDetPlus,
    cfg: ModelConfig,
    out: Path,
    options: ExportOptions,
    *,
    source_sha256: str,
    used_ema: bool | None,
    source_format: str,
    start: float,
) -> ExportReport:
    """Export an in-memory :class:`NanoDetPlus` built from ``cfg`` (options already checked)."""
    dynamic = bool(options.dynamic)
    size = tuple(cfg.input_size)
    check_input_size(size, cfg)
    deploy = model.deploy().eval()
    aux_dropped = sum(p.numel() for name, p in model.named_parameters() if name.startswith(onnx_export.AUX_PREFIXES))
    metadata = _metadata(cfg, deploy, dynamic=dynamic, source_sha256=source_sha256)
    properties = metadata.to_properties()
    channels = (metadata.num_classes, metadata.num_box_channels)
    graph = onnx_export.trace_to_onnx(
        deploy, size, channels, dynamic=dynamic, opset=options.opset, simplify=options.simplify
    )
    num_params = onnx_export.check_deploy_parameters(graph, deploy)
    onnx_export.check_output_layout(graph, size, metadata.strides, channels)
    onnx_export.embed_metadata(graph, properties)
    written = write_checked(
        graph,
        properties,
        out,
        options,
        reference=parity.torch_runner(deploy),
        samples=parity.inputs(size, dynamic=dynamic),
        verify=lambda found: check_round_trip(metadata, found),
    )
    return ExportReport(
        paths=written.paths,
        format=options.fmt,
        metadata=metadata,
        input_shape=["batch", 3, "height", "width"] if dynamic else [1, 3, size[1], size[0]],
        output_shapes=onnx_export.output_shapes(graph),
        max_abs_diff=written.max_abs_diff,
        parity_cases=written.cases,
        tolerance=written.tolerance,
        tolerance_rule=written.tolerance_rule,
        num_params=num_params,
        aux_params_dropped=aux_dropped,
        used_ema=used_ema,
        source_format=source_format,
        file_size=written.file_size,
        seconds=time.perf_counter() - start,
        family=NAME,
    )


def _metadata(cfg: ModelConfig, deploy: nn.Module, *, dynamic: bool, source_sha256: str) -> ModelMetadata:
    """The runtime's facts about the exported model (schema: ``nanodet_infer.metadata``)."""
    return ModelMetadata(
        num_classes=cfg.num_classes,
        class_names=tuple(cfg.class_names),
        reg_max=cfg.reg_max,
        strides=tuple(cfg.strides),
        input_size=tuple(cfg.input_size),
        dynamic_batch=dynamic,
        dynamic_hw=dynamic,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        channel_order="BGR",
        keep_ratio=cfg.keep_ratio,
        prior_offset=0.0,
        input_name=onnx_export.INPUT_NAME,
        scores_output=onnx_export.SCORES_NAME,
        boxes_output=onnx_export.BOXES_NAME,
        scores_activation="sigmoid",
        box_side_order="ltrb",
        producer=PRODUCER,
        source_sha256=source_sha256,
        architecture=architecture_summary(cfg, deploy),
    )


ADAPTER = FamilyAdapter(
    name=NAME,
    description="NanoDet-Plus (RangiLyu/nanodet): Lightning .ckpt or model_best .pth state dicts",
    recognise=recognise,
    export_checkpoint=export_checkpoint,
    options=frozenset({"config", "preset", "trust_checkpoint", "activation"}),
)
