"""What every family's export shares: options, the report, and writing a checked model file.

:func:`write_checked` saves an in-memory ONNX graph (or its OpenVINO IR conversion) under a temporary
name, reads the metadata back, runs the built-in parity check of the file against PyTorch, and only
then moves it into place (:class:`~.staging.StagedOutput`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from nanodet_infer import __version__
from nanodet_infer.errors import ExportError, InvalidArgumentError, MetadataError
from nanodet_infer.metadata import ModelMetadata

from . import onnx_export, openvino_export, parity
from .quantize import Calibration, Int8Report, Int8Request
from .staging import StagedOutput, output_files

PRODUCER = f"nanodet-export {__version__}"

FORMATS = {"onnx": (".onnx",), "openvino": (".xml", ".bin")}
MIN_OPSET, MAX_OPSET = 11, 20


@dataclass(frozen=True)
class ExportOptions:
    """Options every family takes. ``dynamic`` None: the family's default (NanoDet-Plus static,
    YOLOv7 dynamic batch and H/W)."""

    dynamic: bool | None = None
    opset: int = 17
    simplify: bool = True
    fmt: str = "onnx"
    fp16: bool = False
    check: bool = True
    int8: Int8Request | None = None
    """INT8 post-training quantization of the checked model (:mod:`.quantize`; NanoDet-Plus)."""
    calibration: Calibration | None = None
    """``int8``'s calibration images, checked before any work (:func:`.quantize.check_request`)."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how well it matched PyTorch."""

    paths: tuple[Path, ...]
    """Files written: ``(model.onnx,)`` or ``(model.xml, model.bin)``."""
    format: str
    metadata: ModelMetadata
    """The embedded facts (``to_properties()`` gives the string map in the file)."""
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
    """Parameters of training-only parts that were left out (NanoDet-Plus ``aux_fpn``/``aux_head``,
    YOLOv7's auxiliary head)."""
    used_ema: bool | None
    """Whether the checkpoint's EMA weights were used (None for an in-memory model)."""
    source_format: str
    file_size: int
    seconds: float
    family: str
    """The export adapter's name (:data:`~.families.EXPORT_ADAPTERS`)."""
    int8: Int8Report | None = None
    """The INT8 step's calibration, agreement check and mAP comparison (None for a float export); the
    parity fields then describe the f32 model it was quantized from."""

    @property
    def path(self) -> Path:
        """The main output file (``.onnx`` or ``.xml``)."""
        return self.paths[0]


def check_options(out: str | Path, options: ExportOptions) -> None:
    """Raise :class:`InvalidArgumentError` for a bad format/suffix, ``fp16`` without OpenVINO or opset."""
    if options.fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown format {options.fmt!r}; use one of {', '.join(FORMATS)}")
    suffix = FORMATS[options.fmt][0]
    if Path(out).suffix.lower() != suffix:
        raise InvalidArgumentError(
            f"output {str(out)!r} does not end in {suffix} as --format {options.fmt} writes; "
            "rename it or change --format"
        )
    if options.fp16 and options.fmt != "openvino":
        raise InvalidArgumentError("--fp16 applies to --format openvino only; ONNX exports keep FP32 weights")
    if not MIN_OPSET <= options.opset <= MAX_OPSET:
        raise InvalidArgumentError(
            f"--opset {options.opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} (default 17)"
        )


def check_input_multiple(size_wh: tuple[int, ...], multiple: int, reason: str) -> None:
    """Raise :class:`InvalidArgumentError` unless ``size_wh`` is two positive multiples of ``multiple``
    (``reason`` says why, e.g. ``"the largest backbone stride"``), suggesting the nearest valid size."""
    if len(size_wh) != 2 or any(v < multiple or v % multiple for v in size_wh):
        fixed = ",".join(str(max(multiple, round(v / multiple) * multiple)) for v in (size_wh[0], size_wh[-1]))
        raise InvalidArgumentError(
            f"input size W,H = {','.join(map(str, size_wh))} is not a multiple of {multiple} ({reason}); "
            f"use e.g. --input-size {fixed}"
        )


