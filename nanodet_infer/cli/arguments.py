"""Command-line arguments of ``nanodet-infer``, and the two value formats both command lines share.

``W,H`` sizes (:func:`parse_size`) and class-names files (:func:`read_class_names_file`) are parsed
here once; ``nanodet-export`` imports them, so ``--input-size 320,192`` and a names file mean the same
to both tools.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..arguments import check_positive_int
from ..errors import InvalidArgumentError
from ..families import family_names, foreign_fact_options
from ..images import MAX_IMAGE_PIXELS

PROG = "nanodet-infer"


# ---------------------------------------------------------------------------------------------- shared formats
def parse_size(text: str, option: str = "--input-size") -> tuple[int, int]:
    """``"320,192"`` (or ``"320x192"``) -> ``(320, 192)``: width, height, both positive integers.

    Raises :class:`InvalidArgumentError` naming ``option`` and an example otherwise.
    """
    parts = text.replace(" ", "").lower().replace("x", ",").split(",")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        width = height = 0
    if width < 1 or height < 1:
        raise InvalidArgumentError(
            f"{option} {text!r} is not W,H; give width and height in pixels, e.g. {option} 320,192"
        )
    return width, height


def read_class_names_file(path: str | Path, option: str = "--class-names") -> tuple[str, ...]:
    """Class names from a UTF-8 text file: a JSON list of strings, or one name per line (blank lines and
    surrounding whitespace ignored). Raises :class:`InvalidArgumentError` naming the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError(
            f"{option} file {str(path)!r} is not UTF-8 text; give a UTF-8 text file with one name per line"
        ) from None
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot read {option} file {str(path)!r} ({exc.strerror}); give a readable text file, one name per line"
        ) from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"{option} file {str(path)!r} is not a valid JSON list: {exc}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidArgumentError(f"{option} file {str(path)!r} must be a JSON list of strings")
        names = [name.strip() for name in names]
    else:
        names = [line.strip() for line in text.splitlines()]
    names = [name for name in names if name]
    if not names:
        raise InvalidArgumentError(f"{option} file {str(path)!r} names no class; give one name per line")
    return tuple(names)


def class_names_option(text: str | None) -> tuple[str, ...] | None:
    """``--class-names``: a class-names file (:func:`read_class_names_file`), or comma-separated names."""
    if text is None:
        return None
    if Path(text).is_file():
        return read_class_names_file(text)
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise InvalidArgumentError(f"--class-names {text!r} names no class; give a,b,c or a file, one name per line")
    return names


def _argparse_type(parse: Any) -> Any:
    """``parse`` as an argparse ``type=``: its :class:`InvalidArgumentError` becomes a usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except InvalidArgumentError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise InvalidArgumentError(f"expected comma-separated integers such as 8,16,32,64, got {text!r}") from None


def _number_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise InvalidArgumentError(f"expected comma-separated numbers such as 0.5,1,2, got {text!r}") from None


def _levels(text: str) -> tuple[tuple[float, ...], ...]:
    return tuple(_number_list(level) for level in text.split(";") if level.strip())


#: How each :data:`~nanodet_infer.families.facts.FactKind` is read from the command line (``names`` stays text:
#: a names file is read when the detector is built; ``flag`` facts are settings on the command line).
_FACT_PARSERS: dict[str, tuple[Any, str]] = {
    "int": (int, "N"), "ints": (_argparse_type(_int_list), "N,N,..."),
    "numbers": (_argparse_type(_number_list), "X,X,..."), "levels": (_argparse_type(_levels), "X,X,...;X,X,..."),
    "size": (_argparse_type(parse_size), "W,H"), "names": (None, "NAMES"),
}


def add_foreign_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model-family`` and one option per foreign-model fact any family declares
    (:func:`~nanodet_infer.families.foreign_fact_options`: ``reg_max`` → ``--reg-max``), each help naming
    the families that take it."""
    foreign = parser.add_argument_group("foreign models (no nanodet metadata, e.g. upstream's export_onnx.py output)")
    foreign.add_argument("--model-family", default=None, choices=family_names(),
                         help="the family of a model without metadata (default: nanodet-plus)")
    for name, declared in foreign_fact_options().items():
        kind = declared[0][1].kind
        if kind == "flag":
            continue
        helps = {fact.help: [] for _, fact in declared}
        for family, fact in declared:
            helps[fact.help].append(family)
        text = "; ".join(f"{'/'.join(families)}: {help_text}" for help_text, families in helps.items())
        parse, metavar = _FACT_PARSERS[kind]
        foreign.add_argument(f"--{name.replace('_', '-')}", type=parse, default=None, metavar=metavar,
                             help=text.replace("%", "%%"))


