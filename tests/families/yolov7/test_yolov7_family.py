"""The ``yolov7`` family wired into the Detector: metadata section, layout checks, foreign models, end to end.

The model is a tiny ONNX graph shaped like upstream's deploy output (``_tiny_models.tiny_yolov7``). The
reference is the family's numpy maths called by hand (letterbox → onnxruntime → ``non_max_suppression`` →
``scale_coords``), so these tests prove the wiring; the maths is checked against upstream's fixtures in
``test_yolov7_runtime.py``. Detections must agree exactly (same engine, same input).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from _tiny_models import tiny_yolov7

from nanodet_infer import Detector
from nanodet_infer.cli.arguments import build_parser, make_detector
from nanodet_infer.errors import IncompatibleModelError, InvalidArgumentError, MetadataError
from nanodet_infer.families import family_names, get_family
from nanodet_infer.families.yolov7.postprocess import non_max_suppression, scale_coords
from nanodet_infer.families.yolov7.preprocess import letterbox_input, plan_letterbox
from nanodet_infer.families.yolov7.section import UPSTREAM_ANCHORS
from nanodet_infer.metadata import ModelMetadata

NAMES = ("cat", "dog", "bird")


def _metadata(**changes) -> ModelMetadata:
    keys = {
        "num_classes": 3,
        "class_names": NAMES,
        "model_family": "yolov7",
        "input_size": (128, 128),
        "strides": (8, 16, 32),
        "anchors": UPSTREAM_ANCHORS[3],
        "dynamic_hw": True,
        "dynamic_batch": True,
        "predictions_output": "output",
        "input_name": "images",
    }
    return ModelMetadata(**keys | changes)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("yolov7") / "tiny.onnx"
    return tiny_yolov7(path, metadata=_metadata().to_properties())


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((60, 100), (90, 70), (64, 64))]


def _reference(path: Path, image: np.ndarray, *, input_size=(128, 128), auto=True, **nms):
    plan = plan_letterbox((image.shape[1], image.shape[0]), input_size, stride=32, auto=auto)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = session.run(None, {"images": letterbox_input(image, plan)[None]})[0][0]
    boxes, scores, labels = non_max_suppression(rows, **nms)
    return scale_coords(boxes, plan.canvas_size, plan.src_size), scores, labels, plan


def _assert_same(detections, reference) -> None:
    boxes, scores, labels, _ = reference
    assert len(scores) > 0  # the tiny model detects something, so the comparison means something
    np.testing.assert_array_equal(detections.class_ids, labels)
    np.testing.assert_allclose(detections.scores, scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(detections.xyxy, boxes, rtol=0, atol=1e-3)


def test_registered_with_detect_defaults() -> None:
    assert "yolov7" in family_names()
    family = get_family("yolov7")
    assert family.default_settings == {
        "score_threshold": 0.25,
        "iou_threshold": 0.45,
        "max_detections": 300,
        "multi_label": False,
    }
    assert family.evaluation_settings(_metadata()) == {
        "score_threshold": 0.001,
        "iou_threshold": 0.65,
        "max_detections": 300,
        "multi_label": True,
    }


def test_command_line_settings_default_to_the_family(model: Path) -> None:
    """``detect`` keeps detect.py's defaults, ``eval`` takes test.py's; options given win in both."""
    family = get_family("yolov7")

    def settings(*argv: str, evaluation: bool = False) -> dict:
        args = build_parser().parse_args([*argv, "--model", str(model), "--backend", "onnxruntime"])
        detector = make_detector(args, evaluation=evaluation)
        return {name: getattr(detector, name) for name in family.default_settings}

    evaluate = ("eval", "--ann", "a.json", "--images", "images")
    assert settings("detect", "a.jpg") == family.default_settings
    assert settings(*evaluate, evaluation=True) == family.evaluation_settings(_metadata())
    assert settings("detect", "a.jpg", "--multi-label", "--max-detections", "7") == {
        **family.default_settings,
        "multi_label": True,
        "max_detections": 7,
    }
    assert settings(*evaluate, "--score-threshold", "0.3", "--single-label", evaluation=True) == {
        "score_threshold": 0.3,
        "iou_threshold": 0.65,
        "max_detections": 300,
        "multi_label": False,
    }


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_detector_equals_the_numpy_pipeline(model: Path, backend: str) -> None:
    detector = Detector(model, backend=backend, num_threads=1)
    assert (detector.score_threshold, detector.iou_threshold, detector.max_detections) == (0.25, 0.45, 300)
    assert detector.keep_ratio is True and detector.multi_label is False
    images = _images()
    for image, detections in zip(images, detector.detect_batch(images), strict=True):
        _assert_same(detections, _reference(model, image, conf_thres=0.25, iou_thres=0.45))
        assert detections.class_names == NAMES
    # test.py's evaluation settings, and a max_detections cap that bites
    detector.score_threshold, detector.iou_threshold, detector.multi_label = 0.001, 0.65, True
    _assert_same(detector(images[0]), _reference(model, images[0], conf_thres=0.001, iou_thres=0.65, multi_label=True))
    detector.max_detections = 50
    reference = _reference(model, images[0], conf_thres=0.001, iou_thres=0.65, multi_label=True, max_det=50)
    _assert_same(detector(images[0]), reference)
    assert len(reference[1]) == 50


def test_minimal_rectangle_canvases_per_aspect_ratio(model: Path) -> None:
    detector = Detector(model, backend="onnxruntime", num_threads=1)
    family = get_family("yolov7")
    plans = [family.plan((im.shape[1], im.shape[0]), detector._spec, detector._settings) for im in _images()]
    # 100x60 -> content 128x77, padded to 128x96; 70x90 -> 100x128, padded to 128x128
    assert [plan.canvas_size for plan in plans] == [(128, 96), (128, 128), (128, 128)]
    # an input_size that is not a multiple of the largest stride is rounded up first (detect.py's check_img_size)
    odd = ModelMetadata.from_properties(_metadata(input_size=(100, 70)).to_properties())
    spec = type(detector._spec)(odd, family, detector._spec.layout, True)
    assert family.plan((100, 60), spec, detector._settings).canvas_size == (128, 96)


def test_static_model_uses_the_square_letterbox(tmp_path: Path) -> None:
    meta = _metadata(dynamic_hw=False)
    path = tiny_yolov7(tmp_path / "static.onnx", size=(128, 128), metadata=meta.to_properties())
    detector = Detector(path, backend="onnxruntime", num_threads=1)
    image = _images()[0]
    _assert_same(detector(image), _reference(path, image, auto=False, conf_thres=0.25, iou_thres=0.45))


def test_keep_ratio_false_stretches_to_the_input_size(model: Path) -> None:
    detector = Detector(model, backend="onnxruntime", num_threads=1, keep_ratio=False)
    image = _images()[0]  # 100x60
    plan = get_family("yolov7").plan((100, 60), detector._spec, detector._settings)
    assert plan.canvas_size == (128, 128) and plan.ratio == (1.28, 128 / 60)
    detections = detector(image)
    assert len(detections) > 0
    assert np.all(detections.xyxy[:, 0::2] <= 100) and np.all(detections.xyxy[:, 1::2] <= 60)


def test_foreign_model_takes_upstream_defaults_and_asks_for_the_rest(tmp_path: Path) -> None:
    path = tiny_yolov7(tmp_path / "foreign.onnx", num_classes=2)
    detector = Detector(path, backend="onnxruntime", num_threads=1, model_family="yolov7")
    meta = detector.metadata
    assert meta.model_family == "yolov7" and meta.num_classes == 2 and meta.class_names == ("class_0", "class_1")
    assert meta.input_size == (640, 640) and meta.strides == (8, 16, 32) and meta.anchors == UPSTREAM_ANCHORS[3]
    assert (meta.mean, meta.std, meta.channel_order) == ((0.0,) * 3, (255.0,) * 3, "RGB")
    image = _images()[1]
    _assert_same(detector(image), _reference(path, image, input_size=(640, 640), conf_thres=0.25, iou_thres=0.45))
    # wrong strides are caught at the first image, naming the fix
    wrong = Detector(path, backend="onnxruntime", model_family="yolov7", strides=(8, 16, 32, 64))
    with pytest.raises(IncompatibleModelError, match="strides"):
        wrong(image)
    with pytest.raises(InvalidArgumentError, match="reg_max"):
        Detector(path, backend="onnxruntime", model_family="yolov7", reg_max=7)
    with pytest.raises(InvalidArgumentError, match="letterbox_color"):
        Detector(path, backend="onnxruntime", model_family="yolov7", letterbox_color=300)
    with pytest.raises(InvalidArgumentError, match="anchors"):
        Detector(path, backend="onnxruntime", model_family="yolov7", anchors=[[10, 13, 16]])


def test_metadata_section_round_trip_and_ranges() -> None:
    meta = _metadata(anchors=UPSTREAM_ANCHORS[4], strides=(8, 16, 32, 64), letterbox_color=0)
    again = ModelMetadata.from_properties(meta.to_properties())
    assert again == meta and again.anchors_per_level == 3 and again.max_stride == 64
    assert meta.to_properties()["nanodet.model_family"] == "yolov7"
    for bad, match in (
        ({"anchors": UPSTREAM_ANCHORS[4]}, "anchors"),  # 4 levels for 3 strides
        ({"anchors": ((1.0, 2.0, 3.0),) * 3}, "anchors"),  # odd count
        ({"anchors": ((10.0, 13.0), (10.0, 13.0, 16.0, 30.0), (1.0, 2.0))}, "anchors"),  # na differs
        ({"anchors": ((0.0, 13.0),) * 3}, "anchors"),
        ({"strides": (16, 8, 32)}, "strides"),
        ({"letterbox_color": 256}, "letterbox_color"),
    ):
        with pytest.raises(MetadataError, match=match):
            _metadata(**bad)
    missing = {k: v for k, v in meta.to_properties().items() if k != "nanodet.anchors"}
    with pytest.raises(MetadataError, match="anchors"):
        ModelMetadata.from_properties(missing)


def test_output_layout_is_checked_when_the_model_loads(tmp_path: Path) -> None:
    five = tiny_yolov7(tmp_path / "five.onnx", num_classes=5, metadata=_metadata().to_properties())
    with pytest.raises(IncompatibleModelError, match="num_classes=3"):
        Detector(five, backend="onnxruntime")
    # a static graph of 3 levels described as 4: 1008 rows, the metadata implies 1020
    four = _metadata(dynamic_hw=False, strides=(8, 16, 32, 64), anchors=UPSTREAM_ANCHORS[4])
    path = tiny_yolov7(tmp_path / "rows.onnx", size=(128, 128), metadata=four.to_properties())
    with pytest.raises(IncompatibleModelError, match="1008 rows.*check strides"):
        Detector(path, backend="onnxruntime")
    renamed = _metadata(predictions_output="preds")
    with pytest.raises(IncompatibleModelError, match="preds"):
        Detector(tiny_yolov7(tmp_path / "renamed.onnx", metadata=renamed.to_properties()), backend="onnxruntime")
