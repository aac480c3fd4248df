"""Run the OpenCV-dependent tests once per OpenCV release, each installed beside the project's environment.

Usage: ``python tests/tools/check_opencv_releases.py [VERSION ...]`` (default: the releases the runtime promises
identical results with). Each ``opencv-python-headless==VERSION`` is installed with ``--no-deps`` into a temporary
folder and put first on ``PYTHONPATH`` for a pytest run of the warp, drift-guard and NanoDet-Plus parity tests.
Exit status 0 only when every release passes. ``.ci/run`` runs it after the main suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

RELEASES = ("4.12.0.88", "5.0.0.93", "5.1.0.95")
TESTS = (
    "tests/families/nanodet_plus/test_warp.py",
    "tests/core/test_dependency_drift.py",
    "tests/families/nanodet_plus/test_detector_exported.py",
    "tests/core/test_preprocess.py",
)
ROOT = Path(__file__).resolve().parents[2]


def check(version: str, folder: Path) -> bool:
    target = folder / version
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         f"opencv-python-headless=={version}"],
        check=True,
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT, env=env)
    print(f"opencv-python-headless {version}: {'passed' if run.returncode == 0 else 'FAILED'}", flush=True)
    return run.returncode == 0


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as folder:
        results = [check(version, Path(folder)) for version in (argv or RELEASES)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
