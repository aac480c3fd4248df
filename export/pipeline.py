"""The one export flow every family goes through: checkpoint → checked model file → report.

:func:`export_file`: check the common options, ``adapter.prepare`` (the family's own part: read, build the
deploy module, metadata and parity inputs), then :func:`export_prepared`: trace to ONNX, check the graph's
weights against the deploy module and its outputs against the metadata, embed the metadata, write the
file staged and parity-checked against PyTorch (the family's :class:`~.adapter.ParityRule`), optionally
replace it by its INT8 version (:mod:`.quantize`, the family's :class:`~.adapter.Int8Rule`) before it
moves into place, and report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import onnx_export, parity, quantize
from .adapter import CommonArgs, ExportAdapter, Prepared
from .writer import ExportOptions, ExportReport, check_options, check_round_trip, read_properties, write_checked


def export_file(
    adapter: ExportAdapter,
    ckpt: str | Path,
    out: str | Path,
    options: ExportOptions,
    common: CommonArgs,
    **family_options: Any,
) -> ExportReport:
    """Export the checkpoint ``ckpt`` of ``adapter``'s family to ``out`` (``family_options``: its declared
    options that were given)."""
    start = time.perf_counter()
    check_options(out, options)
    prepared = adapter.prepare(Path(ckpt), common, **family_options)
    return export_prepared(adapter, prepared, Path(out), options, start=start)


def export_prepared(
    adapter: ExportAdapter, prepared: Prepared, out: Path, options: ExportOptions, *, start: float
) -> ExportReport:
    """Trace, check, write and (``options.int8``) quantize a prepared deploy module; options already checked."""
    metadata = prepared.metadata.replace(precision="f16") if options.fp16 else prepared.metadata
    graph = onnx_export.trace_to_onnx(
        prepared.deploy,
        prepared.trace_size,
        prepared.channels,
        dynamic=prepared.dynamic,
        dynamic_hw=prepared.dynamic_hw,
        opset=options.opset,
        simplify=options.simplify,
        output_names=prepared.output_names,
    )
    if prepared.count_weights:
        num_params = onnx_export.check_deploy_parameters(
            graph, prepared.deploy, elementwise=prepared.elementwise, training_only=prepared.training_only
        )
    else:
        num_params = onnx_export.folded_parameter_count(prepared.deploy)
    if prepared.check_graph is not None:
        prepared.check_graph(graph, prepared.trace_size)
    properties = metadata.to_properties()
    onnx_export.embed_metadata(graph, properties)
    rule = adapter.parity
    samples = prepared.samples if options.check else []
    torch_run = parity.remembering(parity.torch_runner(prepared.deploy, prepared.output_names))  # run once per sample
    noise = None
    if rule.measure_noise and samples:
        noise = parity.reference_noise(prepared.deploy, samples, prepared.output_names, fp16=options.fp16,
                                       run=torch_run)
    quantized: dict[str, Any] = {}

    def quantize_files(temps: tuple[Path, ...]) -> None:
        """Replace the checked f32 files by their INT8 version (``options.int8``)."""
        int8_metadata, report = quantize.quantize_export(
            temps, options.fmt, metadata, options.calibration, options.int8, adapter.int8
        )
        check_round_trip(int8_metadata, read_properties(temps[0], options.fmt))
        quantized.update(metadata=int8_metadata, report=report)

    written = write_checked(
        graph,
        properties,
        out,
        options,
        reference=rule.view(torch_run),
        samples=samples,
        verify=lambda found: check_round_trip(metadata, found),
        view=rule.view,
        tolerances=lambda cases, fp16: rule.tolerances(cases, fp16=fp16, noise=noise),
        tolerance_rule=lambda fp16: rule.rule(fp16=fp16, noise=noise is not None),
        finish=quantize_files if options.int8 is not None else None,
    )
    return ExportReport(
        paths=written.paths,
        format=options.fmt,
        metadata=quantized.get("metadata", metadata),
        input_shape=prepared.input_shape,
        output_shapes=onnx_export.output_shapes(graph),
        max_abs_diff=written.max_abs_diff,
        parity_cases=written.cases,
        tolerance=written.tolerance,
        tolerance_rule=written.tolerance_rule,
        num_params=num_params,
        aux_params_dropped=prepared.aux_params_dropped,
        used_ema=prepared.used_ema,
        source_format=prepared.source_format,
        file_size=written.file_size,
        seconds=time.perf_counter() - start,
        family=adapter.name,
        int8=quantized.get("report"),
    )
