"""The family architecture: registry, schema versions 1 and 2, family selection by metadata and by argument."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tiny_models import fake_detector
from conftest import SHAPES

from nanodet_infer import Detector
from nanodet_infer.errors import InvalidArgumentError, MetadataError
from nanodet_infer.families import DEFAULT_FAMILY, FAMILIES, family_names, get_family, get_section
from nanodet_infer.families.base import Family
from nanodet_infer.metadata import SCHEMA_VERSION, MetadataSection, ModelMetadata

UPSTREAM = SHAPES / "upstream_export.onnx"

# What nanodet-export wrote before families existed (schema version 1), for a 3-class 64x64 model.
V1_PROPERTIES = {
    "nanodet.schema_version": "1",
    "nanodet.model_family": "nanodet-plus",
    "nanodet.producer": "nanodet-export 0.1.0",
    "nanodet.class_names": '["a", "b", "c"]',
    "nanodet.num_classes": "3",
    "nanodet.reg_max": "7",
    "nanodet.strides": "[8, 16, 32, 64]",
    "nanodet.input_size": "[64, 64]",
    "nanodet.dynamic_batch": "false",
    "nanodet.dynamic_hw": "false",
    "nanodet.mean": "[103.53, 116.28, 123.675]",
    "nanodet.std": "[57.375, 57.12, 58.395]",
    "nanodet.channel_order": "BGR",
    "nanodet.keep_ratio": "false",
    "nanodet.prior_offset": "0.0",
    "nanodet.input_name": "images",
    "nanodet.scores_output": "scores",
    "nanodet.boxes_output": "boxes",
    "nanodet.scores_activation": "sigmoid",
    "nanodet.box_side_order": "ltrb",
    "nanodet.source_sha256": "",
    "nanodet.architecture": "{}",
}


def test_registry_names_each_family_once_and_loads_it() -> None:
    assert family_names() == tuple(FAMILIES) and DEFAULT_FAMILY in FAMILIES
    for name in family_names():
        family, section = get_family(name), get_section(name)
        assert isinstance(family, Family) and family.name == name
        assert issubclass(section, MetadataSection) and name == section.FAMILY
        # every setting has a default: in default_settings, or read from the model's metadata by model_settings
        # (the torchvision families take score/iou/max-detections from their builders' metadata keys)
        assert set(family.default_settings) <= {"score_threshold", "iou_threshold", "max_detections", "multi_label"}
        assert "multi_label" in family.default_settings
    nanodet = get_family("nanodet-plus")
    assert nanodet.model_settings(ModelMetadata(3, ("a", "b", "c"))) == nanodet.default_settings
    assert set(nanodet.default_settings) == {"score_threshold", "iou_threshold", "max_detections", "multi_label"}


@pytest.mark.parametrize("name", ["yolo", "", None, 3])
def test_unknown_family_is_a_metadata_error_naming_the_supported_ones(name) -> None:
    with pytest.raises(MetadataError, match="is not supported; this runtime runs 'nanodet-plus'"):
        get_section(name) if isinstance(name, str) else ModelMetadata(3, ("a", "b", "c"), model_family=name)


def test_version_1_files_load_unchanged() -> None:
    meta = ModelMetadata.from_properties(V1_PROPERTIES)
    assert meta.schema_version == 1 and meta.model_family == "nanodet-plus"
    assert (meta.reg_max, meta.strides, meta.input_size, meta.keep_ratio) == (7, (8, 16, 32, 64), (64, 64), False)
    again = meta.to_properties()
    assert again == V1_PROPERTIES  # the same keys and values: nothing renamed, nothing added


def test_version_2_is_written_and_round_trips_with_the_family_section() -> None:
    meta = ModelMetadata(num_classes=3, class_names=("a", "b", "c"), reg_max=10, prior_offset=0.5)
    props = meta.to_properties()
    assert props["nanodet.schema_version"] == str(SCHEMA_VERSION) == "2"
    assert props["nanodet.model_family"] == "nanodet-plus" and json.loads(props["nanodet.reg_max"]) == 10
    again = ModelMetadata.from_properties(props)
    assert again == meta and again.section.reg_max == again.reg_max == 10 and again.num_box_channels == 44


@pytest.fixture
def other_family(monkeypatch):
    """A second registry name for the NanoDet-Plus folder, removed (caches too) after the test."""
    monkeypatch.setitem(FAMILIES, "other-family", "nanodet_plus")
    yield "other-family"
    get_family.cache_clear()
    get_section.cache_clear()


def test_version_1_cannot_name_another_family(other_family) -> None:
    props = V1_PROPERTIES | {"nanodet.model_family": other_family}
    with pytest.raises(MetadataError, match="schema_version 1 only describes 'nanodet-plus'"):
        ModelMetadata.from_properties(props)


def test_unknown_field_is_refused() -> None:
    with pytest.raises(MetadataError, match=r"unknown metadata field\(s\) \['anchors'\]"):
        ModelMetadata(3, ("a", "b", "c"), anchors=[[1, 2]])


def test_detector_runs_a_version_1_file(tmp_path) -> None:
    det = Detector(fake_detector(tmp_path / "v1.onnx", metadata=V1_PROPERTIES), backend="onnxruntime")
    assert det.metadata.schema_version == 1 and det.metadata.model_family == "nanodet-plus"
    assert len(det(np.zeros((40, 50, 3), np.uint8))) == 0


def test_family_defaults_fill_unset_settings() -> None:
    det = Detector(UPSTREAM, backend="onnxruntime", num_threads=1)
    defaults = get_family("nanodet-plus").default_settings
    assert {name: getattr(det, name) for name in defaults} == defaults
    det.score_threshold = 0.7
    det.score_threshold = None  # back to the family default
    assert det.score_threshold == defaults["score_threshold"]


def test_evaluation_settings_are_upstream_evaluators() -> None:
    """NanoDet-Plus evaluates at 0.05 / 0.6 / 100 (its demo runs at 0.35); torchvision's builders evaluate with
    their detection defaults."""
    det = Detector(UPSTREAM, backend="onnxruntime", num_threads=1)
    assert det.evaluation_settings == {
        "score_threshold": 0.05,
        "iou_threshold": 0.6,
        "max_detections": 100,
        "multi_label": True,
    }
    for name in ("ssd", "retinanet"):
        assert type(get_family(name)).evaluation_settings is Family.evaluation_settings  # = model_settings


def test_model_family_argument() -> None:
    det = Detector(UPSTREAM, backend="onnxruntime", num_threads=1, model_family="nanodet-plus")
    assert det.metadata.model_family == "nanodet-plus" and not det._spec.embedded
    with pytest.raises(InvalidArgumentError, match="unknown model_family 'yolo'; choose one of nanodet-plus"):
        Detector(UPSTREAM, model_family="yolo")


def test_model_family_argument_must_agree_with_the_metadata(tmp_path, other_family) -> None:
    path = fake_detector(tmp_path / "ok.onnx", metadata=V1_PROPERTIES)
    with pytest.raises(InvalidArgumentError, match="metadata says model_family 'nanodet-plus', not 'other-family'"):
        Detector(path, backend="onnxruntime", model_family=other_family)


@pytest.fixture
def toy_family(monkeypatch):
    """tests/_toy_family.py registered as family "toy" (one registry line, one module), removed after the test."""
    import sys

    import _toy_family

    monkeypatch.setitem(FAMILIES, "toy", "toy")
    monkeypatch.setitem(sys.modules, "nanodet_infer.families.toy.family", _toy_family)
    monkeypatch.setitem(sys.modules, "nanodet_infer.families.toy.section", _toy_family)
    yield _toy_family
    get_family.cache_clear()
    get_section.cache_clear()


def _toy_score(image: np.ndarray) -> np.float32:
    """The toy's score computed independently: stretch to 32x16, RGB / 255, the conv's first channel, mean, sigmoid."""
    import cv2
    from _tiny_models import conv_weight

    rgb = cv2.resize(image, (32, 16), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float64) / 255
    y0 = rgb @ conv_weight()[0, :, 0, 0].astype(np.float64)
    return np.float32(1 / (1 + np.exp(-y0.mean())))


def test_detector_runs_a_family_it_does_not_know(tmp_path, toy_family) -> None:
    import pickle

    from _tiny_models import conv_model

    props = ModelMetadata(num_classes=1, class_names=("thing",), model_family="toy").to_properties()
    assert props["nanodet.output"] == "y" and props["nanodet.channel_order"] == "RGB"
    path = conv_model(tmp_path / "toy.onnx", metadata=props)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((40, 50, 3), (17, 90, 3), (40, 50, 3))]
    for engine in ("onnxruntime", "openvino"):
        det = Detector(path, backend=engine, num_threads=1)
        assert det.metadata.model_family == "toy" and det.metadata.output == "y" and det.max_detections == 10
        assert det.metadata.dynamic_batch and det.metadata.dynamic_hw
        results = det.detect_batch(images)
        for image, result in zip(images, results, strict=True):
            assert result.labels == ["thing"] and result.image_size == (image.shape[1], image.shape[0])
            np.testing.assert_array_equal(result.xyxy, [[0, 0, image.shape[1], image.shape[0]]])
            np.testing.assert_allclose(result.scores, [_toy_score(image)], rtol=0, atol=1e-6)
        det.score_threshold = 1.0
        assert len(det(images[0])) == 0
        again = pickle.loads(pickle.dumps(det))
        assert again.score_threshold == 1.0 and again.metadata == det.metadata


def test_a_family_refuses_facts_it_does_not_take(tmp_path, toy_family) -> None:
    with pytest.raises(InvalidArgumentError, match="the toy family takes no model facts"):
        Detector(tmp_path / "missing.onnx", model_family="toy", num_classes=3)


@pytest.mark.parametrize(("family", "label"), [("ssd", "ssd"), ("retinanet", "retinanet"), ("detr", "DETR")])
def test_metadata_only_families_refuse_facts_and_models_without_metadata(family, label) -> None:
    from nanodet_infer.families.base import MetadataOnlyFamily

    chosen = get_family(family)
    assert isinstance(chosen, MetadataOnlyFamily) and chosen.foreign_facts == ()
    assert chosen.check_facts({}) == {}
    with pytest.raises(InvalidArgumentError, match=rf"\['num_classes'\]; {label} models carry their facts"):
        chosen.check_facts({"num_classes": 3})
    with pytest.raises(MetadataError, match=f"{label} models must be exported with nanodet-export"):
        chosen.foreign_metadata(None, {})
