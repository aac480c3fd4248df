"""Detector argument validation and model errors: every bad input raises the documented NanoDetError subclass."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _tiny_models import conv_model, fake_detector
from conftest import SHAPES

from nanodet_infer import Detector
from nanodet_infer.errors import (
    ImageReadError,
    IncompatibleModelError,
    InvalidArgumentError,
    InvalidImageError,
    MetadataError,
    ModelLoadError,
)
from nanodet_infer.metadata import ModelMetadata

UPSTREAM = SHAPES / "upstream_export.onnx"
IMAGE = SHAPES / "images" / "val_00000.jpg"
ENGINES = ("onnxruntime", "openvino")


def our_metadata(**changes) -> dict[str, str]:
    """Metadata of a 3-class 64x64 model, as nanodet-export writes it."""
    meta = ModelMetadata(num_classes=3, class_names=("a", "b", "c"), input_size=(64, 64), producer="test")
    return meta.replace(**changes).to_properties()


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(UPSTREAM, backend="onnxruntime", num_threads=1)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"score_threshold": -0.01}, "score_threshold"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"score_threshold": math.nan}, "score_threshold"),
        ({"score_threshold": "0.5"}, "score_threshold"),
        ({"score_threshold": True}, "score_threshold"),
        ({"iou_threshold": -1}, "iou_threshold"),
        ({"iou_threshold": 1.0001}, "iou_threshold"),
        ({"max_detections": 0}, "max_detections"),
        ({"max_detections": -3}, "max_detections"),
        ({"max_detections": 2.5}, "max_detections"),
        ({"max_detections": True}, "max_detections"),
        ({"max_detections": np.float64(5)}, "max_detections"),
        ({"keep_ratio": "yes"}, "keep_ratio"),
        ({"keep_ratio": 1}, "keep_ratio"),
        ({"multi_label": "no"}, "multi_label"),
        ({"multi_label": 0}, "multi_label"),
        ({"backend": "tflite"}, "unknown backend"),
        ({"num_threads": 0}, "num_threads"),
        ({"backend": "onnxruntime", "precision": "f16"}, "precision"),
        ({"num_clases": 3}, "unknown keyword"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        Detector(UPSTREAM, **kwargs)


@pytest.mark.parametrize("value", [0.0, 1.0, np.float32(0.5), np.float64(0.25), np.int64(1), 1])
def test_threshold_bounds_are_inclusive(value):
    det = Detector(UPSTREAM, backend="onnxruntime", score_threshold=value, iou_threshold=value)
    assert det.score_threshold == det.iou_threshold == value and type(det.score_threshold) is float


@pytest.mark.parametrize("value", [np.int64(5), np.int32(5), np.uint8(5), 5])
def test_numpy_integers_are_accepted_for_max_detections(value):
    det = Detector(UPSTREAM, backend="onnxruntime", max_detections=value)
    assert det.max_detections == 5 and type(det.max_detections) is int
    assert len(Detector(UPSTREAM, backend="onnxruntime", score_threshold=0.05, max_detections=value)(IMAGE)) == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("score_threshold", 1.5),
        ("score_threshold", "0.5"),
        ("iou_threshold", math.nan),
        ("max_detections", 0),
        ("max_detections", 2.5),
        ("keep_ratio", "yes"),
        ("multi_label", 0),
    ],
)
def test_setting_a_bad_value_raises_and_keeps_the_old_one(detector, name, value):
    before = getattr(detector, name)
    with pytest.raises(InvalidArgumentError, match=name):
        setattr(detector, name, value)
    assert getattr(detector, name) == before


def test_settings_can_be_changed_and_apply_like_constructor_arguments():
    det = Detector(UPSTREAM, backend="onnxruntime", num_threads=1)
    det.score_threshold, det.max_detections, det.multi_label = np.float32(0.05), np.int64(3), False
    det.keep_ratio = True
    fresh = Detector(
        UPSTREAM, backend="onnxruntime", num_threads=1, score_threshold=0.05, max_detections=3,
        multi_label=False, keep_ratio=True,
    )
    got, want = det(IMAGE), fresh(IMAGE)
    assert len(got) == 3
    np.testing.assert_array_equal(got.xyxy, want.xyxy)
    np.testing.assert_array_equal(got.class_ids, want.class_ids)
    det.keep_ratio = None  # back to the model's own (upstream export: stretch)
    assert det.keep_ratio is False and type(det.max_detections) is int


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (None, InvalidImageError),
        (np.zeros((0, 0, 3), np.uint8), InvalidImageError),
        (np.zeros((32, 32, 3), np.float32), InvalidImageError),
        (np.zeros((32, 32, 3), np.uint16), InvalidImageError),
        (np.zeros((32, 32, 2), np.uint8), InvalidImageError),
        (np.zeros((1, 32, 32, 3), np.uint8), InvalidImageError),
        (SHAPES / "missing.jpg", ImageReadError),
        (SHAPES / "config.yml", ImageReadError),
    ],
)
def test_bad_images(detector, image, error):
    with pytest.raises(error):
        detector(image)
    with pytest.raises(error):
        detector.detect_batch([SHAPES / "images" / "val_00000.jpg", image])


def test_gray_and_bgra_images_run(detector):
    gray = np.full((40, 60), 128, np.uint8)
    assert detector(gray).image_size == (60, 40)
    assert detector(np.dstack([gray, gray, gray, gray])).image_size == (60, 40)


@pytest.mark.parametrize("images", [np.zeros((2, 32, 32, 3), np.uint8), None, 5, str(IMAGE), IMAGE, b"x.jpg"])
def test_detect_batch_wants_a_sequence(detector, images):
    with pytest.raises(InvalidArgumentError, match="sequence"):
        detector.detect_batch(images)


@pytest.mark.parametrize("max_batch", [0, -1, 2.0, True])
def test_detect_batch_max_batch_must_be_a_positive_integer(detector, max_batch):
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        detector.detect_batch([IMAGE], max_batch=max_batch)


@pytest.mark.parametrize("engine", ENGINES)
def test_model_file_errors(tmp_path, engine):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Detector(tmp_path / "nope.onnx", backend=engine)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError):
        Detector(garbage, backend=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_onnx_that_is_not_a_detector(tmp_path, engine):
    with pytest.raises(IncompatibleModelError, match="no nanodet metadata"):
        Detector(conv_model(tmp_path / "conv.onnx", dynamic=False), backend=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_our_layout_with_matching_metadata_runs(tmp_path, engine):
    det = Detector(fake_detector(tmp_path / "ok.onnx", metadata=our_metadata()), backend=engine)
    assert det.metadata.class_names == ("a", "b", "c") and det.input_size == (64, 64)
    result = det(np.zeros((48, 80, 3), np.uint8))  # all-zero outputs: nothing above the threshold
    assert len(result.scores) == 0 and result.xyxy.shape == (0, 4) and result.image_size == (80, 48)


@pytest.mark.parametrize(
    ("model_kwargs", "meta_changes", "error", "fragment"),
    [
        ({"output_names": ("cls", "reg")}, {}, IncompatibleModelError, "names output 'scores'"),
        ({"channels": (4, 32)}, {}, IncompatibleModelError, "4 channels"),
        ({}, {"num_classes": 4, "class_names": ("a", "b", "c", "d")}, IncompatibleModelError, "3 channels"),
        ({}, {"reg_max": 15}, IncompatibleModelError, "32 channels"),
        ({"num_priors": 84}, {}, IncompatibleModelError, "84 rows"),
        ({}, {"strides": (8, 16, 32)}, IncompatibleModelError, "85 rows"),
        ({"input_name": "data"}, {}, IncompatibleModelError, "input is named 'data'"),
        ({}, {"input_size": (64, 96)}, IncompatibleModelError, "input_size is 64x96"),
    ],
)
def test_model_that_disagrees_with_its_metadata(tmp_path, model_kwargs, meta_changes, error, fragment):
    path = fake_detector(tmp_path / "bad.onnx", metadata=our_metadata(**meta_changes), **model_kwargs)
    for engine in ENGINES:
        with pytest.raises(error, match=fragment):
            Detector(path, backend=engine)


def test_malformed_metadata(tmp_path):
    props = our_metadata()
    props["nanodet.num_classes"] = "three"
    with pytest.raises(MetadataError, match="num_classes"):
        Detector(fake_detector(tmp_path / "m.onnx", metadata=props), backend="onnxruntime")


def test_facts_are_refused_for_a_model_with_metadata(tmp_path):
    path = fake_detector(tmp_path / "ok.onnx", metadata=our_metadata())
    with pytest.raises(InvalidArgumentError, match="carries nanodet metadata"):
        Detector(path, backend="onnxruntime", num_classes=3)


@pytest.mark.parametrize(
    ("facts", "error", "fragment"),
    [
        ({"num_classes": 4}, IncompatibleModelError, "35 channels"),
        ({"reg_max": 16}, IncompatibleModelError, "not more than"),
        ({"class_names": ["a", "b"]}, IncompatibleModelError, "35 channels"),
        ({"num_classes": 3, "class_names": ["a"]}, InvalidArgumentError, "class names for num_classes=3"),
        ({"strides": (8, 16, 32)}, IncompatibleModelError, "1360 rows"),
        ({"input_size": (320, 320)}, IncompatibleModelError, "input_size is 320x320"),
        ({"mean": (1.0, 2.0)}, InvalidArgumentError, "mean must have 3 entries"),
        ({"std": (1.0, 0.0, 1.0)}, InvalidArgumentError, "invalid model facts: std"),
        ({"strides": (16, 8, 32, 64)}, InvalidArgumentError, "invalid model facts: strides"),
    ],
)
def test_bad_foreign_facts(facts, error, fragment):
    with pytest.raises(error, match=fragment):
        Detector(UPSTREAM, backend="onnxruntime", **facts)


@pytest.mark.parametrize(
    ("facts", "fragment"),
    [
        ({"class_names": 5}, "class_names must be a list.*pass a list of names"),
        ({"class_names": "abc"}, "class_names must be a list.*pass a list of names"),
        ({"class_names": ["a", 1, "c"]}, "class_names must be strings"),
        ({"class_names": []}, "class_names must have at least one"),
        ({"num_classes": 3.0}, "num_classes must be an integer >= 1, got 3.0"),
        ({"num_classes": True}, "num_classes must be an integer"),
        ({"num_classes": "3"}, "num_classes must be an integer"),
        ({"reg_max": 7.0}, "reg_max must be an integer"),
        ({"strides": 8}, "strides must be a list"),
        ({"strides": (8, 16.5, 32, 64)}, "strides entry must be an integer"),
        ({"input_size": 256}, r"input_size must be a list.*\(W, H\)"),
        ({"input_size": (256, 256, 3)}, "input_size must have 2 entries"),
        ({"mean": "0,0,0"}, "mean must be a list"),
        ({"std": (1.0, "x", 1.0)}, "std must be 3 numbers"),
        ({"keep_ratio": "no"}, "keep_ratio must be True or False"),
    ],
)
def test_malformed_foreign_facts_are_refused_before_the_model_loads(tmp_path, facts, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        Detector(UPSTREAM, backend="onnxruntime", **facts)
    with pytest.raises(InvalidArgumentError, match=fragment):  # checked before the (missing) model is opened
        Detector(tmp_path / "missing.onnx", backend="onnxruntime", **facts)


def test_numpy_and_list_foreign_facts_are_normalised():
    det = Detector(
        UPSTREAM, backend="onnxruntime", num_classes=np.int64(3), strides=[8, 16, 32, 64],
        input_size=np.array([256, 256]), mean=np.array([103.53, 116.28, 123.675]),
        class_names=np.array(["a", "b", "c"]),
    )
    meta = det.metadata
    assert (meta.num_classes, meta.strides, meta.input_size) == (3, (8, 16, 32, 64), (256, 256))
    assert type(meta.num_classes) is int and all(type(v) is int for v in (*meta.strides, *meta.input_size))
    assert meta.class_names == ("a", "b", "c") and all(type(v) is float for v in meta.mean)


def test_non_square_foreign_model_takes_w_h_from_the_graph(tmp_path):
    """(W, H) = (shape[3], shape[2]) of a static input, without any warning (docs/runtime.md, foreign models)."""
    path = fake_detector(tmp_path / "wide.onnx", size=(64, 32), num_priors=43, channels=(35,), output_names=("out",),
                         input_name="data")
    det = Detector(path, backend="onnxruntime")
    assert det.input_size == (64, 32) and det.metadata.num_classes == 3
    assert det(np.zeros((10, 30, 3), np.uint8)).image_size == (30, 10)
    with pytest.raises(IncompatibleModelError, match="input_size is 32x64"):
        Detector(path, backend="onnxruntime", input_size=(32, 64))


@pytest.mark.parametrize("model", [None, 123, 1.5, b"model.onnx", "", ["model.onnx"], "model\0.onnx"])
def test_model_must_be_a_path(model):
    with pytest.raises(InvalidArgumentError, match="model must be"):
        Detector(model)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_threads": 2**31}, r"num_threads must be an integer >= 1 and <= 1024"),
        ({"num_threads": 10**5000}, r"num_threads must be an integer >= 1 and <= 1024, got <int>"),
        ({"num_threads": "4"}, "num_threads"),
        ({"precision": ["f32"]}, r"unknown precision \['f32'\]; choose one of f32, bf16, f16"),
        ({"precision": None}, "unknown precision None"),
        ({"backend": None}, "unknown backend None"),
        ({"backend": ["onnxruntime"]}, "unknown backend"),
        ({"model_family": ["nanodet-plus"]}, "unknown model_family"),
        ({"model_family": 3}, "unknown model_family"),
    ],
)
def test_bad_loading_options_are_refused_before_the_model_loads(tmp_path, kwargs, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        Detector(tmp_path / "missing.onnx", **kwargs)  # a loading attempt would raise ModelLoadError


def test_huge_argument_values_are_shortened_in_messages():
    with pytest.raises(InvalidArgumentError) as caught:
        Detector(UPSTREAM, score_threshold="x" * 10_000)
    assert len(str(caught.value)) < 200


def test_create_backend_checks_precision_type():
    from nanodet_infer.backends import create_backend

    with pytest.raises(InvalidArgumentError, match="unknown precision"):
        create_backend(UPSTREAM, "openvino", precision=["f32"])
