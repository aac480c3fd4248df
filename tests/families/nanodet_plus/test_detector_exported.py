"""Detector fidelity on models exported by ``nanodet_export`` from upstream's trained checkpoint.

The checkpoint (``shapes-m-256/nanodet_model_best.pth``) is read from the shared upstream fixtures; it is
exported once per session: static ONNX, dynamic (batch, H, W) ONNX and a static OpenVINO IR. Each model's
detections must reproduce upstream's PyTorch detections (``detections_upstream.json``; with keep_ratio and
the dynamic model ``detections_upstream_keep_ratio.json``) with the tolerances of :mod:`_parity` (boxes
0.01 px, scores 1e-5, same labels; differences only where a score/IoU lies within 1e-5 of its threshold).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _parity import SETTINGS, assert_matches
from conftest import SHAPES

from nanodet_infer import Detector

REFERENCE = json.loads((SHAPES / "detections_upstream.json").read_text())
REFERENCE_KEEP_RATIO = json.loads((SHAPES / "detections_upstream_keep_ratio.json").read_text())
ENGINES = ("onnxruntime", "openvino")

pytestmark = pytest.mark.shared


@pytest.fixture(scope="session")
def exported(shared_fixtures: Path, tmp_path_factory) -> dict[str, Path]:
    from nanodet_export import export_checkpoint

    checkpoint = shared_fixtures / "shapes-m-256" / "nanodet_model_best.pth"
    config = SHAPES / "config.yml"
    out = tmp_path_factory.mktemp("exported")
    return {
        "static": export_checkpoint(checkpoint, out / "static.onnx", config=config).path,
        "dynamic": export_checkpoint(checkpoint, out / "dynamic.onnx", config=config, dynamic=True).path,
        "ir": export_checkpoint(checkpoint, out / "static.xml", config=config, fmt="openvino").path,
    }


def _detector(exported: dict[str, Path], kind: str, engine: str, **kwargs) -> Detector:
    return Detector(exported[kind], backend=engine, num_threads=1, **SETTINGS, **kwargs)


@pytest.mark.parametrize(
    ("kind", "engine"), [("static", e) for e in ENGINES] + [("dynamic", e) for e in ENGINES] + [("ir", "openvino")]
)
def test_exported_model_reproduces_upstream(exported, kind, engine):
    det = _detector(exported, kind, engine)
    meta = det.metadata
    assert meta.class_names == tuple(REFERENCE["class_names"]) and not det.keep_ratio
    assert meta.dynamic_hw == meta.dynamic_batch == (kind == "dynamic")
    for item in REFERENCE["images"]:
        detections = det(SHAPES / "images" / item["file_name"])
        assert detections.image_size == (item["width"], item["height"])
        assert_matches(detections, item["detections"])


@pytest.mark.parametrize("engine", ENGINES)
def test_keep_ratio_with_dynamic_model_reproduces_upstream(exported, engine):
    det = _detector(exported, "dynamic", engine, keep_ratio=True)
    for item in REFERENCE_KEEP_RATIO["images"]:
        assert_matches(det(SHAPES / "images" / item["file_name"]), item["detections"])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("keep_ratio", [False, True])
def test_batched_inference_on_dynamic_model(exported, engine, keep_ratio, monkeypatch):
    """One backend call per distinct canvas size; results still reproduce upstream."""
    reference = REFERENCE_KEEP_RATIO if keep_ratio else REFERENCE
    det = _detector(exported, "dynamic", engine, keep_ratio=keep_ratio)
    batch_sizes: list[int] = []
    run = det._backend.run

    def counting_run(tensor):
        batch_sizes.append(tensor.shape[0])
        return run(tensor)

    monkeypatch.setattr(det._backend, "run", counting_run)
    items = reference["images"]
    results = det.detect_batch([SHAPES / "images" / item["file_name"] for item in items])
    canvases = {tuple(item["model_input_shape_nchw"][2:]) for item in items}
    assert sum(batch_sizes) == len(items) and len(batch_sizes) == len(canvases)
    for item, detections in zip(items, results, strict=True):
        assert detections.image_size == (item["width"], item["height"])
        assert_matches(detections, item["detections"])
