"""INT8 post-training quantization of an exported model, and the checks that replace f32 parity.

Flow (driven by :func:`nanodet_export.api.export_checkpoint` with ``int8=``):

1. :func:`find_calibration_images` — before any other work: the calibration folder must hold at least
   the requested number of decodable images (sorted by name; the first ``count`` are used).
2. :func:`calibration_inputs` — each image goes through the runtime's own preprocessing of the model's
   family (:meth:`nanodet_infer.Detector.network_input` on the checked f32 file), giving ``float32
   [1, 3, H, W]`` network inputs. The quantizer knows no family.
3. :func:`quantize_onnx` (ONNX Runtime static quantization) or :func:`quantize_openvino` (NNCF).
   Settings chosen by measurement on the trained ``shapes-m-256`` fixture (docs/export.md): ONNX: QDQ,
   uint8 activations with int8 per-channel weights (ONNX Runtime's fast x86 path; int8 activations ran
   slower than f32 here), MinMax; OpenVINO: NNCF ``PERFORMANCE`` preset (symmetric activations), fast bias
   correction. The nodes kept in float are the family's :class:`~.adapter.Int8Rule` (default: the first conv and
   the head tail).
4. :func:`agreement` — detections of the INT8 model against the f32 model on the calibration images, at
   the family's default score threshold, judged on the f32 detections that survive a one-grey-level change
   of the images (:func:`perturb_image`; near-ties flip under any change).
5. A collapse with stable detections, not forced: :func:`restore_accuracy` quantizes again with NNCF's accuracy
   control, restoring the most sensitive operations to float until :data:`RESTORE_TARGET` of the stable
   detections are matched (the metric is this agreement, :class:`AgreementJudge`), and the check runs again.
   What still collapses fails the export unless forced (:func:`check_agreement`). The optional mAP comparison
   runs at the family's evaluation settings.

The head tail is every node between the outputs and the last convolutions (the class/box convs
themselves, the reshapes, the concat and the sigmoid): outputs that share one activation scale (scores in
[0, 1] next to box logits or pixels) lose their scores to one coarse scale.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from nanodet_infer.backends.base import engine_message
from nanodet_infer.detector import Inference
from nanodet_infer.errors import ExportError, ImageReadError, InvalidArgumentError, NanoDetError
from nanodet_infer.images import load_image
from nanodet_infer.metadata import ModelMetadata
from nanodet_infer.paths import IMAGE_SUFFIXES
from nanodet_infer.results import Detections

from . import openvino_export
from .adapter import Int8Rule
from .onnx_export import embed_metadata

#: Calibration images used when no count is given (NNCF's default subset size).
DEFAULT_CALIB_COUNT = 300
#: Detections compared by the agreement check: the family's default operating threshold (NanoDet-Plus's
#: 0.35 when none is given).
AGREEMENT_SCORE = 0.35
#: An f32 detection is matched by an INT8 detection of the same class with at least this IoU and a score
#: above ``MATCH_FACTOR`` x the agreement threshold (so a score that merely crosses the threshold by
#: quantization noise still counts as found).
MATCH_IOU = 0.5
MATCH_FACTOR = 0.5
#: Below this fraction of matched stable f32 detections the INT8 model counts as collapsed.
MIN_MATCHED_FRACTION = 0.5

#: NanoDet-Plus upstream's evaluation settings (the benchmarks'; the mAP comparison uses each family's own).
EVAL_SETTINGS = {"score_threshold": 0.05, "iou_threshold": 0.6, "max_detections": 100}

ONNX_METHOD = "onnxruntime quantize_static QDQ, activations uint8 MinMax, weights int8 per-channel reduce_range"
OPENVINO_METHOD = "nncf.quantize preset PERFORMANCE, fast bias correction"

#: When the INT8 model fails the agreement check, NNCF's accuracy control restores its most sensitive layers to
#: float, ranked and checked by the agreement itself, until this fraction of the stable f32 detections is matched.
RESTORE_TARGET = 0.7
#: Accuracy control is refused when it would take longer than this (seconds, estimated, :func:`check_restore_cost`).
RESTORE_BUDGET_S = 900.0
RESTORE_METHOD = {
    # asymmetric uint8 activations: ONNX Runtime's fast U8S8 path (int8 activations ran at half f32's speed)
    "onnx": "nncf.quantize_with_accuracy_control (ONNX) preset MIXED, fast bias correction",
    "openvino": "nncf.quantize_with_accuracy_control preset PERFORMANCE, fast bias correction",
}


@dataclass(frozen=True)
class Int8Request:
    """What the user asked for: ``nanodet-export --int8 --calib-images DIR [--calib-count N] ...``."""

    calib_images: Path
    calib_count: int | None = None
    """Use the first ``calib_count`` images (sorted by name); ``None``: all, at most :data:`DEFAULT_CALIB_COUNT`."""
    force: bool = False
    """Write the model even when the agreement check reports a collapse."""
    eval_ann: Path | None = None
    """COCO annotations: print f32 vs INT8 mAP on ``eval_images`` (both or neither)."""
    eval_images: Path | None = None


@dataclass(frozen=True)
class Calibration:
    """The checked calibration set: image paths in use order and the SHA-256 of their bytes in that order."""

    paths: tuple[Path, ...]
    sha256: str


@dataclass(frozen=True)
class Agreement:
    """INT8 vs f32 detections (score > :data:`AGREEMENT_SCORE`) on the calibration images.

    ``stable``: the f32 detections the f32 model itself keeps when each image changes by one grey level
    (:func:`perturb_image`; all of them on a trained model, about half on a seeded one whose scores are
    near-ties); only those are judged. ``matched``: stable f32 detections with an INT8 detection (score >
    :attr:`match_score`) of the same class at IoU >= :data:`MATCH_IOU` (greedy, best f32 score first);
    ``int8_detections`` counts INT8 detections above the threshold; ``mean_iou`` / ``mean_score_delta`` /
    ``max_score_delta`` over those pairs (``|INT8 score - f32 score|``); ``nan`` when nothing matched.
    """

    images: int
    f32_detections: int
    stable: int
    int8_detections: int
    matched: int
    mean_iou: float
    mean_score_delta: float
    max_score_delta: float
    score_threshold: float = AGREEMENT_SCORE
    """The f32 detections compared score above this (the family's default threshold)."""

    @property
    def match_score(self) -> float:
        """An INT8 detection counts when it scores above this."""
        return self.score_threshold * MATCH_FACTOR

    @property
    def matched_fraction(self) -> float:
        """``matched / stable`` (0 when no f32 detection is stable)."""
        return self.matched / self.stable if self.stable else 0.0

    @property
    def collapsed(self) -> bool:
        """True when no f32 detection is stable or fewer than :data:`MIN_MATCHED_FRACTION` of them were matched."""
        return self.stable == 0 or self.matched_fraction < MIN_MATCHED_FRACTION


@dataclass(frozen=True)
class Int8Report:
    """What the INT8 step did: the calibration, the agreement check and (optionally) mAP side by side."""

    calibration: Calibration
    agreement: Agreement
    forced: bool
    """The agreement check reported a collapse and ``force`` wrote the model anyway."""
    mean_ap: dict[str, dict[str, float]]
    """``{"f32": stats, "int8": stats}`` (+ ``"bf16"`` for OpenVINO) from ``nanodet_infer.evaluate``; empty
    without ``eval_ann``."""
    eval_settings: dict[str, Any] | None = None
    """The family's evaluation settings the mAP was computed at (None without ``eval_ann``)."""
    plain: Agreement | None = None
    """The agreement of the plain INT8 model when it collapsed and layers were restored (``agreement`` is then the
    restored model's); None when the plain model passed or was forced."""
    restored: tuple[str, ...] = ()
    """Operations restored to float by accuracy control, besides the family's rule (:func:`restore_accuracy`)."""


def check_request(request: Int8Request, *, fp16: bool) -> Calibration:
    """Check an INT8 request before any work: options, the eval files, the calibration images (returned)."""
    if fp16:
        raise InvalidArgumentError("--int8 and --fp16 exclude each other; choose one")
    if (request.eval_ann is None) != (request.eval_images is None):
        raise InvalidArgumentError("--eval-ann and --eval-images go together; give both or neither")
    if request.eval_ann is not None:
        from nanodet_infer.evaluate import load_ground_truth

        load_ground_truth(request.eval_ann)
        if not Path(request.eval_images).is_dir():
            raise InvalidArgumentError(f"--eval-images {str(request.eval_images)!r} is not a folder")
    return find_calibration_images(request.calib_images, request.calib_count)


def find_calibration_images(folder: str | Path, count: int | None) -> Calibration:
    """The first ``count`` images of ``folder`` (sorted by name), each checked to decode.

    Raises :class:`InvalidArgumentError` for a bad count, :class:`ImageReadError` when the folder is
    missing, empty, holds fewer images than asked, or one of them cannot be decoded.
    """
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise InvalidArgumentError(f"--calib-count must be a positive integer, got {count!r}")
    root = Path(folder)
    if not root.is_dir():
        raise ImageReadError(f"calibration folder {str(root)!r} does not exist; pass a folder of images")
    try:
        found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise ImageReadError(f"cannot list calibration folder {str(root)!r}: {exc.strerror}") from None
    wanted = DEFAULT_CALIB_COUNT if count is None else count
    if not found:
        raise ImageReadError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in calibration folder {str(root)!r}; "
            "give a folder of representative images"
        )
    if count is not None and len(found) < count:
        raise ImageReadError(
            f"calibration folder {str(root)!r} holds {len(found)} images, fewer than --calib-count {count}; "
            "add images or lower --calib-count"
        )
    paths = tuple(found[:wanted])
    digest = hashlib.sha256()
    for path in paths:
        load_image(path)  # raises ImageReadError naming an undecodable file
        digest.update(path.read_bytes())
    return Calibration(paths, digest.hexdigest())


