"""Python API: :func:`export_checkpoint` (file → model file) and :func:`export_model` (in-memory)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import onnx
from nanodet_models import ModelConfig, NanoDetPlus, build_model, load_weights, read_checkpoint
from torch import nn

from nanodet_infer import __version__
from nanodet_infer.errors import ExportError, InvalidArgumentError, MetadataError
from nanodet_infer.metadata import ModelMetadata

from . import onnx_export, openvino_export, parity
from .resolve import architecture_summary, check_input_size, resolve_config, with_overrides
from .staging import StagedOutput, output_files

PRODUCER = f"nanodet-export {__version__}"

FORMATS = {"onnx": (".onnx",), "openvino": (".xml", ".bin")}
MIN_OPSET, MAX_OPSET = 11, 20


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how well it matched PyTorch."""

    paths: tuple[Path, ...]
    """Files written: ``(model.onnx,)`` or ``(model.xml, model.bin)``."""
    format: str
    metadata: ModelMetadata
    input_shape: list[int | str]
    output_shapes: dict[str, list[int | str]]
    max_abs_diff: dict[str, float]
    """Max |Δ| per output over every parity case (empty when the check was skipped)."""
    parity_cases: tuple[parity.ParityCase, ...]
    tolerance: dict[str, float]
    """Max |Δ| allowed per output: ``max(1e-4, 1e-5 x max |PyTorch output|)``; for FP16 weights
    ``5e-2 x max(1, max |PyTorch output|)`` (see ``tolerance_rule``)."""
    tolerance_rule: str
    """:attr:`tolerance`'s rule in words."""
    num_params: int
    """Weight values in the exported graph (the deploy model's, BatchNorm folded into convs)."""
    aux_params_dropped: int
    """Parameters of the training-only ``aux_fpn``/``aux_head`` that were left out."""
    used_ema: bool | None
    """Whether the checkpoint's EMA weights were used (None for an in-memory model)."""
    source_format: str
    file_size: int
    seconds: float

    @property
    def path(self) -> Path:
        """The main output file (``.onnx`` or ``.xml``)."""
        return self.paths[0]


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    *,
    config: str | Path | None = None,
    preset: str | None = None,
    input_size: tuple[int, int] | None = None,
    dynamic: bool = False,
    opset: int = 17,
    simplify: bool = True,
    fmt: str = "onnx",
    fp16: bool = False,
    class_names: list[str] | tuple[str, ...] | None = None,
    trust_checkpoint: bool = False,
    check: bool = True,
    activation: str | None = None,
) -> ExportReport:
    """Export an upstream NanoDet-Plus training checkpoint (``.pth``/``.ckpt``) to ONNX or OpenVINO IR.

    The architecture comes from ``config`` (an upstream YAML), a ``preset`` name, or, with neither,
    from the checkpoint's tensors; then what a checkpoint does not store is assumed (listed in the
    metadata's ``architecture.assumed``), and ``activation`` states the activation instead of
    assuming LeakyReLU. ``input_size`` is ``(W, H)`` and defaults to the config's.
    Raises a :class:`~nanodet_infer.errors.NanoDetError` subclass for bad input and
    :class:`~nanodet_infer.errors.ExportError` when the export or its parity check fails; nothing
    is written under ``out`` unless the export succeeded.
    """
    start = time.perf_counter()
    _check_options(out, fmt=fmt, fp16=fp16, opset=opset)
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
    return _export(
        model,
        cfg,
        Path(out),
        source_sha256=checkpoint.sha256,
        used_ema=checkpoint.used_ema,
        source_format=checkpoint.source_format,
        options=_Options(dynamic, opset, simplify, fmt, fp16, check),
        start=start,
    )


def export_model(
    model: NanoDetPlus,
    cfg: ModelConfig,
    out: str | Path,
    *,
    source_sha256: str = "",
    input_size: tuple[int, int] | None = None,
    dynamic: bool = False,
    opset: int = 17,
    simplify: bool = True,
    fmt: str = "onnx",
    fp16: bool = False,
    check: bool = True,
) -> ExportReport:
    """Export an in-memory :class:`NanoDetPlus` built from ``cfg`` (e.g. freshly seeded weights).

    Same output, metadata and checks as :func:`export_checkpoint`; ``source_sha256`` is recorded
    as the metadata's source checksum.
    """
    start = time.perf_counter()
    _check_options(out, fmt=fmt, fp16=fp16, opset=opset)
    if input_size is not None:
        cfg = with_overrides(cfg, input_size=input_size)
    return _export(
        model,
        cfg,
        Path(out),
        source_sha256=source_sha256,
        used_ema=None,
        source_format="in-memory",
        options=_Options(dynamic, opset, simplify, fmt, fp16, check),
        start=start,
    )


