"""Reliability round 3, ``eval``: every ground-truth field evaluation reads is validated; an error names its JSON
location; contradicting annotations (duplicate / mixed-type ids, duplicate file names) are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import SHAPES

from nanodet_infer import evaluate
from nanodet_infer.cli import main
from nanodet_infer.errors import InvalidArgumentError

pytest.importorskip("pycocotools")
ANNOTATIONS = SHAPES / "annotations.json"


def _dataset() -> dict[str, Any]:
    return json.loads(ANNOTATIONS.read_text())


def _set(path: str, value: Any):
    """A change of the dataset: ``path`` like ``annotations.2.bbox``; ``...`` deletes the key."""
    def change(dataset: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = dataset
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is ...:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return change


def _duplicate_image_id(dataset: dict[str, Any]) -> None:
    dataset["images"][4]["id"] = dataset["images"][3]["id"]


def _duplicate_file_name(dataset: dict[str, Any]) -> None:
    dataset["images"][4]["file_name"] = dataset["images"][3]["file_name"]


def _string_image_ids_for_some(dataset: dict[str, Any]) -> None:
    dataset["images"][2]["id"] = str(dataset["images"][2]["id"])


def _duplicate_annotation_id(dataset: dict[str, Any]) -> None:
    dataset["annotations"][1]["id"] = dataset["annotations"][0]["id"]


CASES = {
    "bbox missing": (_set("annotations.2.bbox", ...), r"annotations\[2\]\.bbox is missing"),
    "bbox a string": (_set("annotations.2.bbox", "1,2,3,4"), r"annotations\[2\]\.bbox is '1,2,3,4'"),
    "bbox of 3 numbers": (_set("annotations.2.bbox", [1, 2, 3]), r"annotations\[2\]\.bbox is \[1, 2, 3\]"),
    "bbox of strings": (_set("annotations.2.bbox", ["1", "2", "3", "4"]), r"annotations\[2\]\.bbox"),
    "bbox NaN": (_set("annotations.2.bbox", [1, 2, float("nan"), 4]), r"annotations\[2\]\.bbox"),
    "bbox negative size": (_set("annotations.2.bbox", [10, 10, -3, 4]), r"negative size.*not \[x1, y1, x2, y2\]"),
    "iscrowd yes": (_set("annotations.2.iscrowd", "yes"), r"annotations\[2\]\.iscrowd is 'yes'; give 0 or 1"),
    "area a string": (_set("annotations.2.area", "big"), r"annotations\[2\]\.area"),
    "image_id unknown": (_set("annotations.2.image_id", 10**6), r"annotations\[2\]\.image_id 1000000 is not an id"),
    "image_id as a string": (lambda d: _set("annotations.2.image_id", str(d["annotations"][2]["image_id"]))(d),
                             r"annotations\[2\]\.image_id '\d+' is not an id of 'images'"),
    "category_id unknown": (_set("annotations.2.category_id", 99), r"annotations\[2\]\.category_id 99"),
    "annotation id missing": (_set("annotations.2.id", ...), r"annotations\[2\]\.id is missing"),
    "annotation not an object": (_set("annotations.2", [1, 2]), r"annotations\[2\] is \[1, 2\]"),
    "duplicate annotation id": (_duplicate_annotation_id, r"annotations\[1\]\.id .* is also annotations\[0\]\.id"),
    "duplicate image id": (_duplicate_image_id, r"images\[4\]\.id .* is also images\[3\]\.id"),
    "duplicate file name": (_duplicate_file_name, r"images\[4\]\.file_name .* is also images\[3\]\.file_name"),
    "mixed image id types": (_string_image_ids_for_some, r"images\[2\]\.id '\d+' is a str while images\[0\]\.id is a"
                                                         r" int; use one kind"),
    "image id a float": (_set("images.1.id", 1.5), r"images\[1\]\.id is 1.5"),
    "image id a bool": (_set("images.1.id", True), r"images\[1\]\.id is True"),
    "image width 0": (_set("images.1.width", 0), r"images\[1\]\.width is 0"),
    "category id a string": (_set("categories.0.id", "1"), r"categories\[0\]\.id is '1'"),
    "category name a number": (_set("categories.0.name", 5), r"categories\[0\]\.name is 5"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_ground_truth_names_the_json_location(tmp_path: Path, case: str) -> None:
    change, message = CASES[case]
    dataset = _dataset()
    change(dataset)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(dataset))
    with pytest.raises(InvalidArgumentError, match=message):
        evaluate.load_ground_truth(ann)


def test_duplicate_image_ids_never_give_a_number(tmp_path: Path, capsys) -> None:
    dataset = _dataset()
    _duplicate_image_id(dataset)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(dataset))
    code = main(["eval", "--model", str(SHAPES / "upstream_export.onnx"), "--num-classes", "3", "--backend",
                 "onnxruntime", "--ann", str(ann), "--images", str(SHAPES / "images"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2 and "mAP" not in out
    assert err.count("\n") == 1 and "is also images[3].id" in err and "Traceback" not in err


def test_valid_ground_truth_still_loads() -> None:
    gt = evaluate.load_ground_truth(ANNOTATIONS)
    assert len(gt.getImgIds()) == len(_dataset()["images"])


def test_string_image_ids_throughout_are_accepted(tmp_path: Path) -> None:
    dataset = _dataset()
    for image in dataset["images"]:
        image["id"] = f"img-{image['id']}"
    for annotation in dataset["annotations"]:
        annotation["image_id"] = f"img-{annotation['image_id']}"
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(dataset))
    assert all(i.startswith("img-") for i in evaluate.load_ground_truth(ann).getImgIds())


def test_extreme_annotation_files_are_refused_before_parsing(tmp_path: Path, monkeypatch) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(InvalidArgumentError, match="nested too deeply"):
        evaluate.load_ground_truth(deep)
    dataset = _dataset()
    dataset["categories"] = [{"id": i, "name": f"c{i}"} for i in range(100_001)]
    many = tmp_path / "many.json"
    many.write_text(json.dumps(dataset))
    with pytest.raises(InvalidArgumentError, match="100001 entries, above the limit of 100000"):
        evaluate.load_ground_truth(many)
    monkeypatch.setattr(evaluate, "MAX_ANNOTATION_BYTES", 1000)
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: pytest.fail("an oversized file was read"))
    with pytest.raises(InvalidArgumentError, match="above the .* limit of an annotation file"):
        evaluate.load_ground_truth(ANNOTATIONS)
