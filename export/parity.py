"""Built-in parity check: the exported graph against the PyTorch deploy model on seeded inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nanodet_infer.errors import ExportError

from .onnx_export import INPUT_NAME

#: Floor of the max |Δ| allowed between an FP32 export and PyTorch (onnxruntime / OpenVINO at f32).
FP32_TOLERANCE = 1e-4
#: Above the floor, an FP32 export may differ by this fraction of ``max |PyTorch output|``: float32
#: rounding grows with the magnitude (a model with box logits ~2.5e9 differs by ~1.2e-6 of it).
FP32_RELATIVE_TOLERANCE = 1e-5
#: An FP16-weight OpenVINO IR (run at f32 precision) may differ by this fraction of the output's
#: scale, ``max(1, max |PyTorch output|)``: weight rounding alone reaches a few per cent of it.
FP16_RELATIVE_TOLERANCE = 5e-2
#: A deep network (e.g. torchvision's ResNet/MobileNet detectors) can round off more than the rules above:
#: when PyTorch's own error is measured (:func:`reference_noise`), an export may also differ by this many
#: times it.
NOISE_FACTOR = 4.0

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ParityCase:
    """One checked input shape: per output, the max |Δ| and the max |PyTorch output|."""

    input_shape: tuple[int, ...]
    max_abs_diff: dict[str, float]
    max_abs_reference: dict[str, float]


def input_shapes(size_wh: tuple[int, int], *, dynamic: bool, multiple: int = 32) -> list[tuple[int, int, int, int]]:
    """The checked input shapes: the export size, and for ``dynamic`` also batch 2 at a non-square size
    (both sides still multiples of ``multiple``, the model's largest stride)."""
    width, height = size_wh
    shapes = [(1, 3, height, width)]
    if dynamic:
        other_h = height - multiple if height > 2 * multiple else height + multiple
        other_w = width + 2 * multiple
        if other_w == other_h:
            other_w += multiple
        shapes.append((2, 3, other_h, other_w))
    return shapes


def inputs(size_wh: tuple[int, int], *, dynamic: bool) -> list[np.ndarray]:
    """Seeded N(0, 1) inputs at :func:`input_shapes` (stride multiple 32)."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape, dtype=np.float32) for shape in input_shapes(size_wh, dynamic=dynamic)]


def torch_runner(deploy: nn.Module, names: tuple[str, ...]) -> Runner:
    """Run the PyTorch deploy module (``x -> outputs``, one tensor or a tuple, named ``names``)."""

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outputs = deploy(torch.from_numpy(x))
        outputs = (outputs,) if isinstance(outputs, torch.Tensor) else outputs
        return {name: out.numpy() for name, out in zip(names, outputs, strict=True)}

    return run


def remembering(run: Runner) -> Runner:
    """``run`` that computes each input array once: the outputs are kept per array object (the noise measure and
    the parity check run PyTorch on the same samples)."""
    memo: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}

    def call(x: np.ndarray) -> dict[str, np.ndarray]:
        hit = memo.get(id(x))
        if hit is None or hit[0] is not x:  # the array is kept in the memo, so its id is not reused
            hit = memo[id(x)] = (x, run(x))
        return hit[1]

    return call


def onnxruntime_runner(path: Path, names: tuple[str, ...]) -> Runner:
    """Run an ONNX file on onnxruntime's CPU provider with every graph optimisation on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(list(names), {INPUT_NAME: x}), strict=True))

    return run


def openvino_runner(xml_path: Path, names: tuple[str, ...]) -> Runner:
    """Run an OpenVINO IR on the CPU plugin at f32 inference precision (its default here is bf16)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(xml_path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"}
    )

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        result = compiled({INPUT_NAME: x})
        return {name: result[compiled.output(name)] for name in names}

    return run


def reference_noise(
    deploy: nn.Module, samples: list[np.ndarray], names: tuple[str, ...], *, fp16: bool, run: Runner | None = None
) -> dict[str, float]:
    """How far PyTorch itself moves when computed differently: max |Δ| per output over ``samples``
    between ``deploy`` and a copy of it in float64 (``fp16`` False: PyTorch's own float32 rounding) or
    with every floating weight rounded to float16 (``fp16`` True: what FP16 weights alone cost). ``run``: the
    runner of ``deploy`` itself when the caller has one (:func:`remembering`, to reuse its outputs)."""
    import copy

    other = copy.deepcopy(deploy)
    if fp16:
        with torch.no_grad():
            for tensor in (*other.parameters(), *other.buffers()):
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
    else:
        other = other.double()
    run, run_other = run or torch_runner(deploy, names), torch_runner(other, names)
    noise = dict.fromkeys(names, 0.0)
    for x in samples:
        want, got = run_other(x if fp16 else x.astype(np.float64)), run(x)
        for name in names:
            noise[name] = max(noise[name], float(np.max(np.abs(got[name] - want[name]))))
    return noise


def compare(reference: Runner, candidate: Runner, samples: list[np.ndarray]) -> list[ParityCase]:
    """Max |Δ| per output of ``candidate`` against ``reference`` on each sample (shapes must agree)."""
    cases = []
    for x in samples:
        want, got = reference(x), candidate(x)
        diffs, scales = {}, {}
        for name, expected in want.items():
            if got[name].shape != expected.shape:
                raise ExportError(
                    f"output {name!r} has shape {list(got[name].shape)} for input {list(x.shape)}, "
                    f"PyTorch gives {list(expected.shape)}"
                )
            diffs[name] = float(np.max(np.abs(got[name].astype(np.float64) - expected)))
            scales[name] = float(np.max(np.abs(expected)))
        cases.append(ParityCase(tuple(x.shape), diffs, scales))
    return cases


def tolerances(cases: list[ParityCase], *, fp16: bool, noise: dict[str, float] | None = None) -> dict[str, float]:
    """The max |Δ| allowed per output (see :func:`tolerance_rule`), from the largest |PyTorch output|
    over ``cases`` and, when given, PyTorch's own error ``noise`` (:func:`reference_noise`)."""
    names = cases[0].max_abs_diff if cases else {}
    scale = {name: max(case.max_abs_reference[name] for case in cases) for name in names}
    floor = {name: NOISE_FACTOR * (noise or {}).get(name, 0.0) for name in names}
    if fp16:
        return {name: max(FP16_RELATIVE_TOLERANCE * max(1.0, scale[name]), floor[name]) for name in names}
    return {name: max(FP32_TOLERANCE, FP32_RELATIVE_TOLERANCE * scale[name], floor[name]) for name in names}


def tolerance_rule(*, fp16: bool, noise: bool = False) -> str:
    """The rule :func:`tolerances` applies, in words (for the summary)."""
    scale = "max |PyTorch output|"
    if fp16:
        extra = f", {NOISE_FACTOR:g} × |PyTorch − PyTorch with FP16-rounded weights|" if noise else ""
        return f"tolerance max({_short(FP16_RELATIVE_TOLERANCE)} × max(1, {scale}){extra}) per output"
    extra = f", {NOISE_FACTOR:g} × |PyTorch f32 − f64|" if noise else ""
    return f"tolerance max({_short(FP32_TOLERANCE)}, {_short(FP32_RELATIVE_TOLERANCE)} × {scale}{extra}) per output"


def _short(value: float) -> str:
    """``1e-4`` rather than ``0.0001`` or ``1e-04``."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"