def foreign_facts(args: argparse.Namespace) -> dict[str, Any]:
    """The foreign-model facts given on the command line (:func:`add_foreign_model_options`), as
    :class:`~nanodet_infer.Detector` keywords; a names option is read here (a names file)."""
    facts: dict[str, Any] = {}
    for name, declared in foreign_fact_options().items():
        value = getattr(args, name, None)
        if value is not None:
            facts[name] = class_names_option(value) if declared[0][1].kind == "names" else value
    return facts


def _max_image_pixels(text: str) -> int:
    try:
        return check_positive_int("--max-image-pixels", int(text.replace("_", "")))
    except ValueError:
        raise InvalidArgumentError(f"--max-image-pixels must be an integer >= 1, got {text!r}") from None


def _workers(text: str) -> int:
    try:
        return check_positive_int("--workers", int(text))
    except ValueError:
        raise InvalidArgumentError(f"--workers must be an integer >= 1, got {text!r}") from None


# ---------------------------------------------------------------------------------------------- parser
SETTING_OPTIONS = ("score_threshold", "iou_threshold", "max_detections", "multi_label")
"""The detection settings the commands take; an option left out (None) is the model family's default."""


def _add_model_options(parser: argparse.ArgumentParser, *, defaults: str) -> None:
    """The model and settings options; ``defaults`` says whose defaults apply (for the help text)."""
    default = f"default: the model family's {defaults}; see docs/guide.md, Families"
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", required=True, help="exported model (.onnx or OpenVINO .xml)")
    group.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "openvino"))
    group.add_argument("--score-threshold", type=float, default=None,
                       help=f"keep (box, class) pairs scoring above this, in [0, 1] ({default})")
    group.add_argument("--iou-threshold", type=float, default=None,
                       help=f"NMS suppresses boxes overlapping a kept box of their class more than this ({default})")
    group.add_argument("--max-detections", type=int, default=None, help=f"at most this many per image ({default})")
    group.add_argument("--threads", type=int, default=None,
                       help="engine threads of each inference (default 1: the --workers share the cores)")
    group.add_argument("--workers", type=_argparse_type(_workers), default=None,
                       help="images in flight at once, each on a worker thread (Detector.stream; default: the CPU "
                       "count); not with --ray")
    group.add_argument("--precision", default="f32", choices=("f32", "bf16", "f16"))
    ratio = group.add_mutually_exclusive_group()
    ratio.add_argument("--keep-ratio", dest="keep_ratio", action="store_true", default=None,
                       help="letterbox (keep aspect ratio); default: what the model was trained with")
    ratio.add_argument("--stretch", dest="keep_ratio", action="store_false", help="stretch to the input size")
    labels = group.add_mutually_exclusive_group()
    labels.add_argument("--multi-label", dest="multi_label", action="store_true", default=None,
                        help=f"every class above the threshold per box ({default})")
    labels.add_argument("--single-label", dest="multi_label", action="store_false",
                        help="one class per box (the best one)")
    group.add_argument("--max-image-pixels", type=_argparse_type(_max_image_pixels), default=MAX_IMAGE_PIXELS,
                       help="largest width x height an image file may declare in its header; a larger one is "
                       f"skipped with a warning before it is decoded (default {MAX_IMAGE_PIXELS:_})")
    group.add_argument("--allow-control-flow", action="store_true",
                       help="accept a model with Loop/Scan/TensorIterator (refused by default: can hang the engine)")
    add_foreign_model_options(parser)


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that already exist (an input is never overwritten)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nanodet-infer`` (exposed for docs and tests)."""
    from .live import add_live_options

    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--verbose", "-v", action="store_true", help="show tracebacks on errors")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Detect with, benchmark and COCO-evaluate an exported detector (NanoDet-Plus, YOLOv7, "
        "SSD / SSDLite, RetinaNet) on ONNX Runtime or OpenVINO.",
        parents=[common],
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{detect,eval,bench,serve}")

    detect = sub.add_parser(
        "detect",
        parents=[common],
        allow_abbrev=False,
        help="detect objects in images, folders, videos, cameras and streams",
        description="Detect objects in images, folders of images, videos, cameras, network streams and image "
        "sequences.",
        epilog="An input that cannot be read (not a decodable image, a video OpenCV cannot open) prints a "
        "one-line warning on stderr and is skipped; the other inputs are still processed and the exit status is "
        "then 2. Any other error stops the run with exit status 2 (--json still holds the rows found so far); "
        "so do Ctrl-C (status 130) and SIGTERM (status 143). Every output path is checked before the model "
        "is loaded: an input is never overwritten, an existing file only with --overwrite.",
    )
    detect.add_argument("paths", nargs="+", metavar="PATH",
                        help="image file, folder of images, video file; or one camera index (0), device (/dev/video0), "
                        "stream URL (rtsp://, http(s):// MJPEG or HLS, udp://, tcp://) or image pattern (f_%%04d.png, "
                        "'frames/*.jpg')")
    _add_model_options(detect, defaults="detection default")
    out = detect.add_argument_group("output")
    out.add_argument("--save-dir", type=Path, default=None,
                     help="write annotated images here under their own names (a name with no suffix, or one "
                     "OpenCV cannot write, gets .jpg appended: photo -> photo.jpg) and videos as NAME.mp4; inputs "
                     "from several folders keep their folders below the inputs' common folder; not an input folder")
    out.add_argument("--json", type=Path, default=None,
                     help="write COCO result rows here (atomically, or streamed into a pipe; also when the run "
                     "stops on an error)")
    _add_output_options(out)
    add_live_options(detect)
    scale = detect.add_argument_group("Ray Data (pip install nanodet-infer[ray]; docs/scale-out.md)")
    scale.add_argument("--ray", action="store_true",
                       help="run on Ray Data: one Detector per actor, images read in the workers (images only)")
    scale.add_argument("--ray-address", default=None,
                       help="join this Ray cluster ('auto', 'ray://HOST:10001'); default: a local Ray for this run")
    scale.add_argument("--ray-timeout", type=float, default=10.0,
                       help="seconds --ray-address may take to answer before the run stops (default 10)")
    scale.add_argument("--actors", type=int, default=1, help="Ray actors, each with --threads engine threads")
    scale.add_argument("--batch-size", type=int, default=16, help="image paths per actor call")

    evaluate = sub.add_parser("eval", parents=[common], allow_abbrev=False,
                              help="COCO box mAP on an annotated image folder")
    _add_model_options(evaluate, defaults="evaluation default")
    evaluate.add_argument("--ann", type=Path, required=True, help="COCO instances JSON")
    evaluate.add_argument("--images", type=Path, required=True, help="folder the annotation file names refer to")
    evaluate.add_argument("--json", type=Path, default=None,
                          help="also write the stats (and result rows) here (atomically, or streamed into a pipe)")
    _add_output_options(evaluate)

    sub.add_parser(
        "bench",
        parents=[common],
        add_help=False,
        allow_abbrev=False,
        help="per-stage latency of a model file on this machine; `bench --help` for its options",
    )
    sub.add_parser(
        "serve",
        parents=[common],
        add_help=False,
        help="HTTP detection service (/v1 detect, KServe v2, /metrics, a web page); `serve --help` for its options",
    )
    return parser


OUTPUT_SYNONYMS = {"--out": "--json / --save-dir", "--output": "--json / --save-dir", "-o": "--json / --save-dir"}
"""Output options users of other tools type, and what ``nanodet-infer`` calls them."""


def unknown_options_message(extra: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """The usage error for ``extra`` (arguments no option took): each unknown option with a did-you-mean
    (an output synonym such as ``--out``, the options it abbreviates, or the closest options of ``parser``)."""
    import difflib

    known = [o for action in parser._actions for o in action.option_strings]  # noqa: SLF001 (argparse has no API)
    hints = []
    for word in extra:
        option = word.split("=", 1)[0]
        if not option.startswith("-"):
            continue
        if option in OUTPUT_SYNONYMS:
            hints.append(f"{option}: did you mean {OUTPUT_SYNONYMS[option]}?")
        elif close := ([o for o in known if o.startswith(option)]
                       or difflib.get_close_matches(option, known, n=2, cutoff=0.6)):
            hints.append(f"{option}: did you mean {' or '.join(close)}?")
    message = f"unrecognized arguments: {' '.join(extra)}"
    return f"{message} ({'; '.join(hints)})" if hints else message


def subcommand_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the subcommand ``name`` of :func:`build_parser`'s parser."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return commands.choices[name]


# ---------------------------------------------------------------------------------------------- detector
def detector_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~nanodet_infer.Detector` keyword arguments (model file aside) that the options give; a
    setting not given is None (the model family's default); ``num_threads`` defaults to 1, since the commands
    run several images at once (``--workers``) rather than one image on every core."""
    return {
        "backend": args.backend,
        "num_threads": 1 if args.threads is None else args.threads,
        "precision": args.precision,
        "keep_ratio": args.keep_ratio,
        "model_family": args.model_family,
        "allow_control_flow": args.allow_control_flow,
        "max_image_pixels": args.max_image_pixels,
        **{name: getattr(args, name) for name in SETTING_OPTIONS},
        **foreign_facts(args),
    }


def make_detector(args: argparse.Namespace, *, evaluation: bool = False) -> Any:
    """Build a :class:`~nanodet_infer.Detector` from parsed command-line options; settings not given are the
    family's display defaults (``Detector.display_settings``), or with ``evaluation`` its evaluation defaults
    (``Detector.evaluation_settings``)."""
    from ..detector import Detector

    detector = Detector(args.model, **detector_options(args))
    defaults = detector.evaluation_settings if evaluation else detector.display_settings
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(detector, name, value)
    return detector
