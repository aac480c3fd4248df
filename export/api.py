"""Python API: :func:`export_checkpoint` (file → model file, any family) and :func:`export_model`
(an in-memory NanoDet-Plus model; YOLOv7's is :func:`nanodet_export.yolov7.export_model`)."""

from __future__ import annotations

import time
from pathlib import Path

from nanodet_models import ModelConfig, NanoDetPlus

from nanodet_infer.cli.outputs import same_file
from nanodet_infer.errors import InvalidArgumentError
from nanodet_infer.safetext import safe_text

from . import families
from .nanodet_plus import export_model_config
from .resolve import with_overrides
from .staging import output_files
from .writer import FORMATS, PRODUCER, ExportOptions, ExportReport, check_options

__all__ = ["FORMATS", "PRODUCER", "ExportReport", "export_checkpoint", "export_model"]


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    *,
    family: str | None = None,
    config: str | Path | None = None,
    preset: str | None = None,
    input_size: tuple[int, int] | None = None,
    dynamic: bool | None = None,
    opset: int = 17,
    simplify: bool = True,
    fmt: str = "onnx",
    fp16: bool = False,
    class_names: list[str] | tuple[str, ...] | None = None,
    trust_checkpoint: bool = False,
    check: bool = True,
    activation: str | None = None,
    bn_eps: float | None = None,
) -> ExportReport:
    """Export an upstream training checkpoint to ONNX or OpenVINO IR.

    The family (``nanodet-plus``, ``yolov7``, ... see :data:`nanodet_export.families.FAMILIES`) is
    recognised from the file's content; ``family`` forces it (a checkpoint of another family is then
    refused). NanoDet-Plus: the architecture comes from ``config`` (an upstream YAML), a ``preset``
    name, or, with neither, from the checkpoint's tensors (what a checkpoint does not store is then
    assumed and listed in the metadata's ``architecture.assumed``; ``activation`` states it).
    YOLOv7: the architecture is the YAML pickled in the checkpoint. torchvision SSD / SSDLite /
    RetinaNet (families ``ssd``, ``retinanet``): the builder is recognised from the state dict's keys;
    ``bn_eps`` states the backbone norm's eps, which no checkpoint stores. ``input_size`` is ``(W, H)``
    (default: the config's; YOLOv7 640x640). ``dynamic`` None is the family's default (NanoDet-Plus
    static, YOLOv7 dynamic batch and H/W). Raises a :class:`~nanodet_infer.errors.NanoDetError`
    subclass for bad input and :class:`~nanodet_infer.errors.ExportError` when the export or its
    parity check fails; nothing is written under ``out`` unless the export succeeded.
    """
    _refuse_writing_over_inputs(out, fmt, [ckpt, config])
    adapter = families.resolve(Path(ckpt), family)
    specific = {"config": config, "preset": preset, "trust_checkpoint": trust_checkpoint or None}
    specific["activation"] = activation
    specific["bn_eps"] = bn_eps
    given = {name: value for name, value in specific.items() if value is not None}
    foreign = sorted(set(given) - adapter.options)
    if foreign:
        raise InvalidArgumentError(
            f"--{foreign[0].replace('_', '-')} does not apply to {adapter.name} checkpoints; drop it"
        )
    options = ExportOptions(dynamic, opset, simplify, fmt, fp16, check)
    return adapter.export_checkpoint(
        ckpt, out, options=options, input_size=input_size, class_names=class_names, **given
    )


def _refuse_writing_over_inputs(out: str | Path, fmt: str, inputs: list[str | Path | None]) -> None:
    """Refuse, before any work, an ``out`` whose files (the IR's ``.bin`` too) are one of ``inputs``.

    ``nanodet-export`` checks more (``--overwrite``, writable folder) first; this keeps Python callers from
    e.g. ``export_checkpoint("model.bin", "model.xml", fmt="openvino")`` writing the IR over the checkpoint.
    """
    if fmt not in FORMATS:
        return  # check_options names the bad format
    read = [Path(p) for p in inputs if p is not None]
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
) -> ExportReport:
    """Export an in-memory :class:`NanoDetPlus` built from ``cfg`` (e.g. freshly seeded weights).

    Same output, metadata and checks as :func:`export_checkpoint`; ``source_sha256`` is recorded
    as the metadata's source checksum.
    """
    start = time.perf_counter()
    options = ExportOptions(dynamic, opset, simplify, fmt, fp16, check)
    check_options(out, options)
    if input_size is not None:
        cfg = with_overrides(cfg, input_size=input_size)
    return export_model_config(
        model,
        cfg,
        Path(out),
        options,
        source_sha256=source_sha256,
        used_ema=None,
        source_format="in-memory",
        start=start,
    )
