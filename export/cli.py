"""``nanodet-export``: upstream training checkpoint (any family of :mod:`.families`) → ONNX / OpenVINO IR,
parity-checked. The family options come from the adapters' declarations (:class:`~.adapter.Option`).

Exit codes: 0 success; 2 bad input (missing/corrupt/unsafe checkpoint, wrong architecture or config,
bad option, an output path that cannot or must not be written); 1 export or parity check failed (or an
unexpected error); 130 / 143 stopped by Ctrl-C / SIGTERM (no partial file is left). Errors are one line
on stderr; ``--verbose`` adds the traceback.

Every output file (``--out`` and, for OpenVINO, its ``.bin``) is checked before the checkpoint is read:
never one of the inputs (``--ckpt``, ``--class-names``, a family's file option such as ``--config``), an
existing file only with ``--overwrite``, its folder writable (:mod:`nanodet_infer.paths`).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from nanodet_infer.cli.arguments import parse_size, read_class_names_file
from nanodet_infer.cli.signals import exit_status, terminate_like_interrupt
from nanodet_infer.errors import ExportError, InvalidArgumentError, NanoDetError
from nanodet_infer.paths import check_output_file, is_stream
from nanodet_infer.safetext import safe_text

from .api import FORMATS, PRODUCER, ExportReport, export_checkpoint, family_options
from .families import EXPORT_ADAPTERS
from .quantize import DEFAULT_CALIB_COUNT, RESTORE_TARGET, Int8Report, Int8Request, agreement_line
from .staging import output_files

EXIT_OK, EXIT_EXPORT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see --help\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = _Parser(
        prog="nanodet-export",
        allow_abbrev=False,
        description="Export an upstream training checkpoint (NanoDet-Plus .pth/.ckpt, YOLOv7 .pt) to ONNX or "
        "OpenVINO IR with embedded metadata, after checking it against PyTorch.",
    )
    parser.add_argument(
        "--ckpt",
        required=True,
        help="upstream checkpoint: model_best.pth, *.ckpt (Lightning), YOLOv7 train.py *.pt, torchvision "
        "SSD/SSDLite/RetinaNet state_dict or references/detection/train.py checkpoint",
    )
    parser.add_argument(
        "--family",
        choices=tuple(EXPORT_ADAPTERS),
        help="detector family (default: recognised from the checkpoint's content)",
    )
    parser.add_argument("--out", required=True, help="output file: .onnx, or .xml for --format openvino")
    parser.add_argument("--input-size", metavar="W,H", help="network input width,height (multiples of 32)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument(
        "--dynamic",
        action="store_true",
        default=None,
        help="symbolic batch, height and width (default for YOLOv7; NanoDet-Plus default: static)",
    )
    shape.add_argument("--static", dest="dynamic", action="store_false", help="fixed batch 1 at --input-size")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    parser.add_argument("--format", choices=tuple(FORMATS), default="onnx", help="output format (default onnx)")
    parser.add_argument("--fp16", action="store_true", help="OpenVINO IR with FP16 weights (default FP32)")
    int8 = parser.add_argument_group("INT8 post-training quantization")
    int8.add_argument("--int8", action="store_true", help="quantize to INT8 (needs --calib-images)")
    int8.add_argument("--calib-images", metavar="DIR", help="calibration images (representative, with objects)")
    int8.add_argument(
        "--calib-count",
        type=int,
        metavar="N",
        help=f"use the first N images of --calib-images by name (default: all, at most {DEFAULT_CALIB_COUNT})",
    )
    int8.add_argument(
        "--force-int8",
        action="store_true",
        help="write the plain INT8 model even when the agreement check fails (no accuracy control)",
    )
    int8.add_argument("--eval-ann", metavar="ANN.json", help="COCO annotations: print f32 vs INT8 mAP")
    int8.add_argument("--eval-images", metavar="DIR", help="the images --eval-ann refers to")
    parser.add_argument("--class-names", metavar="FILE", help="class names file: one per line, or a JSON list")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (and its .bin); an input is never overwritten")
    _add_family_options(parser)
    parser.add_argument("--verbose", action="store_true", help="more detail; tracebacks on errors")
    parser.add_argument("--version", action="version", version=PRODUCER)
    return parser


def _add_family_options(parser: argparse.ArgumentParser) -> None:
    """One argument per option the families declare (:func:`~.api.family_options`), named after the
    families it applies to; options sharing an ``exclusive`` group are mutually exclusive."""
    group = parser.add_argument_group("family options (each applies to the families named)")
    exclusive: dict[str, Any] = {}
    for option in family_options().values():
        owners = ", ".join(name for name, adapter in EXPORT_ADAPTERS.items() if option.name in adapter.option_names)
        target = group
        if option.exclusive is not None:
            if option.exclusive not in exclusive:
                exclusive[option.exclusive] = group.add_mutually_exclusive_group()
            target = exclusive[option.exclusive]
        text = f"{option.help} [{owners}]"
        if option.kind is bool:
            target.add_argument(option.flag, dest=option.name, action="store_true", help=text)
        else:
            target.add_argument(option.flag, dest=option.name, type=option.kind, metavar=option.metavar, help=text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nanodet-export``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_int8_flags(parser, args)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return int(exc.code or 0)
    try:
        with terminate_like_interrupt():
            check_outputs(args)
            report = export_checkpoint(
                args.ckpt,
                args.out,
                family=args.family,
                input_size=parse_size(args.input_size) if args.input_size else None,
                dynamic=args.dynamic,
                opset=args.opset,
                simplify=not args.no_simplify,
                fmt=args.format,
                fp16=args.fp16,
                class_names=read_class_names_file(args.class_names) if args.class_names else None,
                int8=_int8_request(args) if args.int8 else None,
                **{name: getattr(args, name) for name in family_options()},
            )
    except ExportError as exc:
        return _fail(exc, EXIT_EXPORT_FAILED, args.verbose)
    except NanoDetError as exc:
        return _fail(exc, EXIT_BAD_INPUT, args.verbose)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the staged temporaries are already removed
        status, word = exit_status(exc)
        print(f"nanodet-export: {word}; nothing was written", file=sys.stderr)
        return status
    except Exception as exc:  # a bug, not bad input: say so, keep the traceback behind --verbose
        return _fail(exc, EXIT_EXPORT_FAILED, args.verbose, prefix=f"internal error ({type(exc).__name__}): ")
    print("\n".join(safe_text(line) for line in summary(report, verbose=args.verbose).splitlines()))
    return EXIT_OK


def _check_int8_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The INT8 options need --int8, and --int8 needs calibration images (usage errors)."""
    extras = [args.calib_images, args.calib_count, args.force_int8, args.eval_ann, args.eval_images]
    if not args.int8 and any(value not in (None, False) for value in extras):
        parser.error("--calib-images, --calib-count, --force-int8 and --eval-ann/--eval-images need --int8")
    if args.int8 and not args.calib_images:
        parser.error("--int8 needs --calib-images DIR (representative images with objects)")


