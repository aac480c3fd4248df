"""Python API: :func:`export_checkpoint` (file → model file, any family) and :func:`export_model`
(an in-memory NanoDet-Plus model; YOLOv7's is :func:`nanodet_export.yolov7.export_model`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nanodet_models import ModelConfig, NanoDetPlus

from nanodet_infer.errors import InvalidArgumentError
from nanodet_infer.paths import same_file
from nanodet_infer.safetext import safe_text

from . import families
from .adapter import CommonArgs, ExportAdapter, Option
from .nanodet_plus import ADAPTER as NANODET_PLUS
from .nanodet_plus import prepare_model
from .nanodet_plus.resolve import with_overrides
from .pipeline import export_file, export_prepared
from .quantize import Int8Request, check_request
from .staging import output_files
from .writer import FORMATS, PRODUCER, ExportOptions, ExportReport, check_options

__all__ = ["FORMATS", "PRODUCER", "ExportReport", "export_checkpoint", "export_model", "family_options"]


def family_options() -> dict[str, Option]:
    """Every family's declared option by name (first declaration wins; families share e.g. ``trust_checkpoint``)."""
    found: dict[str, Option] = {}
    for adapter in families.EXPORT_ADAPTERS.values():
        for option in adapter.options:
            found.setdefault(option.name, option)
    return found


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    *,
    family: str | None = None,
    input_size: tuple[int, int] | None = None,
    dynamic: bool | None = None,
    opset: int = 17,
    simplify: bool = True,
    fmt: str = "onnx",
    fp16: bool = False,
    class_names: list[str] | tuple[str, ...] | None = None,
    check: bool = True,
    int8: Int8Request | None = None,
    **options: Any,
) -> ExportReport:
    """Export an upstream training checkpoint to ONNX or OpenVINO IR.

    The family (``nanodet-plus``, ``yolov7``, ... see :data:`nanodet_export.families.EXPORT_ADAPTERS`) is
    recognised from the file's content; ``family`` forces it (a checkpoint of another family is then
    refused). ``options`` are the family's own, as its adapter declares them (:func:`family_options`;
    ``nanodet-export --help`` lists them): NanoDet-Plus ``config`` / ``preset`` / ``activation``, torchvision
    ``bn_eps``, ``trust_checkpoint``; one another family declares is refused, one no family declares too.
    ``input_size`` is ``(W, H)`` (default: the family's). ``dynamic`` None is the family's default
    (NanoDet-Plus static, YOLOv7 dynamic batch and H/W). Raises a
    :class:`~nanodet_infer.errors.NanoDetError` subclass for bad input and
    :class:`~nanodet_infer.errors.ExportError` when the export or its parity check fails; nothing is
    written under ``out`` unless the export succeeded. ``int8`` quantizes the checked f32 model
    (:mod:`nanodet_export.quantize`, any family); its calibration images are checked before anything else.
    """
    calibration = check_request(int8, fp16=fp16) if int8 is not None else None
    declared = family_options()
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise InvalidArgumentError(f"unknown export option {unknown[0]!r}; choose from {', '.join(sorted(declared))}")
    given = {name: value for name, value in options.items() if value is not None and value is not False}
    inputs = [ckpt, *(value for name, value in given.items() if declared[name].kind is Path)]
    _refuse_writing_over_inputs(out, fmt, inputs)
    adapter = families.resolve(Path(ckpt), family)
    _refuse_foreign_options(adapter, given)
    export_options = ExportOptions(dynamic, opset, simplify, fmt, fp16, check, int8, calibration)
    common = CommonArgs(input_size, class_names, dynamic, fp16, check)
    return export_file(adapter, ckpt, out, export_options, common, **given)


def _refuse_foreign_options(adapter: ExportAdapter, given: dict[str, Any]) -> None:
    foreign = sorted(set(given) - adapter.option_names)
    if foreign:
        raise InvalidArgumentError(
            f"--{foreign[0].replace('_', '-')} does not apply to {adapter.name} checkpoints; drop it"
        )


def _refuse_writing_over_inputs(out: str | Path, fmt: str, inputs: list[str | Path]) -> None:
    """Refuse, before any work, an ``out`` whose files (the IR's ``.bin`` too) are one of ``inputs``.

    ``nanodet-export`` checks more (``--overwrite``, writable folder) first; this keeps Python callers from
    e.g. ``export_checkpoint("model.bin", "model.xml", fmt="openvino")`` writing the IR over the checkpoint.
    """
    if fmt not in FORMATS:
        return  # check_options names the bad format
    read = [Path(p) for p in inputs]
    for path in output_files(out, FORMATS[fmt]):
        if any(same_file(path, source) for source in read):
            raise InvalidArgumentError(
                f"out {safe_text(path)!r} is one of the export's inputs; choose another output name"
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
    int8: Int8Request | None = None,
) -> ExportReport:
    """Export an in-memory :class:`NanoDetPlus` built from ``cfg`` (e.g. freshly seeded weights).

    Same output, metadata and checks as :func:`export_checkpoint`; ``source_sha256`` is recorded
    as the metadata's source checksum.
    """
    start = time.perf_counter()
    calibration = check_request(int8, fp16=fp16) if int8 is not None else None
    options = ExportOptions(dynamic, opset, simplify, fmt, fp16, check, int8, calibration)
    check_options(out, options)
    if input_size is not None:
        cfg = with_overrides(cfg, input_size=input_size)
    prepared = prepare_model(model, cfg, dynamic=dynamic, source_sha256=source_sha256)
    return export_prepared(NANODET_PLUS, prepared, Path(out), options, start=start)
