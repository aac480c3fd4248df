"""``detect --ray`` prints our lines only: Ray's own log lines (its Python loggers, its C++ core's start-up
line and the actor warning about constructor arguments in the object store) stay off the terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import SHAPES

pytest.importorskip("ray")

MODEL = str(SHAPES / "upstream_export.onnx")


@pytest.mark.slow
def test_detect_with_ray_prints_no_ray_log_lines(tmp_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("val_00000.jpg", "val_00001.jpg"):
        shutil.copy(SHAPES / "images" / name, images / name)
    code = ("import sys; from nanodet_infer.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    run = subprocess.run(
        [sys.executable, "-c", code, "detect", str(images), "--model", MODEL, "--backend", "onnxruntime",
         "--class-names", "circle,rectangle,triangle", "--ray", "--no-progress", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.startswith("2 images/frames,")