def read_properties(path: Path, fmt: str) -> dict[str, str]:
    """The metadata string map of a written ``fmt`` model file."""
    if fmt == "onnx":
        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return openvino_export.read_properties(path)


def check_round_trip(metadata: ModelMetadata, written: Mapping[str, str]) -> None:
    """Raise :class:`ExportError` unless ``written`` (the map read back from the file) parses to ``metadata``."""
    try:
        again = ModelMetadata.from_properties(written)
    except MetadataError as exc:
        raise ExportError(f"metadata did not survive writing the model file: {exc}") from exc
    if again != metadata:
        raise ExportError("metadata read back from the model file differs from what was written")


@dataclass(frozen=True)
class Written:
    """Result of :func:`write_checked`."""

    paths: tuple[Path, ...]
    cases: tuple[parity.ParityCase, ...]
    max_abs_diff: dict[str, float]
    tolerance: dict[str, float]
    tolerance_rule: str
    file_size: int


def write_checked(
    graph: onnx.ModelProto,
    properties: Mapping[str, str],
    out: Path,
    options: ExportOptions,
    *,
    reference: parity.Runner,
    samples: list[Any],
    verify: Callable[[dict[str, str]], None],
    view: Callable[[parity.Runner], parity.Runner] = lambda run: run,
    tolerances: Callable[..., dict[str, float]] = parity.tolerances,
    tolerance_rule: Callable[..., str] = parity.tolerance_rule,
    finish: Callable[[tuple[Path, ...]], None] | None = None,
) -> Written:
    """Write ``graph`` (metadata already embedded) as ``options.fmt`` at ``out``, checked.

    ``verify`` receives the metadata string map read back from the written file and raises
    :class:`ExportError` if it differs; ``reference`` (PyTorch) and ``view(file runner)`` are run on
    ``samples`` and must agree within ``tolerances(cases, fp16=...)`` (default
    :func:`parity.tolerances`), else :class:`ExportError` and nothing is written. ``view`` lets a
    family compare parts of an output separately (YOLOv7: boxes and probabilities). ``finish``, when
    given, receives the checked files' temporary paths before they move into place and may replace them
    (INT8 quantization); an exception there leaves nothing written.
    """
    names = tuple(onnx_export.output_shapes(graph))
    finals = output_files(out, FORMATS[options.fmt])
    with StagedOutput(finals) as staged:
        if options.fmt == "onnx":
            onnx.save(graph, str(staged.temp))
            verify(read_properties(staged.temp, options.fmt))
            candidate = view(parity.onnxruntime_runner(staged.temp, names))
        else:
            ov_model = openvino_export.convert(graph, dict(properties))
            openvino_export.save(ov_model, staged.temp, fp16=options.fp16)
            verify(read_properties(staged.temp, options.fmt))
            candidate = view(parity.openvino_runner(staged.temp, names))
        cases = parity.compare(reference, candidate, samples) if options.check else []
        worst = (
            {name: max(case.max_abs_diff[name] for case in cases) for name in cases[0].max_abs_diff} if cases else {}
        )
        tolerance = tolerances(cases, fp16=options.fp16)
        failed = [name for name, value in worst.items() if not value <= tolerance[name]]
        if failed:
            detail = ", ".join(f"{name} {worst[name]:.3g} > {tolerance[name]:.3g}" for name in failed)
            raise ExportError(
                f"parity check failed, max |Δ| against PyTorch: {detail}; nothing was written "
                "(re-run with --verbose and report the model)"
            )
        if finish is not None:
            finish(staged.temps)
        staged.commit()
    return Written(
        paths=finals,
        cases=tuple(cases),
        max_abs_diff=worst,
        tolerance=tolerance,
        tolerance_rule=tolerance_rule(fp16=options.fp16),
        file_size=sum(path.stat().st_size for path in finals),
    )
