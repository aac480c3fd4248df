"""COCO evaluation: upstream's own detections, and our Detector's, scored through nanodet_infer.evaluate."""

from __future__ import annotations

import json

import pytest
from conftest import SHAPES

from nanodet_infer.errors import InvalidArgumentError
from nanodet_infer.evaluate import STAT_NAMES, category_ids_of, coco_stats, evaluate_coco, load_ground_truth

pytest.importorskip("pycocotools")

ANNOTATIONS = SHAPES / "annotations.json"
CLASS_NAMES = ("circle", "rectangle", "triangle")
# mAP of upstream's demo-Predictor detections on these 20 images (score 0.05, IoU 0.6, max 100),
# as pycocotools computes it; recomputed by test_upstream_detections_map.
UPSTREAM_MAP_20_IMAGES = 0.69937


def upstream_rows() -> list[dict]:
    """Upstream's detections (xyxy, 0-based labels) as COCO result rows."""
    data = json.loads((SHAPES / "detections_upstream.json").read_text())
    categories = category_ids_of(load_ground_truth(ANNOTATIONS))
    rows = []
    for image in data["images"]:
        for det in image["detections"]:
            x1, y1, x2, y2 = det["bbox"]
            rows.append({"image_id": image["image_id"], "category_id": categories[det["label"]],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": det["score"]})
    return rows


@pytest.fixture(scope="module")
def upstream_stats() -> dict[str, float]:
    return coco_stats(upstream_rows(), ANNOTATIONS)


def test_upstream_detections_map(upstream_stats: dict[str, float]) -> None:
    assert set(upstream_stats) == set(STAT_NAMES)
    assert upstream_stats["mAP"] == pytest.approx(UPSTREAM_MAP_20_IMAGES, abs=1e-4)
    assert 0 < upstream_stats["mAP"] < upstream_stats["AP50"] <= 1


def test_detector_map_equals_upstream(upstream_stats: dict[str, float]) -> None:
    from nanodet_infer import Detector

    detector = Detector(SHAPES / "upstream_export.onnx", backend="onnxruntime", score_threshold=0.05,
                        iou_threshold=0.6, max_detections=100, class_names=CLASS_NAMES)
    ours = evaluate_coco(detector, ANNOTATIONS, SHAPES / "images")
    assert ours["num_images"] == 20
    for name in STAT_NAMES:
        assert ours[name] == pytest.approx(upstream_stats[name], abs=1e-3), name


def test_no_results_scores_zero() -> None:
    assert coco_stats([], ANNOTATIONS) == dict.fromkeys(STAT_NAMES, 0.0)


def test_unknown_image_id_is_rejected() -> None:
    row = {"image_id": -1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
    with pytest.raises(InvalidArgumentError, match="image ids"):
        coco_stats([row], ANNOTATIONS)


def test_cli_eval(tmp_path, capsys) -> None:
    from nanodet_infer.cli import main

    out = tmp_path / "stats.json"
    code = main(["eval", "--model", str(SHAPES / "upstream_export.onnx"), "--class-names", ",".join(CLASS_NAMES),
                 "--backend", "onnxruntime", "--ann", str(ANNOTATIONS), "--images", str(SHAPES / "images"),
                 "--json", str(out), "--no-progress"])
    assert code == 0
    stats = json.loads(out.read_text())
    assert stats["mAP"] == pytest.approx(UPSTREAM_MAP_20_IMAGES, abs=1e-3)
    assert "mAP" in capsys.readouterr().out


@pytest.mark.parametrize("file_name", [None, "", 5])
def test_image_entry_without_a_file_name_is_named(tmp_path, file_name) -> None:
    from nanodet_infer import Detector

    dataset = json.loads(ANNOTATIONS.read_text())
    image_id = dataset["images"][3]["id"]
    if file_name is None:
        del dataset["images"][3]["file_name"]
    else:
        dataset["images"][3]["file_name"] = file_name
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(dataset))
    detector = Detector(SHAPES / "upstream_export.onnx", backend="onnxruntime")
    with pytest.raises(InvalidArgumentError, match=f"image id {image_id} has no 'file_name'"):
        evaluate_coco(detector, ann, SHAPES / "images")