def calibration_inputs(calibration: Calibration, detector: Any) -> Iterator[np.ndarray]:
    """Network inputs ``float32 [1, 3, H, W]``, one per image, made by ``detector`` (a runtime
    :class:`~nanodet_infer.Detector` of the f32 model: its family's resize and normalisation)."""
    for path in calibration.paths:
        yield detector.network_input(load_image(path))[None]


def calibration_facts(calibration: Calibration, method: str, float_layers: Sequence[str]) -> dict[str, Any]:
    """The metadata's ``calibration`` entry."""
    return {
        "count": len(calibration.paths),
        "sha256": calibration.sha256,
        "method": method,
        "float_layers": list(float_layers),
    }


def quantize_export(
    staged: Sequence[Path],
    fmt: str,
    metadata: ModelMetadata,
    calibration: Calibration,
    request: Int8Request,
    rule: Int8Rule | None = None,
) -> tuple[ModelMetadata, Int8Report]:
    """Replace the checked f32 model files ``staged`` (``.onnx``, or ``.xml`` + ``.bin``) by their INT8 version.

    ``rule``: the family's nodes kept in float (default :class:`~.adapter.Int8Rule`). Returns the INT8
    metadata written into the file and the report. Raises :class:`ExportError` when the
    agreement check reports a collapse (unless ``request.force``); ``staged`` then still holds f32.
    """
    backend = "onnxruntime" if fmt == "onnx" else "openvino"
    method = ONNX_METHOD if fmt == "onnx" else OPENVINO_METHOD
    with tempfile.TemporaryDirectory(prefix="nanodet-int8-") as work:
        f32 = [Path(work) / f"f32{path.suffix}" for path in staged]
        int8 = [Path(work) / f"int8{path.suffix}" for path in staged]
        for path, copy in zip(staged, f32, strict=True):
            shutil.copyfile(path, copy)

        rule = rule or Int8Rule()
        reference = load_detector(f32[0], backend)

        def inputs() -> Iterator[np.ndarray]:
            return calibration_inputs(calibration, reference)

        if fmt == "onnx":
            float_convs = quantize_onnx(f32[0], int8[0], inputs, metadata.input_name, rule)
        else:
            ov_model, float_convs = quantize_openvino(f32[0], inputs, rule)
        quantized = metadata.replace(precision="int8", calibration=calibration_facts(calibration, method, float_convs))
        save_quantized(onnx.load(str(int8[0])) if fmt == "onnx" else ov_model, int8[0], quantized)
        score = reference.score_threshold
        low = load_detector(f32[0], backend, score_threshold=score * MATCH_FACTOR)
        judge = AgreementJudge(reference, low, calibration.paths)
        result = judge.check_file(int8[0], backend)
        plain, restored = None, ()
        if result.collapsed and result.stable and not request.force:  # restore the most sensitive layers to float
            plain = result
            try:
                model, names = restore_accuracy(f32[0], fmt, inputs, judge, metadata.input_name, rule, plain=result)
            except NanoDetError:
                raise
            except Exception as exc:  # NNCF's own errors: a one-line refusal, not a traceback
                raise ExportError(
                    f"INT8 agreement check failed ({result.matched_fraction:.0%} of the stable f32 detections survive "
                    f"quantization) and accuracy control could not run: {engine_message(exc)}"
                    "; nothing was written (pass --force-int8 to write the plain INT8 model anyway)"
                ) from exc
            restored = tuple(names)
            quantized = metadata.replace(
                precision="int8",
                calibration=calibration_facts(
                    calibration, RESTORE_METHOD[fmt] + f", {len(restored)} operations restored to float",
                    [*float_convs, *restored],
                ),
            )
            save_quantized(model, int8[0], quantized)
            result = judge.check_file(int8[0], backend)
        forced = check_agreement(result, force=request.force, restored=len(restored) if plain else None)
        mean_ap, settings = {}, None
        if request.eval_ann is not None and request.eval_images is not None:
            settings = reference.evaluation_settings
            mean_ap = compare_map(f32[0], int8[0], backend, request.eval_ann, request.eval_images, settings)
        for path, target in zip(int8, staged, strict=True):
            shutil.move(path, target)
    return quantized, Int8Report(calibration, result, forced, mean_ap, settings, plain, restored)


