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


# ---------------------------------------------------------------------------------------------- category matching
@pytest.fixture(scope="module")
def named_detector():
    from nanodet_infer import Detector

    return Detector(SHAPES / "upstream_export.onnx", backend="onnxruntime", score_threshold=0.05,
                    iou_threshold=0.6, max_detections=100, class_names=CLASS_NAMES)


def _write(tmp_path, dataset: dict) -> object:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(dataset))
    return path


def _renumbered(new_ids: dict[str, int]) -> dict:
    """The annotations with each category's id changed (and listed in a new order), same boxes."""
    dataset = json.loads(ANNOTATIONS.read_text())
    old = {cat["id"]: new_ids[cat["name"]] for cat in dataset["categories"]}
    dataset["categories"] = sorted(
        ({**cat, "id": new_ids[cat["name"]]} for cat in dataset["categories"]), key=lambda c: c["name"], reverse=True
    )
    for annotation in dataset["annotations"]:
        annotation["category_id"] = old[annotation["category_id"]]
    return dataset


def test_categories_are_matched_by_name_not_position(tmp_path, named_detector, upstream_stats) -> None:
    ann = _write(tmp_path, _renumbered({"circle": 7, "rectangle": 3, "triangle": 5}))
    stats = evaluate_coco(named_detector, ann, SHAPES / "images")
    assert stats["mAP"] == pytest.approx(upstream_stats["mAP"], abs=1e-3)  # by position: another number
    assert stats["notes"] == []


def test_unknown_annotation_category_is_named(tmp_path, named_detector) -> None:
    ann = _write(tmp_path, _renumbered({"circle": 1, "rectangle": 2, "triangle": 3}))
    dataset = json.loads(ann.read_text())
    dataset["categories"][0]["name"] = "square"
    ann.write_text(json.dumps(dataset))
    with pytest.raises(InvalidArgumentError, match="1 annotation categories are not classes of the model \\('square'"):
        evaluate_coco(named_detector, ann, SHAPES / "images")


def test_model_classes_missing_from_the_annotations_are_left_out(tmp_path, named_detector) -> None:
    dataset = json.loads(ANNOTATIONS.read_text())
    circle = next(cat["id"] for cat in dataset["categories"] if cat["name"] == "circle")
    dataset["categories"] = [cat for cat in dataset["categories"] if cat["id"] == circle]
    dataset["annotations"] = [a for a in dataset["annotations"] if a["category_id"] == circle]
    ann = _write(tmp_path, dataset)
    stats = evaluate_coco(named_detector, ann, SHAPES / "images")
    assert {row["category_id"] for row in stats["results"]} == {circle}
    expected = coco_stats([row for row in upstream_rows() if row["category_id"] == circle], ann)
    assert stats["mAP"] == pytest.approx(expected["mAP"], abs=1e-3)
    assert stats["notes"] == ["2 model classes are not annotation categories and are left out (rectangle, triangle)"]


def test_positions_are_used_when_a_side_has_no_names(tmp_path, upstream_stats) -> None:
    from nanodet_infer import Detector

    nameless = Detector(SHAPES / "upstream_export.onnx", backend="onnxruntime", score_threshold=0.05,
                        iou_threshold=0.6, max_detections=100)
    stats = evaluate_coco(nameless, ANNOTATIONS, SHAPES / "images")
    assert stats["mAP"] == pytest.approx(upstream_stats["mAP"], abs=1e-3)
    assert stats["notes"] == ["categories matched by position (class i = i-th category id), not by name"]
    dataset = json.loads(ANNOTATIONS.read_text())
    dataset["categories"] = dataset["categories"][:2]
    kept = {category["id"] for category in dataset["categories"]}
    dataset["annotations"] = [a for a in dataset["annotations"] if a["category_id"] in kept]
    with pytest.raises(InvalidArgumentError, match="3 classes but the annotation file 2 categories"):
        evaluate_coco(nameless, _write(tmp_path, dataset), SHAPES / "images")


def test_ground_truth_without_area_or_iscrowd_is_filled(tmp_path, upstream_stats) -> None:
    dataset = json.loads(ANNOTATIONS.read_text())
    for annotation in dataset["annotations"]:
        del annotation["area"], annotation["iscrowd"]
    stats = coco_stats(upstream_rows(), _write(tmp_path, dataset))
    assert stats == pytest.approx(upstream_stats, abs=1e-9)


def test_cli_eval_by_name_prints_notes(tmp_path, capsys) -> None:
    from nanodet_infer.cli import main

    ann = _write(tmp_path, _renumbered({"circle": 7, "rectangle": 3, "triangle": 5}))
    code = main(["eval", "--model", str(SHAPES / "upstream_export.onnx"), "--backend", "onnxruntime",
                 "--ann", str(ann), "--images", str(SHAPES / "images"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("note: categories matched by position")
    mAP = float(next(line for line in out.splitlines() if line.startswith("mAP")).split()[1])
    assert mAP < 0.2  # positions of renumbered categories: the silently wrong answer names prevent
