"""How sensitive a model is to reduced precision without quantization: OpenVINO bf16 against f32, judged by the
exporter's own INT8 agreement check (the floor an INT8 file of the model can hope for).

    python benchmarks/precision_sensitivity.py --calib-images ../shared/fixtures/shapes-m-256/images \\
        --model ../shared/fixtures/yolov7-tiny-s/yolov7-tiny-s.pt --model ../shared/fixtures/yolov7-s/yolov7-s.pt

Each checkpoint is exported to an f32 IR (``nanodet-export`` defaults, no parity check), then detected on the
images with ``precision="f32"`` and ``precision="bf16"``; :func:`nanodet_export.quantize.agreement` compares them
exactly as ``--int8`` compares INT8 with f32 (stable f32 detections, the family's default threshold).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--model", action="append", required=True, type=Path, help="a training checkpoint")
    parser.add_argument("--calib-images", required=True, type=Path, help="the images to compare on")
    args = parser.parse_args()

    from nanodet_export import export_checkpoint
    from nanodet_export.quantize import MATCH_FACTOR, agreement, find_calibration_images, perturb_image

    from nanodet_infer import Detector
    from nanodet_infer.images import load_image

    paths = find_calibration_images(args.calib_images, None).paths
    images = [load_image(p) for p in paths]
    print("| checkpoint | matched / stable (of f32) | score abs diff mean / max |\n|---|---|---|")
    for checkpoint in args.model:
        with tempfile.TemporaryDirectory() as work:
            model = Path(work) / "m.xml"
            export_checkpoint(checkpoint, model, fmt="openvino", check=False)
            f32 = Detector(model, backend="openvino", num_threads=1)
            low = f32.score_threshold * MATCH_FACTOR
            f32_low = Detector(model, backend="openvino", num_threads=1, score_threshold=low)
            bf16 = Detector(model, backend="openvino", num_threads=1, precision="bf16", score_threshold=low)
            result = agreement([f32(i) for i in images], [bf16(i) for i in images],
                               score_threshold=f32.score_threshold,
                               perturbed=[f32_low(perturb_image(i, seed)) for seed, i in enumerate(images)])
        print(f"| {checkpoint.name} | {result.matched}/{result.stable} (of {result.f32_detections}, "
              f"{result.matched_fraction:.0%}) | {result.mean_score_delta:.3f} / {result.max_score_delta:.3f} |")


if __name__ == "__main__":
    main()