def _int8_request(args: argparse.Namespace) -> Int8Request:
    return Int8Request(
        calib_images=Path(args.calib_images),
        calib_count=args.calib_count,
        force=args.force_int8,
        eval_ann=Path(args.eval_ann) if args.eval_ann else None,
        eval_images=Path(args.eval_images) if args.eval_images else None,
    )


def check_outputs(args: argparse.Namespace) -> None:
    """Check every file the export will write, before any work (:mod:`nanodet_infer.paths`)."""
    read = [args.ckpt, args.class_names]
    read += [getattr(args, option.name) for option in family_options().values() if option.kind is Path]
    inputs = [Path(p) for p in read if p]
    for path in output_files(args.out, FORMATS[args.format]):
        if is_stream(path):
            raise InvalidArgumentError(
                f"--out '{safe_text(path)}' is a pipe or device; the exporter writes, checks and renames "
                "regular files: give a file path"
            )
        check_output_file(path, "--out", inputs, overwrite=args.overwrite)


def _fail(exc: BaseException, code: int, verbose: bool, prefix: str = "") -> int:
    if verbose:
        traceback.print_exc()
    message = safe_text(" ".join(str(exc).split()))
    hint = "" if verbose or not prefix else " (re-run with --verbose for the traceback)"
    print(f"nanodet-export: error: {prefix}{message}{hint}", file=sys.stderr)
    return code