def quantize_file(source: str | Path, out: str | Path, request: Int8Request) -> Int8Report:
    """Quantize an exported f32 model file (``.onnx``, or ``.xml`` + ``.bin``) into ``out`` (same suffix).

    The same steps and checks as ``nanodet-export --int8`` without re-exporting (the benchmark uses it);
    ``out`` appears only when they pass.
    """
    from .staging import StagedOutput, output_files

    source = Path(source)
    fmt = "onnx" if source.suffix.lower() == ".onnx" else "openvino"
    suffixes = (".onnx",) if fmt == "onnx" else (".xml", ".bin")
    if Path(out).suffix.lower() != suffixes[0]:
        raise InvalidArgumentError(f"{str(out)!r} must end in {suffixes[0]} like {source.name!r}")
    calibration = find_calibration_images(request.calib_images, request.calib_count)
    if fmt == "onnx":
        properties = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    else:
        properties = openvino_export.read_properties(source)
    metadata = ModelMetadata.from_properties(properties)
    with StagedOutput(output_files(out, suffixes)) as staged:
        for path, temp in zip((source, *(source.with_suffix(s) for s in suffixes[1:])), staged.temps, strict=True):
            shutil.copyfile(path, temp)
        report = quantize_export(staged.temps, fmt, metadata, calibration, request)[1]
        staged.commit()
    return report


