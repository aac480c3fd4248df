"""``nanodet-export --resize-arithmetic``: recorded in the metadata, read back by the runtime, refused when unknown."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from nanodet_export.cli import main

from nanodet_infer import Detector
from nanodet_infer.families.nanodet_plus import warp

IMAGES = Path(__file__).resolve().parents[1] / "data" / "shapes-m-256" / "images"


@pytest.mark.shared
def test_the_arithmetic_is_recorded_and_used(shared_fixtures: Path, tmp_path: Path, capsys) -> None:
    ckpt = shared_fixtures / "shapes-m-256" / "nanodet_model_best.pth"
    config = shared_fixtures / "shapes-m-256" / "config.yml"
    files = {}
    for arithmetic in warp.ARITHMETICS:
        files[arithmetic] = tmp_path / f"{arithmetic}.onnx"
        argv = ["--ckpt", str(ckpt), "--config", str(config), "--out", str(files[arithmetic])]
        assert main([*argv, "--resize-arithmetic", arithmetic]) == 0
    image = cv2.imread(str(IMAGES / "val_00001.jpg"))
    results, inputs = {}, {}
    for arithmetic, path in files.items():
        detector = Detector(path, score_threshold=0.05)
        assert detector.metadata.resize_arithmetic == arithmetic
        results[arithmetic] = detector(image)
        inputs[arithmetic] = detector.network_input(image)
    assert not np.array_equal(inputs["opencv-4"], inputs["opencv-5.0"])
    # the two arithmetics give different pixels, so different scores (mAP effect: docs/runtime.md)
    assert not np.array_equal(results["opencv-4"].scores, results["opencv-5.0"].scores)
    capsys.readouterr()
    assert main(["--ckpt", str(ckpt), "--out", str(tmp_path / "x.onnx"), "--resize-arithmetic", "opencv-3"]) == 2
    assert "resize arithmetic must be one of opencv-5.0, opencv-4" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