@dataclass(frozen=True)
class _Options:
    dynamic: bool
    opset: int
    simplify: bool
    fmt: str
    fp16: bool
    check: bool


def _check_options(out: str | Path, *, fmt: str, fp16: bool, opset: int) -> None:
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    suffix = FORMATS[fmt][0]
    if Path(out).suffix.lower() != suffix:
        raise InvalidArgumentError(
            f"output {str(out)!r} does not end in {suffix} as --format {fmt} writes; rename it or change --format"
        )
    if fp16 and fmt != "openvino":
        raise InvalidArgumentError("--fp16 applies to --format openvino only; ONNX exports keep FP32 weights")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InvalidArgumentError(f"--opset {opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} (default 17)")


def _export(
    model: NanoDetPlus,
    cfg: ModelConfig,
    out: Path,
    *,
    source_sha256: str,
    used_ema: bool | None,
    source_format: str,
    options: _Options,
    start: float,
) -> ExportReport:
    size = tuple(cfg.input_size)
    check_input_size(size, cfg)
    deploy = model.deploy().eval()
    aux_dropped = sum(p.numel() for name, p in model.named_parameters() if name.startswith(onnx_export.AUX_PREFIXES))
    metadata = _metadata(cfg, deploy, dynamic=options.dynamic, source_sha256=source_sha256)
    properties = metadata.to_properties()
    channels = (metadata.num_classes, metadata.num_box_channels)
    graph = onnx_export.trace_to_onnx(
        deploy, size, channels, dynamic=options.dynamic, opset=options.opset, simplify=options.simplify
    )
    num_params = onnx_export.check_deploy_parameters(graph, deploy)
    onnx_export.check_output_layout(graph, size, metadata.strides, channels)
    onnx_export.embed_metadata(graph, properties)
    shapes = onnx_export.output_shapes(graph)
    input_shape = ["batch", 3, "height", "width"] if options.dynamic else [1, 3, size[1], size[0]]

    finals = output_files(out, FORMATS[options.fmt])
    with StagedOutput(finals) as staged:
        if options.fmt == "onnx":
            onnx.save(graph, str(staged.temp))
            written = onnx.load(str(staged.temp), load_external_data=False).metadata_props
            _check_round_trip(metadata, {p.key: p.value for p in written})
            candidate = parity.onnxruntime_runner(staged.temp)
        else:
            ov_model = openvino_export.convert(graph, properties)
            openvino_export.save(ov_model, staged.temp, fp16=options.fp16)
            _check_round_trip(metadata, openvino_export.read_properties(staged.temp))
            candidate = parity.openvino_runner(staged.temp)
        cases: list[parity.ParityCase] = []
        if options.check:
            cases = parity.compare(parity.torch_runner(deploy), candidate, parity.inputs(size, dynamic=options.dynamic))
        worst = {name: max(case.max_abs_diff[name] for case in cases) for name in shapes} if cases else {}
        tolerance = parity.tolerances(cases, fp16=options.fp16)
        failed = [name for name, value in worst.items() if not value <= tolerance[name]]
        if failed:
            detail = ", ".join(f"{name} {worst[name]:.3g} > {tolerance[name]:.3g}" for name in failed)
            raise ExportError(
                f"parity check failed, max |Δ| against PyTorch: {detail}; nothing was written "
                "(re-run with --verbose and report the model)"
            )
        staged.commit()
    return ExportReport(
        paths=finals,
        format=options.fmt,
        metadata=metadata,
        input_shape=input_shape,
        output_shapes=shapes,
        max_abs_diff=worst,
        parity_cases=tuple(cases),
        tolerance=tolerance,
        tolerance_rule=parity.tolerance_rule(fp16=options.fp16),
        num_params=num_params,
        aux_params_dropped=aux_dropped,
        used_ema=used_ema,
        source_format=source_format,
        file_size=sum(path.stat().st_size for path in finals),
        seconds=time.perf_counter() - start,
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


def _check_round_trip(metadata: ModelMetadata, written: dict[str, str]) -> None:
    try:
        again = ModelMetadata.from_properties(written)
    except MetadataError as exc:
        raise ExportError(f"metadata did not survive writing the model file: {exc}") from exc
    if again != metadata:
        raise ExportError("metadata read back from the model file differs from what was written")