def summary(report: ExportReport, *, verbose: bool = False) -> str:
    """A few human-readable lines about an export."""
    meta = report.metadata
    arch = meta.architecture
    if report.used_ema is None:
        weights = "in-memory model"
    else:
        ema = EXPORT_ADAPTERS[report.family].ema_weights
        weights = f"{ema if report.used_ema else 'as stored'}, {report.source_format} checkpoint"
    outputs = ", ".join(f"{name} {_dims(dims)}" for name, dims in report.output_shapes.items())
    if report.max_abs_diff:
        backend = "OpenVINO f32" if report.format == "openvino" else "onnxruntime"
        deltas = ", ".join(
            f"{name} {value:.2e} (<= {report.tolerance[name]:.2g})" for name, value in report.max_abs_diff.items()
        )
        checked = " and ".join(_dims(case.input_shape) for case in report.parity_cases)
        parity = f"max |Δ| {deltas}; {report.tolerance_rule}; {backend} vs PyTorch on {checked}"
    else:
        parity = "not checked"
    lines = [
        f"{PRODUCER}: wrote {', '.join(str(p) for p in report.paths)} ({_size(report.file_size)}, "
        f"{report.seconds:.1f} s)",
        f"  architecture {arch.get('summary', '?')}, {meta.num_classes} classes, "
        + (f"reg_max {meta.reg_max}, " if hasattr(meta, "reg_max") else "")
        + (f"strides {list(meta.strides)}; " if hasattr(meta, "strides") else "")
        + f"{report.num_params / 1e6:.2f} M params exported, "
        f"{report.aux_params_dropped / 1e6:.2f} M aux params dropped",
        f"  weights      {weights}, sha256 {meta.source_sha256[:16] or '-'}",
        f"  input        {meta.input_name} {_dims(report.input_shape)} float32, {meta.channel_order} "
        f"(W,H = {meta.input_size[0]},{meta.input_size[1]})",
        f"  outputs      {outputs}",
        f"  parity       {parity}",
    ]
    if arch.get("inferred") or arch.get("assumed"):
        fix = EXPORT_ADAPTERS[report.family].assumption_fix
        lines.insert(2, f"  warning      {assumptions_line(arch.get('assumed', ()), fix)}")
    if verbose:
        for case in report.parity_cases:
            deltas = ", ".join(f"{name} {value:.3e}" for name, value in case.max_abs_diff.items())
            lines.append(f"    input {_dims(case.input_shape)}: {deltas}")
    if report.int8 is not None:
        lines.extend(_int8_lines(report.int8, meta.calibration))
    return "\n".join(lines)


def _int8_lines(report: Int8Report, facts: Mapping[str, Any]) -> list[str]:
    """The INT8 part of the summary: calibration, agreement, and mAP side by side."""
    kept = ", ".join(facts.get("float_layers", ())) or "-"
    lines = [
        f"  int8         {facts.get('method', '?')}; {facts.get('count', '?')} calibration images "
        f"(sha256 {report.calibration.sha256[:16]}); kept in float: {kept}",
        f"  agreement    {agreement_line(report.agreement)}"
        + ("  [COLLAPSED, written because of --force-int8]" if report.forced else ""),
    ]
    if report.plain is not None:
        what = (
            f"restored {len(report.restored)} operations to float, the most sensitive first (listed under int8)"
            if report.restored
            else "met it without restoring an operation"
        )
        lines.insert(
            1,
            f"  restored     the plain INT8 model matched {report.plain.matched}/{report.plain.stable} stable f32 "
            f"detections ({report.plain.matched_fraction:.0%}); quantized again with accuracy control (target "
            f"{RESTORE_TARGET:.0%}), which {what}",
        )
    if report.mean_ap:
        header = "  mAP          " + "  ".join(f"{name:>6}" for name in report.mean_ap)
        settings = report.eval_settings or {}
        lines.append(
            header + f"   (COCO, score {settings.get('score_threshold')}, IoU {settings.get('iou_threshold')}, "
            f"max {settings.get('max_detections')})"
        )
        for stat in ("mAP", "AP50"):
            values = "  ".join(f"{stats[stat]:6.4f}" for stats in report.mean_ap.values())
            lines.append(f"    {stat:<11}{values}")
        delta = report.mean_ap["int8"]["mAP"] - report.mean_ap["f32"]["mAP"]
        lines.append(f"    ΔmAP (INT8 − f32) {delta * 100:+.2f} points")
    return lines


def assumptions_line(assumed: Sequence[str], fix: str) -> str:
    """The warning for an architecture (partly) inferred from the checkpoint: what was assumed, and the fix."""
    facts = ", ".join(assumed) or "nothing"
    return f"assumed (not stored in the checkpoint): {facts}; {fix}"


def _dims(dims: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e6 else f"{num_bytes / 1e3:.0f} kB"
