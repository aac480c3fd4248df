"""YOLOv7 end to end: upstream training checkpoint → ``nanodet-export`` → :class:`Detector` on the original
images, against upstream's own ``detect.py`` / ``test.py`` detections (``../shared/fixtures/yolov7-*``).

Each fixture is exported once per module with no option but ``--format`` (dynamic H/W, EMA weights): the
``.onnx`` runs on ONNX Runtime, the ``.xml`` on OpenVINO f32. The images are the originals upstream read
(``shapes-m-256/images``), so letterbox, engine, NMS and ``scale_coords`` are all in the loop. Detections
match by order: labels equal, boxes ``|Δ| <= 0.01`` px, scores ``|Δ| <= 1e-5``, except where listed:

* :data:`SCORE_EXCEPTIONS` — score bounds above 1e-5, with the measured max. The engines' float32
  convolutions differ from PyTorch's in the last bits; obj x cls carries that (the same rows' obj/cls
  differ by up to 2.6e-4 from upstream's deploy output, tests/families/yolov7/test_yolov7_export.py). Fed upstream's own
  deploy rows, our NMS and ``scale_coords`` are exact (tests/families/yolov7/test_yolov7_runtime.py).
* :data:`REORDERED` — positions where two or three near-tied detections (reference scores closer than the
  engine's score error) come out in another order; the same detections, each matched to its reference by
  label and box. The measured reference score gaps are in the comments.

Measured max |Δ| over the 3 images (boxes px / scores), detect.py setting; test.py setting:

=================  ==========================================  ==========================================
fixture            ONNX Runtime                                OpenVINO f32
=================  ==========================================  ==========================================
yolov7-s           1.7e-4 / 1.8e-5; 1.7e-4 / 1.9e-5            1.2e-4 / 3.0e-5; 1.2e-4 / 3.0e-5
yolov7-tiny-s      4.4e-4 / 3.8e-5; 1.1e-3 / 4.1e-5            4.0e-4 / 1.7e-5; 4.0e-4 / 1.7e-5
yolov7-w6-aux-s    2.4e-3 / 2.0e-4; 2.5e-3 / 2.0e-4            1.9e-3 / 1.8e-4; 1.9e-3 / 1.8e-4
=================  ==========================================  ==========================================

Re-measured 2026-12 with onnxruntime 1.32.0 / openvino 2026.4.1 (constraints.txt): scores 2.9e-5 / 4.4e-5
(yolov7-s), 6.2e-5 / 3.3e-5 (tiny), 1.9e-4 / 1.0e-4 (w6-aux), ORT / OpenVINO; boxes up to 2.8e-3 px.

Labels and counts are equal everywhere; the sets of detections are equal (no detection crosses the
threshold or the ``max_det`` cut).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _yolov7 import FIXTURES, STEMS
from nanodet_export.cli import main

from nanodet_infer import Detector

pytestmark = [pytest.mark.shared, pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

BOX_TOLERANCE, SCORE_TOLERANCE = 0.01, 1e-5
FORMATS = {"onnxruntime": ("onnx", ".onnx"), "openvino": ("openvino", ".xml")}

SCORE_EXCEPTIONS: dict[tuple[str, str], float] = {
    # measured max: onnxruntime 1.31/1.32 and openvino 2026.4 (2026-12); the first values, 2026-11 releases
    ("yolov7-s", "onnxruntime"): 4.5e-5,  # measured 2.9e-5 (1.9e-5 before)
    ("yolov7-s", "openvino"): 6.5e-5,  # measured 4.4e-5 (3.0e-5 before)
    ("yolov7-tiny-s", "onnxruntime"): 9e-5,  # measured 6.2e-5 (4.1e-5 before)
    ("yolov7-tiny-s", "openvino"): 5e-5,  # measured 3.3e-5 (1.7e-5 before)
    ("yolov7-w6-aux-s", "onnxruntime"): 3e-4,  # measured 1.9e-4 (2.0e-4 before)
    ("yolov7-w6-aux-s", "openvino"): 2.7e-4,  # measured 1.0e-4 (1.8e-4 before)
}
"""(fixture, backend) → max |Δ score| allowed instead of 1e-5 (both settings; measured values above)."""

REORDERED: dict[tuple[str, str, str, str], tuple[int, ...]] = {
    # the union over the engine releases measured (see SCORE_EXCEPTIONS); each pair's reference score gap is
    # below that engine's score error
    ("yolov7-s", "onnxruntime", "test", "val_00000"): (177, 178, 233, 234),  # reference gaps 5.3e-6, 1.4e-6
    ("yolov7-s", "onnxruntime", "test", "val_00002"): (198, 199),  # 3.9e-7
    ("yolov7-s", "openvino", "test", "val_00000"): (177, 178, 233, 234),  # 5.3e-6, 1.4e-6
    # gaps 5.3e-5, 5.2e-6, 1.0e-5, 2.7e-7, 2.8e-6, 2.8e-6
    ("yolov7-tiny-s", "onnxruntime", "test", "val_00000"): (102, 103, 110, 111, 206, 207, 209, 210, 236, 237, 292, 293),
    ("yolov7-tiny-s", "onnxruntime", "test", "val_00001"): (235, 236),  # 2.2e-5
    ("yolov7-tiny-s", "openvino", "test", "val_00000"): (236, 237, 292, 293),  # 2.8e-6, 2.8e-6
    # gaps 8.2e-5, 8.4e-5, 4.1e-6, 8.4e-5 (271..273), 7.5e-5
    ("yolov7-w6-aux-s", "onnxruntime", "test", "val_00000"): (77, 78, 92, 93, 240, 241, 271, 272, 273, 297, 298),
    ("yolov7-w6-aux-s", "openvino", "test", "val_00000"): (256, 257, 271, 272),  # 4.0e-6, 1.3e-5
}
"""(fixture, backend, setting, image) → positions (0-based, in the reference) that may hold another of these
positions' detections."""


