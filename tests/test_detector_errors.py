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
        ({"keep_ratio": "yes"}, "keep_ratio"),
        ({"backend": "tflite"}, "unknown backend"),
        ({"num_threads": 0}, "num_threads"),
        ({"backend": "onnxruntime", "precision": "f16"}, "precision"),
        ({"num_clases": 3}, "unknown keyword"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        Detector(UPSTREAM, **kwargs)


@pytest.mark.parametrize("value", [0.0, 1.0, np.float32(0.5), 1])
def test_threshold_bounds_are_inclusive(value):
    assert (
        Detector(UPSTREAM, backend="onnxruntime", score_threshold=value, iou_threshold=value).score_threshold == value
    )


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


def test_detect_batch_wants_a_sequence(detector):
    with pytest.raises(InvalidArgumentError, match="sequence"):
        detector.detect_batch(np.zeros((2, 32, 32, 3), np.uint8))


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
        ({"num_classes": 3, "class_names": ["a"]}, MetadataError, "class names"),
        ({"strides": (8, 16, 32)}, IncompatibleModelError, "1360 rows"),
        ({"input_size": (320, 320)}, IncompatibleModelError, "input_size is 320x320"),
        ({"mean": (1.0, 2.0)}, MetadataError, "mean/std"),
        ({"strides": 8}, MetadataError, "invalid model facts"),
    ],
)
def test_bad_foreign_facts(facts, error, fragment):
    with pytest.raises(error, match=fragment):
        Detector(UPSTREAM, backend="onnxruntime", **facts)
