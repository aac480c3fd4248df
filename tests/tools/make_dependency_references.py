"""Write ``tests/data/dependency_references.json``: sha256 digests of the dependency-computed steps, made by
the libraries themselves (never by this project), for the drift guards in ``tests/core/test_dependency_drift.py``
and ``tests/families/nanodet_plus/test_warp.py``.

Run it once per library release that made a reference, each in its own interpreter (OpenCV 5.0.0 made the
upstream fixtures; 4.12.0 gives the ``opencv-4`` warp arithmetic)::

    pip install --no-deps --target /tmp/cv500 opencv-python-headless==5.0.0.93
    PYTHONPATH=/tmp/cv500 python tests/tools/make_dependency_references.py
    pip install --no-deps --target /tmp/cv412 opencv-python-headless==4.12.0.88
    PYTHONPATH=/tmp/cv412 python tests/tools/make_dependency_references.py

OpenCV 5.0.x writes the ``imdecode``, ``resize`` and ``warp/opencv-5.0`` entries; 4.x writes ``warp/opencv-4``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nanodet_infer.families.nanodet_plus.resize import plan_input  # noqa: E402
from nanodet_infer.paths import atomic_path  # noqa: E402

OUT = ROOT / "tests" / "data" / "dependency_references.json"
IMAGES = sorted((ROOT / "tests" / "data" / "shapes-m-256" / "images").glob("*.jpg"))[:8]
WARP_PLANS = [((256, 256), False), ((256, 256), True), ((320, 320), True), ((416, 320), True)]
RESIZE_SIZES = [(640, 327), (416, 212), (97, 131)]


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def warp_cases() -> list[tuple[str, Path, np.ndarray, tuple[int, int]]]:
    cases = []
    for path in IMAGES:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        for size, keep_ratio in WARP_PLANS:
            plan = plan_input((image.shape[1], image.shape[0]), size, keep_ratio=keep_ratio, dynamic_hw=True)
            name = f"{path.name}@{size[0]}x{size[1]}{'-keep' if keep_ratio else ''}"
            cases.append((name, path, plan.matrix, plan.content_size))
    return cases


def main() -> None:
    refs = json.loads(OUT.read_text()) if OUT.exists() else {"made_with": {}, "warp": {}}
    version = cv2.__version__
    if version.startswith("5.0."):
        refs["made_with"]["opencv"] = version
        refs["imdecode"] = {p.name: digest(cv2.imread(str(p), cv2.IMREAD_COLOR)) for p in IMAGES}
        refs["resize"] = {
            f"{p.name}@{w}x{h}": digest(cv2.resize(cv2.imread(str(p)), (w, h), interpolation=cv2.INTER_LINEAR))
            for p in IMAGES
            for w, h in RESIZE_SIZES
        }
        arithmetic = "opencv-5.0"
    elif version.startswith("4."):
        arithmetic = "opencv-4"
    else:
        raise SystemExit(f"run with OpenCV 5.0.x or 4.x, not {version}")
    refs["made_with"][f"warp/{arithmetic}"] = f"OpenCV {version} cv2.warpPerspective(INTER_LINEAR)"
    refs["warp"][arithmetic] = {
        name: digest(cv2.warpPerspective(cv2.imread(str(path)), matrix, size))
        for name, path, matrix, size in warp_cases()
    }
    with atomic_path(OUT) as temporary:  # a Ctrl-C never leaves the checked-in references half-written
        temporary.write_text(json.dumps(refs, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} entries for OpenCV {version}")


if __name__ == "__main__":
    main()