def compare_map(
    f32: Path, int8: Path, backend: str, ann: Path, images: Path, settings: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """COCO stats of the f32 and INT8 models (and f32 run in bf16 on OpenVINO) at ``settings`` (the family's
    evaluation settings, :attr:`nanodet_infer.Detector.evaluation_settings`)."""
    from nanodet_infer import Detector
    from nanodet_infer.evaluate import STAT_NAMES, evaluate_coco

    runs = {"f32": (f32, "f32"), "int8": (int8, "f32")}
    if backend == "openvino":
        runs["bf16"] = (f32, "bf16")
    out = {}
    for name, (path, precision) in runs.items():
        detector = Detector(path, backend=backend, num_threads=1, precision=precision, **settings)
        stats = evaluate_coco(detector, ann, images)
        out[name] = {key: stats[key] for key in STAT_NAMES}
    return out


# ---------------------------------------------------------------------------------------------- ONNX
def onnx_float_nodes(model: onnx.ModelProto, rule: Int8Rule | None = None) -> tuple[list[str], list[str]]:
    """``(all, convs)``: nodes kept in float in an ONNX graph, and the convolutions among them.

    By ``rule`` (default :class:`~.adapter.Int8Rule`): the head tail (every node from the outputs back to and
    including the first ``Conv`` reached) and the convolutions that read the graph input.
    """
    rule = rule or Int8Rule()
    producer = {output: node for node in model.graph.node for output in node.output}
    kept: dict[str, str] = {}
    stack = [output.name for output in model.graph.output] if rule.head_tail else []
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in kept:
            continue
        kept[node.name] = node.op_type
        if node.op_type not in rule.tail_stops:
            stack.extend(node.input)
    inputs = {value.name for value in model.graph.input} if rule.first_conv else set()
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[0] in inputs:
            kept[node.name] = node.op_type
    return list(kept), [name for name, op in kept.items() if op in (*rule.tail_stops, "Conv")]


def quantize_onnx(
    source: Path,
    target: Path,
    inputs: Callable[[], Iterator[np.ndarray]],
    input_name: str,
    rule: Int8Rule | None = None,
) -> list[str]:
    """Quantize the f32 ONNX file ``source`` into ``target`` (QDQ, see the module docstring).

    ``inputs`` returns a fresh iterator of calibration inputs. Returns the float-kept convolutions.
    ``target``'s metadata is ``source``'s; the caller re-embeds the INT8 metadata.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = ({input_name: x} for x in inputs())

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="nanodet-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        # symbolic shape inference cannot handle symbolic H/W; plain ONNX shape inference suffices
        with _quiet():
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        float_nodes, float_convs = onnx_float_nodes(onnx.load(str(prepared)), rule)
        with _quiet():
            quantize_static(
                str(prepared),
                str(target),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,  # 7-bit weights: U8S8 without VNNI saturates its 16-bit pair sums
                nodes_to_exclude=float_nodes,
            )
    return float_convs


def save_quantized(model: Any, path: Path, metadata: ModelMetadata) -> None:
    """Write a quantized ``model`` (``onnx.ModelProto`` or ``openvino.Model``) to ``path`` with ``metadata`` as its
    only embedded properties (an IR's weights uncompressed: they are int8 already)."""
    properties = metadata.to_properties()
    if isinstance(model, onnx.ModelProto):
        del model.metadata_props[:]
        embed_metadata(model, properties)
        onnx.save(model, str(path))
    else:
        openvino_export.set_properties(model, properties)
        openvino_export.save(model, path, fp16=False)


# ---------------------------------------------------------------------------------------------- OpenVINO
#: ONNX op type → the OpenVINO operation it becomes (for :attr:`Int8Rule.tail_stops`).
_OPENVINO_TYPES = {"Conv": "Convolution", "Gemm": "MatMul", "ConvTranspose": "ConvolutionBackpropData"}

def openvino_float_nodes(model: Any, rule: Int8Rule | None = None) -> tuple[list[str], list[str]]:
    """``(all, convs)`` as :func:`onnx_float_nodes`, by friendly name, in an OpenVINO model (the head tail
    when ``rule.head_tail``; NNCF handles the first layer itself)."""
    rule = rule or Int8Rule()
    stops = {_OPENVINO_TYPES.get(op, op) for op in rule.tail_stops}
    kept: dict[str, str] = {}
    stack = [result.input_value(0).get_node() for result in model.get_results()] if rule.head_tail else []
    while stack:
        node = stack.pop()
        kind = node.get_type_name()
        if kind in ("Constant", "Parameter") or node.get_friendly_name() in kept:
            continue
        kept[node.get_friendly_name()] = kind
        if kind not in stops:
            stack.extend(value.get_node() for value in node.input_values())
    return list(kept), [name for name, kind in kept.items() if kind in stops]


def quantize_openvino(
    source: Path, inputs: Callable[[], Iterator[np.ndarray]], rule: Int8Rule | None = None
) -> tuple[Any, list[str]]:
    """Quantize the f32 IR ``source`` with NNCF; returns the ``openvino.Model`` and the float-kept convolutions."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(source))
    float_nodes, float_convs = openvino_float_nodes(model, rule)
    samples = list(inputs())
    with _quiet():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            # symmetric activations: the CPU plugin's int8 depthwise and 1x1 kernels without zero-point
            # compensation, ~15 % faster than MIXED on the fixture at the same mAP (docs/benchmark.md)
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(samples),
            fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=float_nodes),
        )
    return quantized, float_convs


# ---------------------------------------------------------------------------------------------- accuracy control
def restore_accuracy(
    source: Path,
    fmt: str,
    inputs: Callable[[], Iterator[np.ndarray]],
    judge: AgreementJudge,
    input_name: str,
    rule: Int8Rule | None = None,
    *,
    plain: Agreement,
) -> tuple[Any, list[str]]:
    """Quantize the f32 file ``source`` again with NNCF's accuracy control: operations are restored to float, the
    most sensitive first (ranked by ``judge``'s agreement on each calibration image), until the agreement reaches
    :data:`RESTORE_TARGET`. Returns the model (``onnx.ModelProto`` or ``openvino.Model``) and the names of the
    operations restored; it may still fall short (NNCF stops when nothing is left to restore), which the caller's
    check then reports. ``plain``: the collapsed agreement of the plain INT8 model (for the refusal's message).

    Cost: one run of the calibration images per quantized layer group to rank them, plus one per restoring step;
    refused before it starts when the estimate is over budget (:func:`check_restore_cost`).
    """
    import nncf

    if fmt == "onnx":
        model = onnx.load(str(source))
        float_nodes = onnx_float_nodes(model, rule)[0]
    else:
        import openvino as ov

        model = ov.Core().read_model(str(source))
        float_nodes = openvino_float_nodes(model, rule)[0]
    check_restore_cost(plain, judge.pass_seconds, len(float_weight_layers(model)))
    samples = list(inputs())
    if fmt == "onnx":
        data, preset = [{input_name: x} for x in samples], nncf.QuantizationPreset.MIXED
    else:
        data, preset = samples, nncf.QuantizationPreset.PERFORMANCE

    def validate(candidate: Any, indices: Iterator[int]) -> tuple[float, list[float]]:
        return judge.metric(_inference(candidate, input_name), list(indices))

    with _quiet(), _reverted_operations() as reverted:
        restored = nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(data),
            nncf.Dataset(list(range(len(samples)))),
            validate,
            max_drop=1.0 - RESTORE_TARGET,  # the f32 model agrees with itself: metric 1
            preset=preset,
            subset_size=len(samples),
            fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=float_nodes),
        )
    return restored, reverted


def float_weight_layers(model: Any) -> list[str]:
    """The layers with weights (convolutions, matrix products) of an f32 ``onnx.ModelProto`` or ``openvino.Model``:
    what accuracy control ranks, one quantizer group each at most."""
    if isinstance(model, onnx.ModelProto):
        return [node.name for node in model.graph.node if node.op_type in _WEIGHTED_ONNX]
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in _WEIGHTED_OPENVINO]


_WEIGHTED_ONNX = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_WEIGHTED_OPENVINO = {*(_OPENVINO_TYPES.get(op, op) for op in _WEIGHTED_ONNX), "GroupConvolution"}


def check_restore_cost(result: Agreement, pass_seconds: float, layers: int) -> None:
    """Refuse accuracy control when its estimated time, about 1.25 passes over the calibration images per layer
    (ranking each quantizer group, then the restoring steps), exceeds :data:`RESTORE_BUDGET_S`."""
    estimate = 1.25 * layers * pass_seconds
    if estimate > RESTORE_BUDGET_S:
        raise ExportError(
            f"INT8 agreement check failed: only {result.matched_fraction:.0%} of the stable f32 detections survive "
            f"quantization, and restoring layers to float would take about {estimate / 60:.0f} min ({layers} layers, "
            f"{pass_seconds:.1f} s per pass over the calibration images); nothing was written (use fewer calibration "
            "images with --calib-count, or pass --force-int8 to write the plain INT8 model)"
        )


def _inference(model: Any, input_name: str) -> Inference:
    """The inference of a model NNCF hands to its validation function: an ``onnx.ModelProto`` (run on ONNX Runtime,
    1 thread) or an ``openvino.CompiledModel``."""
    if isinstance(model, onnx.ModelProto):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {input_name: x})
    return lambda x: list(model(x).values())


@contextlib.contextmanager
def _reverted_operations() -> Iterator[list[str]]:
    """Collect the names of the operations NNCF's accuracy restorer reverts to float (from the report it prints
    at the end; nncf is pinned, and the tests of the restoring path would notice a change)."""
    from nncf.quantization.algorithms.accuracy_control.algorithm import QuantizationAccuracyRestorer

    names: list[str] = []
    original = QuantizationAccuracyRestorer._print_report

    def record(report: Any, max_num_iterations: int) -> None:
        names.extend(node.node_name for node in report.reverted_operations)
        original(report, max_num_iterations)

    QuantizationAccuracyRestorer._print_report = staticmethod(record)
    try:
        yield names
    finally:
        QuantizationAccuracyRestorer._print_report = staticmethod(original)


# ---------------------------------------------------------------------------------------------- checks
def agreement(
    reference: list[Detections],
    candidate: list[Detections],
    *,
    score_threshold: float = AGREEMENT_SCORE,
    perturbed: list[Detections] | None = None,
) -> Agreement:
    """Compare per-image detections of the f32 (``reference``, scores above ``score_threshold``) and INT8
    (``candidate``) models.

    ``perturbed``: the f32 model's detections on the same images changed by one grey level
    (:func:`perturb_image`); only the f32 detections it keeps (matched as INT8 ones are) are judged — the
    others are near-ties that flip under any perturbation. None: every f32 detection is judged.
    """
    ious: list[float] = []
    deltas: list[float] = []
    stable = 0
    for index, (want, got) in enumerate(zip(reference, candidate, strict=True)):
        judged = np.ones(len(want), dtype=bool)
        if perturbed is not None:
            judged[:] = False
            for i, _, _ in _matches(want, perturbed[index]):
                judged[i] = True
        stable += int(judged.sum())
        for i, j, overlap in _matches(want, got):
            if judged[i]:
                ious.append(overlap)
                deltas.append(abs(float(got.scores[j]) - float(want.scores[i])))
    nan = float("nan")
    return Agreement(
        images=len(reference),
        f32_detections=sum(len(d) for d in reference),
        stable=stable,
        int8_detections=sum(int((d.scores > score_threshold).sum()) for d in candidate),
        matched=len(ious),
        mean_iou=float(np.mean(ious)) if ious else nan,
        mean_score_delta=float(np.mean(deltas)) if deltas else nan,
        max_score_delta=float(np.max(deltas)) if deltas else nan,
        score_threshold=score_threshold,
    )


class AgreementJudge:
    """:func:`agreement` of candidate INT8 models against one f32 model on the calibration images.

    ``reference``: the f32 runtime detector at the family's threshold; ``low``: the same model at
    :data:`MATCH_FACTOR` x that threshold (candidates are detected with this one's settings). The f32 detections
    and their one-grey-level perturbation (:func:`perturb_image`) are computed once.
    """

    def __init__(self, reference: Any, low: Any, images: Sequence[Path]) -> None:
        self._low = low
        self._images = tuple(images)
        self._score = reference.score_threshold
        start = time.perf_counter()
        self._want = [reference(image) for image in self._images]
        self.pass_seconds = time.perf_counter() - start
        """How long one pass of the f32 model over the images took (what each accuracy-control step costs)."""
        self._perturbed = [low(perturb_image(load_image(path), seed)) for seed, path in enumerate(self._images)]

    def check_file(self, path: Path, backend: str) -> Agreement:
        """The agreement of the model file ``path`` (run by the runtime on ``backend``) on every image."""
        got = run_detector(path, backend, self._images, score_threshold=self._low.score_threshold)
        return self._judge(range(len(self._images)), got)

    def metric(self, run: Inference, indices: list[int]) -> tuple[float, list[float]]:
        """NNCF's validation metric of a candidate given by its inference ``run``: the matched fraction on the
        images ``indices``, and per image."""
        got = [self._low.detect_with(run, self._images[i]) for i in indices]
        per_image = [self._judge([i], [g]).matched_fraction for i, g in zip(indices, got, strict=True)]
        return self._judge(indices, got).matched_fraction, per_image

    def _judge(self, indices: Sequence[int], got: list[Detections]) -> Agreement:
        want, perturbed = [self._want[i] for i in indices], [self._perturbed[i] for i in indices]
        return agreement(want, got, score_threshold=self._score, perturbed=perturbed)


def _matches(want: Detections, got: Detections) -> list[tuple[int, int, float]]:
    """``(i, j, IoU)``: f32 detection ``want[i]`` matched by ``got[j]`` (same class, IoU >= :data:`MATCH_IOU`;
    greedy, best ``want`` score first, each ``got`` used once)."""
    pairs = []
    taken = np.zeros(len(got), dtype=bool)
    for i in np.argsort(-want.scores, kind="stable"):
        same = (got.class_ids == want.class_ids[i]) & ~taken
        if not same.any():
            continue
        overlap = np.where(same, _iou(want.xyxy[i], got.xyxy), -1.0)
        j = int(np.argmax(overlap))
        if overlap[j] >= MATCH_IOU:
            taken[j] = True
            pairs.append((int(i), j, float(overlap[j])))
    return pairs


def perturb_image(image: np.ndarray, seed: int) -> np.ndarray:
    """``image`` (uint8, any layout) with a seeded change of -1, 0 or +1 grey level per value (clipped to
    [0, 255]): the smallest change an 8-bit image can take, for :func:`agreement`'s ``perturbed``."""
    noise = np.random.default_rng(seed).integers(-1, 2, image.shape, dtype=np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy ``box`` with each of ``boxes [K, 4]`` (float64; 0 for empty unions)."""
    box, boxes = box.astype(np.float64), boxes.astype(np.float64)
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def agreement_line(result: Agreement) -> str:
    """One line for the export summary."""
    return (
        f"INT8 vs f32 on {result.images} calibration images (score > {result.score_threshold:g}): "
        f"{result.matched}/{result.stable} stable f32 detections matched ({result.matched_fraction:.1%}, "
        f"IoU >= {MATCH_IOU}, same class, INT8 score > {result.match_score:g}; stable: kept by f32 under ±1 "
        f"grey level, {result.stable} of {result.f32_detections}), {result.int8_detections} INT8 detections, "
        f"mean IoU {result.mean_iou:.3f}, "
        f"score |Δ| mean {result.mean_score_delta:.3f} max {result.max_score_delta:.3f}"
    )


def check_agreement(result: Agreement, *, force: bool, restored: int | None = None) -> bool:
    """Raise :class:`ExportError` on a collapse unless ``force``; returns whether a collapse was forced.

    ``restored``: how many layers accuracy control restored to float before this check (None: it did not run)."""
    if not result.collapsed:
        return False
    if result.f32_detections == 0:
        why = "the f32 model detects nothing on the calibration images, so they cannot calibrate or check it"
    elif result.stable == 0:
        why = (
            "none of the f32 detections survives a one-grey-level change of the calibration images (near-ties), "
            "so they cannot check it"
        )
    else:
        why = f"only {result.matched_fraction:.0%} of the stable f32 detections survive quantization"
        if restored is not None:
            why += f", even with {restored} operations restored to float by accuracy control"
    if force:
        return True
    raise ExportError(
        f"INT8 agreement check failed: {why}; nothing was written (calibrate on representative images with "
        "objects, or pass --force-int8 to write it anyway)"
    )


def load_detector(path: Path, backend: str, **settings: Any) -> Any:
    """The runtime :class:`~nanodet_infer.Detector` of an exported file (1 thread); its family's defaults
    for every setting not given."""
    from nanodet_infer import Detector

    try:
        return Detector(path, backend=backend, num_threads=1, **settings)
    except NanoDetError as exc:
        raise ExportError(f"the runtime cannot load the exported model: {exc}") from exc


def run_detector(path: Path, backend: str, images: Sequence[Path], **settings: Any) -> list[Detections]:
    """Detections of the runtime :class:`~nanodet_infer.Detector` on ``images`` (1 thread)."""
    detector = load_detector(path, backend, **settings)
    return [detector(image) for image in images]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the quantizers' progress bars and advice on stdout/stderr and the root logger."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    nncf_logger = logging.getLogger("nncf")
    nncf_level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
        nncf_logger.setLevel(nncf_level)
