"""Processes side by side: does a 1-thread detector in each of N processes scale to N cores?

Each configuration runs bare inference (``backend.run`` on one network input, 1 thread) for ``--seconds``,
first in one process alone, then in ``--processes`` processes started together (spawned, released by one
barrier); the table gives the inferences per second of each process and their sum over the single process's.
The OpenVINO rows compare the runtime's backend (threads not pinned, ``ENABLE_CPU_PINNING=NO``) with the same
model compiled as OpenVINO's CPU plugin defaults to (pinned): every process pins its threads from the first core
on, so pinned processes share one core. This is what Ray actors, serve replicas and parallel CLI runs do.

    python benchmarks/process_scaling.py --model m.onnx --model m.xml [--processes 2] [--seconds 6]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

CONFIGS = {  # name -> (backend, precision, pinned)
    "onnxruntime f32": ("onnxruntime", "f32", False),
    "openvino f32": ("openvino", "f32", False),
    "openvino f32, pinned (OpenVINO's default)": ("openvino", "f32", True),
    "openvino bf16": ("openvino", "bf16", False),
    "openvino bf16, pinned (OpenVINO's default)": ("openvino", "bf16", True),
}


def _inference(model: str, backend: str, precision: str, pinned: bool):  # noqa: ANN202
    """A no-argument callable running one bare inference on the model's own network input."""
    from nanodet_infer import Detector
    from nanodet_infer.bench import synthetic_image

    detector = Detector(model, backend=backend, num_threads=1, precision=precision)
    tensor = detector.network_input(synthetic_image((640, 480)))[None]
    if not pinned:
        return lambda: detector.backend.run(tensor)
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": "1"}  # pinning left at its default
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    return lambda: request.infer({0: tensor})


def _worker(args: tuple[str, str, str, bool, float], barrier, results) -> None:  # noqa: ANN001
    model, backend, precision, pinned, seconds = args
    run = _inference(model, backend, precision, pinned)
    for _ in range(10):
        run()
    barrier.wait()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    results.put(count / (time.perf_counter() - start))


def measure(args: tuple[str, str, str, bool, float], processes: int) -> list[float]:
    """Inferences per second of each of ``processes`` processes run together."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_worker, args=(args, barrier, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    rates = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="process_scaling.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, type=Path, help=".onnx (ONNX Runtime rows) or .xml")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} logical cores; {args.processes} processes together vs one alone; "
          f"bare inference, 1 thread each, {args.seconds:g} s per run\n")
    print("| model | engine | one process, inf/s | each of N together, inf/s | sum / one |")
    print("|---|---|---|---|---|")
    for model in args.model:
        for name, (backend, precision, pinned) in CONFIGS.items():
            if (backend == "onnxruntime") != (model.suffix.lower() == ".onnx"):
                continue
            config = (str(model), backend, precision, pinned, args.seconds)
            alone = measure(config, 1)[0]
            together = measure(config, args.processes)
            each = " / ".join(f"{rate:.1f}" for rate in together)
            print(f"| {model.name} | {name} | {alone:.1f} | {each} | {sum(together) / alone:.2f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
