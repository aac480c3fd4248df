"""Image → detections through :class:`Detector` on the files ``nanodet-export`` writes from torchvision's
checkpoints (shared fixtures ``tv-ssdlite320``, ``tv-retinanet-r50``), on ONNX Runtime and OpenVINO f32,
with the builders' defaults and with each fixture's variant setting (``detections.json``).

Every torchvision detection must be matched by one of ours (:func:`match`): the same label, boxes within
``BOX_TOL`` px, scores within ``SCORE_TOL`` (issue 11's end-to-end targets), and no detection left over.
Matching is by label and box, not by rank; the order must still be torchvision's, except for the pairs
listed in :data:`SWAPS`, whose torchvision scores are closer than the engines' own score error.

Measured (max |Δ| over the images and both settings; torchvision itself moves by 2e-3 px and 2.3e-7 in
score between thread counts, fixture READMEs):

=========  ===========  ==================  ==================
model      engine       boxes (px)          scores
=========  ===========  ==================  ==================
SSDLite    onnxruntime  5.4e-3              8.3e-7
SSDLite    openvino     5.4e-3              1.1e-6
RetinaNet  onnxruntime  4.6e-4              4.1e-7
RetinaNet  openvino     5.2e-4              5.5e-7
=========  ===========  ==================  ==================

RetinaNet (a 130 MB model, ~5-15 s per image on one core) runs val_00004 with both settings and val_00000
(704x1344 canvas: P6/P7 strides that are not powers of two) with the defaults; the other images were
measured once with the same results.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from nanodet_infer import Detector  # noqa: E402
from nanodet_infer.results import Detections  # noqa: E402

BOX_TOL, SCORE_TOL = 0.01, 1e-5
BACKENDS = ("onnxruntime", "openvino")

SWAPS: dict[tuple[str, str, str, str], dict[int, int]] = {
    # torchvision's detections 26 and 27 (both label 0) score 0.05676979944 and 0.05676971376: 8.6e-8 apart,
    # below OpenVINO's score error (5.5e-7). OpenVINO ranks them the other way round; both are matched.
    ("retinanet", "openvino", "val_00004", "default"): {26: 27, 27: 26},
    # the same pair with onnxruntime 1.31/1.32 (2026-12), whose score error here is also above the 8.6e-8 gap
    ("retinanet", "onnxruntime", "val_00004", "default"): {26: 27, 27: 26},
}
"""(model, backend, image, setting) → {torchvision's rank: our rank} of detections allowed to trade places."""


def match(result: Detections, expected: dict) -> list[int]:
    """Our index matched to each of torchvision's detections (``expected``: ``boxes``, ``scores``, ``labels``).

    Each torchvision detection takes the nearest-box unused detection of ours with the same label whose box
    is within ``BOX_TOL`` and score within ``SCORE_TOL``; fails if one finds none or ours has extra ones.
    """
    boxes = np.asarray(expected["boxes"], np.float64)
    scores = np.asarray(expected["scores"], np.float64)
    ours_boxes, ours_scores = result.xyxy.astype(np.float64), result.scores.astype(np.float64)
    assert len(result) == len(boxes), f"{len(result)} detections, torchvision has {len(boxes)}"
    free = np.ones(len(result), bool)
    matched = []
    for box, score, label in zip(boxes, scores, expected["labels"], strict=True):
        error = np.abs(ours_boxes - box).max(axis=1)
        fits = free & (result.class_ids == label) & (error <= BOX_TOL) & (np.abs(ours_scores - score) <= SCORE_TOL)
        assert fits.any(), f"no detection matches torchvision's label {label} {box.tolist()} score {score}"
        index = int(np.flatnonzero(fits)[np.argmin(error[fits])])
        free[index] = False
        matched.append(index)
    return matched


def check(result: Detections, expected: dict, case: tuple[str, str, str, str]) -> None:
    """All matched (:func:`match`), in torchvision's order but for the listed swaps of ``case``."""
    matched = match(result, expected)
    swapped = {rank: ours for rank, ours in enumerate(matched) if rank != ours}
    assert swapped in ({}, SWAPS.get(case, {})), f"order differs from torchvision's: {swapped}"


def _with_topk(model: Path, topk: int, out: Path) -> Path:
    """A copy of ``model`` whose metadata says ``topk_candidates = topk`` (a metadata key, not a setting)."""
    graph = onnx.load(str(model))
    for prop in graph.metadata_props:
        if prop.key == "nanodet.topk_candidates":
            prop.value = json.dumps(topk)
    onnx.save(graph, str(out))
    return out


FOLDERS = {"ssdlite": "tv-ssdlite320", "retinanet": "tv-retinanet-r50"}


def _run(models: dict[str, Path], name: str, image: str, backend: str, setting: str, shared: Path) -> None:
    """One image through a Detector on ``models[setting]``, checked against torchvision's record."""
    record = json.loads((shared / FOLDERS[name] / image / "detections.json").read_text())
    expected = record["detections"] if setting == "default" else record["variant"]["detections"]
    settings = {}
    if setting == "variant":
        params = record["variant"]["params"]
        settings = {"score_threshold": params["score_thresh"], "max_detections": params["detections_per_img"]}
    detector = Detector(str(models[setting]), backend=backend, num_threads=1, **settings)
    result = detector(shared / "shapes-m-256" / "images" / f"{image}.jpg")
    check(result, expected, (name, backend, image, setting))


@pytest.fixture(scope="module")
def ssdlite_models(ssdlite_onnx, shared_fixtures, tmp_path_factory) -> dict[str, Path]:
    params = _variant_params(shared_fixtures / FOLDERS["ssdlite"])
    variant = _with_topk(ssdlite_onnx, params["topk_candidates"], tmp_path_factory.mktemp("ssdlite") / "v.onnx")
    return {"default": ssdlite_onnx, "variant": variant}


@pytest.fixture(scope="module")
def retinanet_models(retinanet_onnx, shared_fixtures, tmp_path_factory) -> dict[str, Path]:
    params = _variant_params(shared_fixtures / FOLDERS["retinanet"])
    variant = _with_topk(retinanet_onnx, params["topk_candidates"], tmp_path_factory.mktemp("retinanet") / "v.onnx")
    return {"default": retinanet_onnx, "variant": variant}


def _variant_params(folder: Path) -> dict:
    """The variant's postprocess attributes (the same for every image of a fixture)."""
    return json.loads((folder / "val_00000" / "detections.json").read_text())["variant"]["params"]


@pytest.mark.shared
@pytest.mark.parametrize("setting", ["default", "variant"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_exported_ssdlite_detects_like_torchvision(ssdlite_models, shared_fixtures, backend, setting):
    for image in ("val_00000", "val_00002", "val_00004"):
        _run(ssdlite_models, "ssdlite", image, backend, setting, shared_fixtures)


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize(
    ("image", "setting"), [("val_00004", "default"), ("val_00004", "variant"), ("val_00000", "default")]
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_exported_retinanet_detects_like_torchvision(retinanet_models, shared_fixtures, backend, image, setting):
    _run(retinanet_models, "retinanet", image, backend, setting, shared_fixtures)


def test_match_pairs_by_label_and_box_and_refuses_a_wrong_one():
    """The matcher is what the tests above rely on: it pairs out of order, and fails on a label, box or score
    beyond the tolerances, or on a missing / extra detection."""
    expected = {"boxes": [[0, 0, 10, 10], [5, 5, 20, 20]], "scores": [0.5, 0.4], "labels": [1, 2]}

    def ours(boxes, scores, labels):
        return Detections(boxes, scores, labels, ("a", "b", "c"), (32, 32))

    assert match(ours([[5, 5, 20, 20.005], [0, 0, 10, 10]], [0.4, 0.5], [2, 1]), expected) == [1, 0]
    for bad in (
        ours([[0, 0, 10, 10], [5, 5, 20, 20]], [0.5, 0.4], [1, 1]),  # label
        ours([[0, 0, 10, 10], [5, 5, 20, 20.02]], [0.5, 0.4], [1, 2]),  # box
        ours([[0, 0, 10, 10], [5, 5, 20, 20]], [0.5, 0.40002], [1, 2]),  # score
        ours([[0, 0, 10, 10]], [0.5], [1]),  # missing
    ):
        with pytest.raises(AssertionError):
            match(bad, expected)
    with pytest.raises(AssertionError, match="order"):
        check(ours([[5, 5, 20, 20], [0, 0, 10, 10]], [0.4, 0.5], [2, 1]), expected, ("ssdlite", "x", "y", "z"))
