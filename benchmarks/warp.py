"""NanoDet-Plus's resize: the OpenCV-independent warp next to the installed ``cv2.warpPerspective``, side by side.

Usage: ``python benchmarks/warp.py [--repeats N]``. For a 640x480 image at 256x256 (stretch) and 320x320 (keep
ratio): the installed OpenCV's own warp (whose arithmetic depends on its release), the runtime's warp with its
coordinate maps cached (a stream or a same-size folder), and with the maps computed per call (every image a new
size). Medians of interleaved rounds, in ms, and the runtime's extra time over ``cv2.warpPerspective``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from nanodet_infer.families.nanodet_plus import warp
from nanodet_infer.families.nanodet_plus.resize import plan_input


def _time(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=100, help="calls per round (default 100); 15 rounds")
    args = parser.parse_args()
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    print(f"OpenCV {cv2.__version__}; kernel for opencv-5.0: {warp.kernel('opencv-5.0')}")
    print(f"{'plan':<16}{'cv2.warpPerspective':>21}{'ours (maps cached)':>20}{'ours (new size)':>17}"
          f"{'extra (cached)':>16}")
    for size, keep in (((256, 256), False), ((320, 320), True)):
        plan = plan_input((640, 480), size, keep_ratio=keep, dynamic_hw=True)
        matrix, dsize = plan.matrix, plan.content_size

        def uncached(matrix=matrix, dsize=dsize) -> None:
            warp._maps.cache_clear()
            warp.warp_perspective(image, matrix, dsize)

        calls = {
            "cv2": lambda matrix=matrix, dsize=dsize: cv2.warpPerspective(image, matrix, dsize),
            "cached": lambda matrix=matrix, dsize=dsize: warp.warp_perspective(image, matrix, dsize),
            "uncached": uncached,
        }
        rounds: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(15):
            for name, fn in calls.items():
                rounds[name].append(_time(fn, args.repeats))
        med = {name: statistics.median(values) for name, values in rounds.items()}
        label = f"{size[0]}x{size[1]} {'keep' if keep else 'stretch'}"
        print(f"{label:<16}{med['cv2']:>21.3f}{med['cached']:>20.3f}{med['uncached']:>17.3f}"
              f"{med['cached'] - med['cv2']:>+16.3f}")


if __name__ == "__main__":
    main()
