"""Each family's preprocessing with the compiled kernels and without them (``NANODET_NO_KERNEL=1``), side by side.

    python benchmarks/preprocess.py --image ../shared/fixtures/shapes-m-256/images --model nanodet.onnx \\
        --model yolov7.onnx --model ssdlite.onnx

For every ``--model``, ``Detector.network_input`` (the family's resize plan, resize and normalisation: what
``Detector`` times as ``preprocess_ms``) on the images of ``--image``, decoded once beforehand. The two settings run
in separate processes (the switch is read at import), alternating for ``--rounds`` rounds; the table gives the
median per call of each and their ratio. The network inputs of the two are compared: they must be identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def measure(models: list[str], images: Path, calls: int) -> dict[str, dict[str, object]]:
    """In this process: per model, the ms of each ``network_input`` call (``calls`` passes over the images, each
    pass timed per image) and a digest of the inputs."""
    from nanodet_infer import Detector
    from nanodet_infer.images import load_image
    from nanodet_infer.paths import IMAGE_SUFFIXES

    decoded = [load_image(p) for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    out: dict[str, dict[str, object]] = {}
    for model in models:
        detector = Detector(model, backend="onnxruntime", num_threads=1)
        digest = hashlib.sha256()
        for image in decoded:
            digest.update(detector.network_input(image).tobytes())
        times = []
        for _ in range(calls):
            for image in decoded:
                start = time.perf_counter()
                detector.network_input(image)
                times.append((time.perf_counter() - start) * 1e3)
        out[model] = {"ms": times, "sha256": digest.hexdigest(), "family": detector.metadata.model_family,
                      "input_size": list(detector.metadata.input_size)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--model", action="append", required=True, help="an exported model (.onnx); repeatable")
    parser.add_argument("--image", type=Path, required=True, help="a folder of images")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each setting (default 3)")
    parser.add_argument("--calls", type=int, default=5, help="passes over the images per round (default 5)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.image, args.calls)))
        return
    runs: dict[str, list[dict]] = {"kernel": [], "numpy / OpenCV": []}
    command = [sys.executable, __file__, "--child", "--image", str(args.image), "--calls", str(args.calls)]
    for model in args.model:
        command += ["--model", model]
    for _ in range(args.rounds):
        for name, switch in (("kernel", "0"), ("numpy / OpenCV", "1")):
            env = {**os.environ, "NANODET_NO_KERNEL": switch}
            result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            runs[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(f"{args.rounds} alternating rounds x {args.calls} passes over {args.image}; ms per image, median")
    print("| family | input | kernel | numpy / OpenCV | speed-up | same inputs |\n|---|---|---|---|---|---|")
    for model in args.model:
        first = runs["kernel"][0][model]
        medians = {name: statistics.median(t for run in rounds for t in run[model]["ms"])
                   for name, rounds in runs.items()}
        same = len({run[model]["sha256"] for rounds in runs.values() for run in rounds}) == 1
        print(f"| {first['family']} | {first['input_size'][0]}x{first['input_size'][1]} | {medians['kernel']:.3f} | "
              f"{medians['numpy / OpenCV']:.3f} | {medians['numpy / OpenCV'] / medians['kernel']:.2f}x | "
              f"{'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
