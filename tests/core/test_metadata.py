"""The metadata schema (the exporter ↔ runtime contract): round trip, validation, error messages."""

from __future__ import annotations

import json

import pytest

from nanodet_infer.errors import IncompatibleModelError, MetadataError
from nanodet_infer.metadata import KEY_PREFIX, MAX_INPUT_SIDE, SCHEMA_VERSION, ModelMetadata


def _meta(**changes) -> ModelMetadata:
    base = {"num_classes": 3, "class_names": ("circle", "rectangle", "triangle"), "input_size": (320, 192)}
    return ModelMetadata(**(base | changes))


def test_round_trip_keeps_every_field() -> None:
    meta = _meta(
        dynamic_hw=True, keep_ratio=True, source_sha256="ab" * 32, architecture={"backbone": {"name": "ShuffleNetV2"}}
    )
    props = meta.to_properties()
    assert all(key.startswith(KEY_PREFIX) and isinstance(value, str) for key, value in props.items())
    assert json.loads(props["nanodet.input_size"]) == [320, 192]  # [W, H], never swapped
    assert ModelMetadata.from_properties(props) == meta


def test_unicode_class_names_round_trip() -> None:
    meta = _meta(class_names=("圆形", "triángulo", "▭"))
    assert ModelMetadata.from_properties(meta.to_properties()).class_names == ("圆形", "triángulo", "▭")


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    props = _meta().to_properties() | {"nanodet.some_future_key": "1", "other.key": "x"}
    assert ModelMetadata.from_properties(props) == _meta()


def test_metadata_error_is_an_incompatible_model_error() -> None:
    assert issubclass(MetadataError, IncompatibleModelError) and issubclass(MetadataError, ValueError)


@pytest.mark.parametrize(
    "props, fragment",
    [
        ({}, "carries no nanodet metadata"),
        ({"nanodet.num_classes": "3"}, "'nanodet.schema_version' is missing"),
    ],
)
def test_missing_metadata_names_the_fix(props, fragment) -> None:
    with pytest.raises(MetadataError, match=fragment):
        ModelMetadata.from_properties(props)


@pytest.mark.parametrize(
    "key, text, fragment",
    [
        ("num_classes", "three", "not valid JSON"),
        ("num_classes", "3.5", "should be int"),
        ("strides", "[8, 16, true]", "should be int list"),
        ("keep_ratio", "1", "should be bool"),
        ("class_names", '["a", 2, "c"]', "should be str list"),
        ("schema_version", str(SCHEMA_VERSION + 1), "not supported"),
        ("model_family", "yolo", "'yolo' is not supported; this runtime runs 'nanodet-plus'"),
        ("class_names", '["a", "b"]', "2 class names for num_classes=3"),
        ("strides", "[16, 8]", "strictly ascending"),
        ("input_size", f"[{MAX_INPUT_SIDE + 1}, 320]", f"integers in 1..{MAX_INPUT_SIDE}"),
        ("input_size", "[320]", "input_size must be"),
        ("mean", "[NaN, 0, 0]", "finite"),
        ("std", "[0, 1, 1]", "at least"),
        ("channel_order", "BRG", "channel_order"),
        ("scores_activation", "softmax", "scores_activation"),
        ("box_side_order", "ltrb?", "box_side_order"),
    ],
)
def test_bad_values_are_metadata_errors(key, text, fragment) -> None:
    props = _meta().to_properties() | {KEY_PREFIX + key: text}
    with pytest.raises(MetadataError, match=fragment):
        ModelMetadata.from_properties(props)


def test_replace_validates() -> None:
    assert _meta().replace(keep_ratio=True).keep_ratio is True
    with pytest.raises(MetadataError, match="reg_max"):
        _meta().replace(reg_max=0)
    assert _meta().num_box_channels == 32


@pytest.mark.parametrize(
    "key, text, fragment",
    [
        ("prior_offset", "NaN", "must hold finite numbers"),
        ("prior_offset", "Infinity", "must hold finite numbers"),
        ("prior_offset", "-Infinity", "must hold finite numbers"),
        ("prior_offset", "1e400", "must hold finite numbers"),  # JSON overflows to inf
        ("prior_offset", "1e30", r"prior_offset must be a finite number in \[0, 1\]"),
        ("prior_offset", "-0.5", r"prior_offset must be a finite number in \[0, 1\]"),
        ("mean", "[1e30, 0, 0]", "at most 1e\\+06 in magnitude"),
        ("num_classes", "9" * 5000, "not valid JSON"),  # beyond Python's int-string limit
        ("num_classes", "9" * 4000, r"integer out of range \(beyond ±2\*\*63\)"),
        ("num_classes", "1000000", "num_classes must be an integer in 1..100000"),
        ("reg_max", "256", "reg_max must be an integer in 1..255"),
        ("strides", json.dumps(list(range(1, 18))), "at most 16 levels"),
        ("architecture", "[" * 100_000 + "]" * 100_000, "nested too deeply"),  # RecursionError in json
        ("architecture", '{"a": ' * 40 + "1" + "}" * 40, "nested too deeply"),
        ("architecture", '{"a": "' + "x" * 4_000_001 + '"}', "at most 4000000 characters"),
    ],
)
def test_untrusted_values_are_bounded(key, text, fragment) -> None:
    props = _meta().to_properties() | {KEY_PREFIX + key: text}
    with pytest.raises(MetadataError, match=fragment):
        ModelMetadata.from_properties(props)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30, -1e-9, 1.5])
def test_constructing_with_out_of_range_prior_offset_is_refused(value) -> None:
    with pytest.raises(MetadataError, match="prior_offset"):
        _meta(prior_offset=value)


def test_prior_offset_bounds_are_inclusive() -> None:
    assert _meta(prior_offset=0.5).prior_offset == 0.5 and _meta(prior_offset=1).prior_offset == 1


@pytest.mark.parametrize("props", [None, [("nanodet.num_classes", "3")], "nanodet.num_classes=3"])
def test_a_map_is_required(props) -> None:
    with pytest.raises(MetadataError, match="metadata must be a string map"):
        ModelMetadata.from_properties(props)


def test_non_string_keys_and_values_are_refused_or_ignored() -> None:
    props = _meta().to_properties()
    assert ModelMetadata.from_properties({**props, 7: "x"}) == _meta()
    with pytest.raises(MetadataError, match="not a string"):
        ModelMetadata.from_properties({**props, "nanodet.num_classes": 3})


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"class_names": "abc"}, "class_names must be a list of strings, got str"),
        ({"mean": None}, "mean/std must be 3 finite numbers"),
        ({"std": ("1", "1", "1")}, "mean/std must be 3 finite numbers"),
        ({"reg_max": "7"}, "reg_max must be an integer"),
        ({"architecture": None}, "architecture must be a JSON object"),
    ],
)
def test_constructor_types_are_checked(changes, fragment) -> None:
    with pytest.raises(MetadataError, match=fragment):
        _meta(**changes)
