"""Detections / StageTimings: the runtime's result shape."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from nanodet_infer.errors import BackendUnavailableError, InvalidArgumentError, NanoDetError
from nanodet_infer.results import Detection, Detections, StageTimings

NAMES = ("circle", "rectangle", "triangle")


def _dets(timings: StageTimings | None = None) -> Detections:
    return Detections(
        xyxy=np.array([[1, 2, 11, 22], [5.5, 6, 7, 9]], np.float64),
        scores=[0.9, 0.4],
        class_ids=np.array([2, 0], np.int32),
        class_names=NAMES,
        image_size=(640, 480),
        timings=timings,
    )


def test_fields_are_typed_and_read_only() -> None:
    d = _dets()
    assert d.xyxy.dtype == np.float32 and d.scores.dtype == np.float32 and d.class_ids.dtype == np.int64
    assert d.xyxy.shape == (2, 4) and len(d) == 2 and d.image_size == (640, 480)
    with pytest.raises(ValueError):
        d.xyxy[0, 0] = 3
    assert d.labels == ["triangle", "circle"]
    assert d[1] == Detection((5.5, 6.0, 7.0, 9.0), pytest.approx(0.4), 0, "circle")


def test_iteration_yields_detections() -> None:
    items = list(_dets())
    assert [i.class_name for i in items] == ["triangle", "circle"]
    assert items[0].xyxy == (1.0, 2.0, 11.0, 22.0) and isinstance(items[0].score, float)
    assert isinstance(items[0].class_id, int)


def test_to_dict_is_json_able() -> None:
    d = _dets(StageTimings(1.0, 2.5, 0.5))
    data = json.loads(json.dumps(d.to_dict()))
    assert data["image_size"] == [640, 480]
    assert data["detections"][0] == {
        "bbox": [1.0, 2.0, 11.0, 22.0],
        "score": pytest.approx(0.9),
        "class_id": 2,
        "class_name": "triangle",
    }
    assert data["timings_ms"]["total"] == pytest.approx(4.0)
    assert _dets().to_dict()["timings_ms"] is None


def test_to_coco_uses_xywh_and_category_map() -> None:
    rows = _dets().to_coco(7)
    assert rows[0] == {"image_id": 7, "category_id": 2, "bbox": [1.0, 2.0, 10.0, 20.0], "score": pytest.approx(0.9)}
    assert rows[1]["bbox"] == pytest.approx([5.5, 6.0, 1.5, 3.0])
    assert [r["category_id"] for r in _dets().to_coco(7, category_ids=[10, 20, 30])] == [30, 10]
    with pytest.raises(InvalidArgumentError):
        _dets().to_coco(7, category_ids=[1])
    json.dumps(rows)


def test_empty_and_validation() -> None:
    e = Detections.empty(NAMES, (10, 20))
    assert len(e) == 0 and e.xyxy.shape == (0, 4) and list(e) == [] and e.to_coco(1) == [] and e.labels == []
    with pytest.raises(InvalidArgumentError):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2), NAMES, (1, 1))
    with pytest.raises(InvalidArgumentError):
        Detections(np.zeros((1, 4)), np.zeros(1), np.array([3]), NAMES, (1, 1))


def test_stage_timings_total() -> None:
    assert StageTimings(1.0, 2.0, 3.5).total_ms == pytest.approx(6.5)


def test_to_supervision_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "supervision", None)  # makes `import supervision` raise ImportError
    with pytest.raises(BackendUnavailableError, match="pip install supervision") as info:
        _dets().to_supervision()
    assert isinstance(info.value, ImportError) and isinstance(info.value, NanoDetError)


def test_to_supervision_passes_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("supervision")
    fake.Detections = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "supervision", fake)
    out = _dets().to_supervision()
    np.testing.assert_array_equal(out["xyxy"], _dets().xyxy)
    np.testing.assert_array_equal(out["class_id"], [2, 0])
    assert out["confidence"].dtype == np.float32 and list(out["data"]["class_name"]) == ["triangle", "circle"]
    assert out["xyxy"].flags.writeable  # a copy the user may modify


def _three() -> Detections:
    return Detections(
        xyxy=[[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]],
        scores=[0.9, 0.5, 0.3],
        class_ids=[0, 1, 2],
        class_names=NAMES,
        image_size=(10, 10),
        timings=StageTimings(1.0, 2.0, 3.0),
    )


@pytest.mark.parametrize(
    ("index", "rows"),
    [
        (slice(1, None), [1, 2]),
        (slice(None, None, -1), [2, 1, 0]),
        (slice(5, 9), []),
        ([2, 0], [2, 0]),
        (np.array([1, 1]), [1, 1]),
        (np.array([-1]), [2]),
        (np.array([True, False, True]), [0, 2]),
        ([False, False, False], []),
        ([], []),
        (np.array([], np.int64), []),
    ],
)
def test_slices_index_arrays_and_masks_give_detections(index, rows) -> None:
    d = _three()
    picked = d[index]
    assert isinstance(picked, Detections) and len(picked) == len(rows)
    np.testing.assert_array_equal(picked.xyxy, d.xyxy[rows].reshape(-1, 4))
    np.testing.assert_array_equal(picked.scores, d.scores[rows])
    np.testing.assert_array_equal(picked.class_ids, d.class_ids[rows])
    assert picked.class_names == NAMES and picked.image_size == (10, 10) and picked.timings == d.timings
    assert not picked.xyxy.flags.writeable


def test_masks_compose_like_supervision() -> None:
    d = _three()
    confident = d[d.scores > 0.4]
    assert confident.labels == ["circle", "rectangle"]
    assert confident[confident.class_ids == 1].labels == ["rectangle"]


def test_integers_still_give_one_detection() -> None:
    d = _three()
    assert d[np.int64(1)] == d[1] and isinstance(d[-1], Detection) and d[-1].class_name == "triangle"
    with pytest.raises(IndexError):
        d[3]
    with pytest.raises(IndexError):
        d[[0, 3]]


@pytest.mark.parametrize(
    "index", [np.array([True, False]), [True, False, True, True], np.array([[0, 1]]), 1.5, "0", np.array([0.5]), True]
)
def test_other_indices_are_invalid_arguments(index) -> None:
    with pytest.raises(InvalidArgumentError, match="integer, a slice, an integer index array or a boolean mask"):
        _three()[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"xyxy": None, "scores": None, "class_ids": None, "class_names": None, "image_size": None},
        {"xyxy": [[0, 0, 1, 1]], "scores": [0.5], "class_ids": [0], "class_names": ("a",), "image_size": None},
        {"xyxy": [[0, 0, 1]], "scores": [0.5], "class_ids": [0], "class_names": ("a",), "image_size": (2, 2)},
        {"xyxy": [[0, 0, 1, 1]], "scores": ["x"], "class_ids": [0], "class_names": ("a",), "image_size": (2, 2)},
        {"xyxy": [[0, 0, 1, 1]], "scores": [0.5], "class_ids": [0], "class_names": None, "image_size": (2, 2)},
    ],
)
def test_malformed_construction_is_an_invalid_argument(kwargs) -> None:
    with pytest.raises(InvalidArgumentError, match="Detections needs"):
        Detections(**kwargs)
