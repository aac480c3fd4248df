"""ONNX Runtime INT8 settings side by side: what each does to bare inference against the f32 file.

    python benchmarks/ort_int8_settings.py --model m.onnx --calib-images ../shared/fixtures/shapes-m-256/images

``--model`` is an f32 file written by ``nanodet-export``. Each variant quantizes it with ONNX Runtime's
``quantize_static`` on the same calibration inputs (the runtime's own preprocessing, as the exporter does): the
exporter's own setting (:func:`nanodet_export.quantize.quantize_onnx`: QDQ, uint8 activations, int8 per-channel
weights with ``reduce_range``, the family's float nodes), the same with the depthwise convolutions also kept in
float, the QOperator format, int8 activations, and no float nodes at all. One session per file (1 thread), runs
interleaved, medians (``int8_families.bare_times``); the max |Δ| of the outputs against f32 on the first calibration
input.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def variants(float_nodes: list[str], depthwise: list[str]) -> dict[str, dict[str, Any]]:
    """``quantize_static`` keyword arguments per variant (the exporter's row is made by the exporter itself)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    base = {"quant_format": QuantFormat.QDQ, "activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
            "per_channel": True, "reduce_range": True, "nodes_to_exclude": float_nodes}
    return {
        "depthwise convs float too": {**base, "nodes_to_exclude": float_nodes + depthwise},
        "QOperator format": {**base, "quant_format": QuantFormat.QOperator},
        "int8 activations (S8S8)": {**base, "activation_type": QuantType.QInt8, "reduce_range": False},
        "no float nodes": {**base, "nodes_to_exclude": []},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, required=True, help="f32 .onnx written by nanodet-export")
    parser.add_argument("--calib-images", type=Path, required=True)
    parser.add_argument("--calib-count", type=int, default=20)
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()

    from nanodet_export.adapter import Int8Rule
    from nanodet_export.parity import onnxruntime_runner
    from nanodet_export.quantize import (
        calibration_inputs,
        find_calibration_images,
        load_detector,
        onnx_float_nodes,
        quantize_onnx,
    )
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from benchmarks.int8_families import bare_times

    detector = load_detector(args.model, "onnxruntime")
    inputs = list(calibration_inputs(find_calibration_images(args.calib_images, args.calib_count), detector))
    name = detector.metadata.input_name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = ({name: x} for x in inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(args.model), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        float_nodes, _ = onnx_float_nodes(graph, Int8Rule())
        depthwise = [n.name for n in graph.graph.node if n.op_type == "Conv"
                     and next((a.i for a in n.attribute if a.name == "group"), 1) > 1]
        files = {"f32": args.model, "exporter (QDQ U8S8 reduce_range)": Path(work) / "exporter.onnx"}
        quantize_onnx(args.model, files["exporter (QDQ U8S8 reduce_range)"], lambda: iter(inputs), name)
        for label, options in variants(float_nodes, depthwise).items():
            files[label] = Path(work) / f"{len(files)}.onnx"
            quantize_static(str(prepared), str(files[label]), Reader(), **options)
        outputs = tuple(o.name for o in graph.graph.output)
        medians = bare_times(files, "onnxruntime", inputs[0], args.runs, outputs)  # interleaved, after warm-up
        results = {k: onnxruntime_runner(p, outputs)(inputs[0]) for k, p in files.items()}
        print(f"onnxruntime {ort.__version__}, 1 thread, {args.runs} interleaved runs, input {inputs[0].shape}; "
              f"{len(depthwise)} depthwise convs, {len(float_nodes)} family float nodes")
        print("| setting | ms (median) | vs f32 | max abs diff vs f32 |\n|---|---|---|---|")
        for k, median in medians.items():
            diff = max(float(np.abs(results[k][o] - results["f32"][o]).max()) for o in outputs)
            print(f"| {k} | {median:.2f} | {medians['f32'] / median:.2f}x | {diff:.3g} |")

if __name__ == "__main__":
    main()
