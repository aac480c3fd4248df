"""Frame-to-result delay of ``VideoSource`` + ``Detector`` on a 30 fps MJPEG stream served on 127.0.0.1, in
real-time and every-frame mode, side by side in one run.

The delay of frame *i* is the time its result is ready minus the time the server sent it (the server keeps the
send time of every frame; over HTTP no frame is lost, so the source's frame index is the server's). ``--extra-ms``
adds a sleep per frame after detection, standing in for a detector slower than the source.

    python benchmarks/stream_latency.py [--model m.onnx] [--frames 150] [--extra-ms 0 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _loopback import MjpegServer  # noqa: E402

from nanodet_infer import Detector  # noqa: E402
from nanodet_infer.live import VideoSource  # noqa: E402

TOY_MODEL = ROOT / "tests" / "data" / "shapes-m-256" / "upstream_export.onnx"


def measure(detector: Detector, realtime: bool, frames: int, extra_ms: float) -> dict[str, float]:
    """Median / p90 / max delay (ms), frames processed, dropped and processing fps for one mode."""
    sent: dict[int, float] = {}
    with MjpegServer(fps=30.0) as server:
        server.on_send = lambda index: sent.setdefault(index, time.time())
        delays = []
        started = time.perf_counter()
        with VideoSource(server.url, realtime=realtime, max_frames=frames) as source:
            for frame in source.frames():
                detector(frame.image)
                if extra_ms:
                    time.sleep(extra_ms / 1e3)
                delays.append((time.time() - sent[frame.index]) * 1e3)
        elapsed = time.perf_counter() - started
    delays.sort()
    return {"median_ms": statistics.median(delays), "p90_ms": delays[int(0.9 * (len(delays) - 1))],
            "max_ms": delays[-1], "frames": len(delays), "dropped": source.stats.dropped, "fps": len(delays) / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TOY_MODEL)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--extra-ms", type=float, nargs="+", default=[0.0, 50.0])
    args = parser.parse_args(argv)
    facts = {"class_names": ("circle", "rectangle", "triangle")} if args.model == TOY_MODEL else {}
    detector = Detector(args.model, num_threads=1, **facts)
    print(f"model {args.model.name}, {detector.backend_name}, source 30 fps MJPEG over loopback, {args.frames} frames")
    print(f"{'extra ms':>8} {'mode':<12} {'median ms':>9} {'p90 ms':>7} {'max ms':>7} {'fps':>5} {'dropped':>7}")
    for extra in args.extra_ms:
        for realtime in (True, False):
            row = measure(detector, realtime, args.frames, extra)
            print(f"{extra:>8g} {'real time' if realtime else 'every frame':<12} {row['median_ms']:>9.1f} "
                  f"{row['p90_ms']:>7.1f} {row['max_ms']:>7.1f} {row['fps']:>5.1f} {row['dropped']:>7d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