@pytest.fixture(scope="module")
def exported(shared_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Every fixture exported as ONNX and OpenVINO IR with ``nanodet-export`` defaults: (fixture, backend) → file."""
    folder = tmp_path_factory.mktemp("y7e2e")
    files = {}
    for name in FIXTURES:
        for backend, (fmt, suffix) in FORMATS.items():
            out = folder / f"{name}{suffix}"
            assert main(["--ckpt", str(shared_fixtures / name / f"{name}.pt"), "--out", str(out), "--format", fmt]) == 0
            files[name, backend] = out
    return files


def compare(detector: Detector, reference: dict, images: Path) -> dict[str, dict]:
    """Per image: ``max_box`` / ``max_score`` |Δ| over matched detections, and ``moved``: the positions whose
    detection is another position's reference (matched by label and box within :data:`BOX_TOLERANCE`)."""
    found = {}
    for stem in STEMS:
        got = detector(str(images / f"{stem}.jpg"))
        want = np.array(reference["images"][stem], np.float64).reshape(-1, 6)
        assert len(got) == len(want), stem
        order = []
        for box, label in zip(got.xyxy, got.class_ids, strict=True):
            near = (want[:, 5] == label) & (np.abs(want[:, :4] - box).max(axis=1) <= BOX_TOLERANCE)
            near[order] = False
            assert near.any(), f"{stem}: a detection of class {label} at {box} has no reference"
            order.append(int(np.argmax(near)))
        matched = want[order]
        found[stem] = {
            "max_box": float(np.abs(got.xyxy - matched[:, :4]).max(initial=0.0)),
            "max_score": float(np.abs(got.scores - matched[:, 4]).max(initial=0.0)),
            "moved": tuple(i for i, j in enumerate(order) if i != j),
        }
    return found


@pytest.mark.parametrize("backend", FORMATS)
@pytest.mark.parametrize("name", FIXTURES)
def test_detections_match_upstream(
    shared_fixtures: Path, exported: dict[tuple[str, str], Path], name: str, backend: str
) -> None:
    detector = Detector(exported[name, backend], backend=backend)
    assert (detector.score_threshold, detector.iou_threshold, detector.multi_label) == (0.25, 0.45, False)
    images = shared_fixtures / "shapes-m-256" / "images"
    for setting in ("detect", "test"):
        reference = json.loads((shared_fixtures / name / f"detections_{setting}.json").read_text())
        if setting == "test":
            for key, value in detector.evaluation_settings.items():
                setattr(detector, key, value)
        assert (detector.score_threshold, detector.iou_threshold) == (reference["conf_thres"], reference["iou_thres"])
        assert (detector.multi_label, detector.max_detections) == (reference["multi_label"], reference["max_det"])
        for stem, result in compare(detector, reference, images).items():
            assert result["max_box"] <= BOX_TOLERANCE, (setting, stem)
            assert result["max_score"] <= SCORE_EXCEPTIONS.get((name, backend), SCORE_TOLERANCE), (setting, stem)
            assert set(result["moved"]) <= set(REORDERED.get((name, backend, setting, stem), ())), (setting, stem)
