"""Catalogue of hostile and unusual inputs: each gives the documented typed error or a correct result.

Covers the runtime (:class:`Detector`), the ``nanodet-infer`` and ``nanodet-export`` command lines and
``nanodet_models.read_checkpoint``. ``docs/robustness.md`` lists every case with its outcome, including the
cases already covered elsewhere (``test_images``, ``test_detector_errors``, ``test_backends``,
``test_export_cli``, ``test_models_checkpoint``), which are not repeated here.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import _hostile_models as hostile
import cv2
import numpy as np
import onnx
import pytest
from _tiny_models import OPSET, fake_detector, pooled_head, stored_head
from conftest import SHAPES
from onnx import TensorProto, helper, numpy_helper

from nanodet_infer import Detector
from nanodet_infer.backends import inspect_model
from nanodet_infer.cli import main as infer_main
from nanodet_infer.errors import (
    CheckpointError,
    IncompatibleModelError,
    InvalidArgumentError,
    MetadataError,
    ModelLoadError,
    NanoDetError,
    UnsafeModelError,
)
from nanodet_infer.families.ssd.section import BUILDERS as SSD_BUILDERS
from nanodet_infer.metadata import ModelMetadata
from nanodet_infer.results import Detections

UPSTREAM = SHAPES / "upstream_export.onnx"
IMAGE = SHAPES / "images" / "val_00000.jpg"
ENGINES = ("onnxruntime", "openvino")
NAMES = ("a", "b", "c")


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def detector() -> Detector:
    """The upstream shapes model (foreign: 3 classes), low threshold so there is something to check."""
    return Detector(UPSTREAM, backend="onnxruntime", num_threads=1, num_classes=3, score_threshold=0.05)


def metadata(**changes) -> dict[str, str]:
    """Metadata of a 3-class 64x64 model, as nanodet-export writes it."""
    meta = ModelMetadata(num_classes=3, class_names=NAMES, input_size=(64, 64), producer="test")
    return meta.replace(**changes).to_properties()


def assert_valid(result: Detections, size: tuple[int, int]) -> None:
    """Finite, inside the ``(W, H)`` image, sorted by score."""
    assert result.image_size == size
    assert np.isfinite(result.xyxy).all() and np.isfinite(result.scores).all()
    assert (result.xyxy >= 0).all()
    assert (result.xyxy[:, 0::2] <= size[0]).all() and (result.xyxy[:, 1::2] <= size[1]).all()
    assert (np.diff(result.scores) <= 0).all()


def assert_same(a: Detections, b: Detections) -> None:
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)


def one_line_error(err: str, prog: str) -> str:
    """The single stderr line of a command-line error (no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ") and "Traceback" not in err
    return lines[0]


def constant_outputs_model(path: Path, scores: np.ndarray, boxes: np.ndarray, meta: dict[str, str]) -> Path:
    """A 64x64 model in our layout whose outputs are ``mean(x) * 0 + constant`` (constants may hold NaN/inf)."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
        helper.make_node("Mul", ["m3", "zero"], ["z"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
        numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "zero"),
    ]
    outputs = []
    for name, value in (("scores", scores), ("boxes", boxes)):
        inits.append(numpy_helper.from_array(value[None].astype(np.float32), f"{name}_value"))
        nodes.append(helper.make_node("Add", ["z", f"{name}_value"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, *value.shape]))
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


@contextmanager
def never_opened(marker: str) -> Iterator[list[str]]:
    """Record every Python-level ``open``/listing whose path contains ``marker`` while the block runs."""
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if active[0] and event in ("open", "os.listdir", "os.scandir") and args and marker in str(args[0]):
            seen.append(f"{event} {args[0]}")

    sys.addaudithook(hook)  # audit hooks cannot be removed: this one goes inert after the block
    try:
        yield seen
    finally:
        active[0] = False


# ---------------------------------------------------------------------------------------------- images
def _random(h: int, w: int, c: int = 3) -> np.ndarray:
    return np.random.default_rng(h * 7919 + w).integers(0, 256, (h, w, c), dtype=np.uint8)


RESULT_IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "1x1": lambda: _random(1, 1),
    "1x5000 (1 row)": lambda: _random(1, 5000),
    "5000x1 (1 column)": lambda: _random(5000, 1),
    "33x17 odd size": lambda: _random(17, 33),
    "8000x8000 huge (stride-0 view, 192 MB once converted)": lambda: np.broadcast_to(
        np.array([[[30, 120, 200]]], np.uint8), (8000, 8000, 3)
    ),
}


@pytest.mark.parametrize("case", list(RESULT_IMAGES))
@pytest.mark.parametrize("keep_ratio", [False, True])
def test_extreme_image_sizes_give_valid_results(case, keep_ratio, detector):
    image = RESULT_IMAGES[case]()
    det = (
        Detector(
            UPSTREAM, backend="onnxruntime", num_threads=1, num_classes=3, score_threshold=0.05, keep_ratio=keep_ratio
        )
        if keep_ratio
        else detector
    )
    assert_valid(det(image), (image.shape[1], image.shape[0]))


TORCHVISION_IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "1x1": lambda: _random(1, 1),
    "3x5000 (RetinaNet: 1333x0 by torchvision's rule, which fails; made 1333x1)": lambda: _random(3, 5000),
    "5000x3": lambda: _random(5000, 3),
    "8000x8000 huge (stride-0 view)": lambda: np.broadcast_to(np.array([[[30, 120, 200]]], np.uint8), (8000, 8000, 3)),
}
RETINANET_STRIDES = (8, 16, 32, 64, 128)


def _ssd_properties(**changes) -> dict[str, str]:
    keys = {**SSD_BUILDERS["ssdlite320_mobilenet_v3_large"], **changes}
    names = ("__background__", "a", "b")
    return ModelMetadata(num_classes=3, class_names=names, model_family="ssd", **keys).to_properties()


def _retinanet_properties(**changes) -> dict[str, str]:
    keys = {"input_size": (1344, 800), "dynamic_hw": True, "anchor_sizes": ((32.0,),) * 5}
    keys |= {"anchor_aspect_ratios": ((1.0,),) * 5, **changes}
    return ModelMetadata(num_classes=2, class_names=("a", "b"), model_family="retinanet", **keys).to_properties()


@pytest.fixture(scope="module")
def torchvision_models(tmp_path_factory) -> dict[str, str]:
    """Paths of a static SSDLite320 (3234 rows of zero logits: every class scores 1/3) and a dynamic-H/W RetinaNet whose
    rows follow the canvas (logits 0: every anchor scores 0.5), both with torchvision's transform rules."""
    folder = tmp_path_factory.mktemp("tv")
    rows = 3234
    outputs = {
        "cls_logits": ((1, rows, 3), 0.0, np.zeros(1, np.int64), np.zeros(1, np.float32)),
        "bbox_regression": ((1, rows, 4), 0.0, np.zeros(1, np.int64), np.zeros(1, np.float32)),
    }
    ssd = stored_head(folder / "ssd.onnx", size=(320, 320), outputs=outputs, metadata=_ssd_properties())
    retina = pooled_head(
        folder / "retina.onnx", strides=RETINANET_STRIDES, num_classes=2, logit=0.0, metadata=_retinanet_properties()
    )
    return {"ssd": str(ssd), "retinanet": str(retina)}


@pytest.mark.parametrize("case", list(TORCHVISION_IMAGES))
@pytest.mark.parametrize("family", ["ssd", "retinanet"])
def test_torchvision_families_take_extreme_image_sizes(case, family, torchvision_models):
    """SSD stretches any image to 320x320; RetinaNet follows torchvision's min/max-size rule (8000x8000 → an
    800x800 canvas, 3x5000 → 1333x1 in a 1344x32 canvas), every side at least 1 pixel."""
    image = TORCHVISION_IMAGES[case]()
    result = Detector(torchvision_models[family], backend="onnxruntime", num_threads=1, max_detections=50)(image)
    assert len(result) > 0
    assert_valid(result, (image.shape[1], image.shape[0]))


@pytest.mark.parametrize(
    ("family", "changes", "message"),
    [
        ("ssd", {"default_box_aspect_ratios": (), "feature_map_sizes": ()}, "default_box_aspect_ratios"),
        ("ssd", {"default_box_scales": (0.2, -0.35, 0.5, 0.65, 0.8, 0.95, 1.0)}, "default_box_scales"),
        ("ssd", {"default_box_aspect_ratios": ((2, 3),) * 5}, "feature_map_sizes"),
        ("ssd", {"feature_map_sizes": ((20, 0),) * 6}, "feature_map_sizes"),
        ("retinanet", {"anchor_aspect_ratios": ((),) * 5}, "anchor_aspect_ratios"),
        ("retinanet", {"anchor_sizes": ((-32.0,),) * 5}, "anchor_sizes"),
        ("retinanet", {"strides": (8, 16, 32)}, "anchor_sizes"),
        ("retinanet", {"strides": (8, 16, 32, 64, -128)}, "strides"),
    ],
)
def test_impossible_torchvision_anchor_metadata_is_a_metadata_error(family, changes, message):
    properties = _ssd_properties if family == "ssd" else _retinanet_properties
    with pytest.raises(MetadataError, match=message):
        properties(**changes)


def test_torchvision_head_rows_disagreeing_with_the_anchors_are_refused(tmp_path):
    """The anchors of the metadata's configuration must number the head's rows: checked when the model loads
    (static canvas) or at each call (dynamic H/W, the canvas is known then)."""
    outputs = {
        "cls_logits": ((1, 3234, 3), 0.0, np.zeros(1, np.int64), np.zeros(1, np.float32)),
        "bbox_regression": ((1, 3234, 4), 0.0, np.zeros(1, np.int64), np.zeros(1, np.float32)),
    }
    smaller = _ssd_properties(feature_map_sizes=((19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)))
    ssd = stored_head(tmp_path / "ssd.onnx", size=(320, 320), outputs=outputs, metadata=smaller)
    with pytest.raises(IncompatibleModelError, match="3234 anchor rows"):
        Detector(str(ssd), backend="onnxruntime")
    two_ratios = _retinanet_properties(anchor_aspect_ratios=((0.5, 1.0),) * 5)
    retina = pooled_head(tmp_path / "r.onnx", strides=RETINANET_STRIDES, num_classes=2, logit=0.0, metadata=two_ratios)
    with pytest.raises(IncompatibleModelError, match="anchor configuration gives"):
        Detector(str(retina), backend="onnxruntime")(_random(64, 64))


@pytest.mark.parametrize(("family", "keep_ratio"), [("ssd", True), ("retinanet", False)])
def test_torchvision_keep_ratio_they_cannot_honour_is_refused_up_front(family, keep_ratio, torchvision_models):
    """SSD always stretches, RetinaNet always keeps the ratio: another keep_ratio is refused when the detector is
    built or the setting assigned (the old value kept), not at detection time."""
    detector = Detector(torchvision_models[family], backend="onnxruntime")
    with pytest.raises(InvalidArgumentError, match=f"keep_ratio={keep_ratio} is not available for {family}"):
        detector.keep_ratio = keep_ratio
    assert detector.keep_ratio is (not keep_ratio)
    detector.keep_ratio = not keep_ratio  # the one it honours may be stated
    detector.keep_ratio = None
    with pytest.raises(InvalidArgumentError, match="leave keep_ratio unset"):
        Detector(torchvision_models[family], backend="onnxruntime", keep_ratio=keep_ratio)


VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "non-contiguous (strided) view": lambda img: img[::2, ::3],
    "negative strides (flipped)": lambda img: img[::-1, ::-1],
    "Fortran order": np.asfortranarray,
    "read-only": lambda img: _frozen(img),
}


def _frozen(image: np.ndarray) -> np.ndarray:
    image = image.copy()
    image.flags.writeable = False
    return image


@pytest.mark.parametrize("case", list(VIEWS))
def test_array_layouts_equal_a_contiguous_copy(case, detector):
    view = VIEWS[case](cv2.imread(str(IMAGE)))
    result = detector(view)
    assert len(result) > 0
    assert_same(result, detector(np.ascontiguousarray(view)))
    assert_valid(result, (view.shape[1], view.shape[0]))


def test_truncated_jpeg_decodes_what_is_there(tmp_path, detector):
    """OpenCV decodes a truncated JPEG's available rows (grey below), as upstream's cv2.imread does."""
    data = IMAGE.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    full = cv2.imread(str(IMAGE))
    result = detector(path)
    assert_valid(result, (full.shape[1], full.shape[0]))


# ---------------------------------------------------------------------------------------------- model files
def _truncated_onnx(tmp: Path) -> Path:
    path = tmp / "truncated.onnx"
    data = UPSTREAM.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _ir_with_truncated_bin(tmp: Path) -> Path:
    import openvino as ov

    xml = tmp / "model.xml"
    ov.save_model(ov.convert_model(str(UPSTREAM)), str(xml), compress_to_fp16=False)
    weights = xml.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:1000])
    return xml


def _garbage_xml(tmp: Path) -> Path:
    xml = tmp / "garbage.xml"
    xml.write_text("<net><layers><layer id='0' type='Parameter'")
    xml.with_suffix(".bin").write_bytes(b"\0" * 64)
    return xml


def _external_weights(tmp: Path, location: str) -> Path:
    """An ONNX model whose one weight is "external data" at ``location`` (outside the model's folder)."""
    secret = tmp / "secret.bin"
    np.ones(6, np.float32).tofile(secret)
    folder = tmp / "models"
    folder.mkdir(exist_ok=True)
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 3, 1, 1], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location.replace("SECRET", str(secret))), ("offset", "0"), ("length", "24")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["scores"])],
        "external",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, 8, 8])],
        initializer=[weight],
    )
    path = folder / "external.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8), str(path))
    return path


def _fails_at_run(tmp: Path) -> Path:
    """A foreign-layout graph that loads but cannot run on 64x64 (Reshape of 3*64*64 values into rows of 35)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "shape"], ["output"])],
        "reshape",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, "n", 35])],
        initializer=[numpy_helper.from_array(np.array([1, -1, 35], np.int64), "shape")],
    )
    path = tmp / "reshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8), str(path))
    return path


MODEL_ERRORS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...], dict, type[NanoDetError], str]] = {
    # case: (make the file, engines, Detector keywords, error, message fragment)
    "truncated .onnx": (_truncated_onnx, ENGINES, {"num_classes": 3}, ModelLoadError, "cannot load"),
    "IR with truncated .bin": (
        _ir_with_truncated_bin,
        ("openvino",),
        {"num_classes": 3},
        ModelLoadError,
        "cannot load",
    ),
    "IR .xml not well-formed": (_garbage_xml, ("openvino",), {}, ModelLoadError, "cannot load"),
    "external weights at an absolute path": (
        lambda tmp: _external_weights(tmp, "SECRET"),
        ENGINES,
        {},
        ModelLoadError,
        "cannot load",
    ),
    "external weights at ../ outside the model folder": (
        lambda tmp: _external_weights(tmp, "../secret.bin"),
        ENGINES,
        {},
        ModelLoadError,
        "cannot load",
    ),
    "missing boxes output": (
        lambda tmp: fake_detector(tmp / "m.onnx", channels=(3,), output_names=("scores",), metadata=metadata()),
        ENGINES,
        {},
        IncompatibleModelError,
        "names output 'boxes'",
    ),
    "no metadata and two outputs": (
        lambda tmp: fake_detector(tmp / "m.onnx"),
        ENGINES,
        {},
        IncompatibleModelError,
        "no nanodet metadata",
    ),
    "1 kB Loop with a huge trip count (would hang the engine)": (
        lambda tmp: hostile.loop_model(tmp / "loop.onnx"),
        ENGINES,
        {},
        UnsafeModelError,
        "contains 'Loop' .*allow_control_flow=True",
    ),
    "metadata key present twice (engines read different values)": (
        lambda tmp: hostile.duplicate_key_model(tmp / "dup.onnx"),
        ENGINES,
        {"allow_control_flow": True},
        MetadataError,
        "'nanodet.num_classes' 2 times",
    ),
}


@pytest.mark.parametrize("case", list(MODEL_ERRORS))
def test_bad_model_files(case, tmp_path):
    make, engines, kwargs, error, fragment = MODEL_ERRORS[case]
    path = make(tmp_path)
    for engine in engines:
        with pytest.raises(error, match=fragment) as info:
            Detector(path, backend=engine, **kwargs)
        assert "\n" not in str(info.value)  # engines' multi-line C++ messages are folded into one line


def test_external_weights_are_never_opened_by_the_inspector(tmp_path):
    """The inspector reads the .onnx only: an external-data location is never opened (the engines refuse it)."""
    path = _external_weights(tmp_path, "SECRET")
    with never_opened("secret.bin") as seen:
        assert inspect_model(path).op_types == {("", "Conv")}
    assert seen == []


@pytest.mark.parametrize("engine", ENGINES)
def test_model_that_fails_at_run_time(engine, tmp_path):
    """Loads (shapes are symbolic) but the engine fails on the input: a typed error, not the engine's own."""
    det = Detector(_fails_at_run(tmp_path), backend=engine, num_classes=3, input_size=(64, 64))
    with pytest.raises(IncompatibleModelError, match="failed to run the model") as info:
        det(np.zeros((64, 64, 3), np.uint8))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_extra_outputs_are_ignored(engine, tmp_path):
    path = fake_detector(
        tmp_path / "extra.onnx", channels=(3, 32, 5), output_names=("scores", "boxes", "extra"), metadata=metadata()
    )
    result = Detector(path, backend=engine)(np.zeros((30, 40, 3), np.uint8))
    assert len(result) == 0 and result.image_size == (40, 30)


def test_metadata_paths_are_never_opened(tmp_path):
    """Paths in metadata are data, never opened: a class_names path to a valid JSON file is still refused."""
    names = tmp_path / "names-marker.json"
    names.write_text(json.dumps(list(NAMES)))
    props = metadata() | {
        "nanodet.class_names": str(names),
        "nanodet.architecture": json.dumps({"config": str(names), "weights": "file://" + str(names)}),
        "nanodet.producer": str(names),
    }
    bad = fake_detector(tmp_path / "bad.onnx", metadata=props)
    props["nanodet.class_names"] = json.dumps(list(NAMES))
    good = fake_detector(tmp_path / "good.onnx", metadata=props)
    with never_opened("names-marker") as seen:
        for engine in ENGINES:
            with pytest.raises(MetadataError, match="class_names"):
                Detector(bad, backend=engine)
            det = Detector(good, backend=engine)
            assert det.metadata.architecture["config"] == str(names) and len(det(np.zeros((9, 9, 3), np.uint8))) == 0
    assert seen == []


# ---------------------------------------------------------------------------------------------- NaN / inf outputs
def _hostile_outputs() -> tuple[np.ndarray, np.ndarray]:
    """Scores and box logits of a 64x64 model (85 priors, 3 classes, reg_max 7) full of NaN/inf.

    Expected: exactly two detections, prior 2 (score 0.9, class 2, +inf in bin 2 of every side: a 32x32
    box at (16, 0), clipped) and prior 10 (0.7, class 1, all weight on bin 0: a zero-size box at (16, 8)).
    """
    scores = np.zeros((85, 3), np.float32)
    boxes = np.zeros((85, 32), np.float32)
    scores[0, 0] = np.nan
    scores[1, 1] = np.inf  # not a probability: dropped
    scores[4, 0] = -np.inf
    scores[2, 2] = 0.9
    boxes[2].reshape(4, 8)[:, 2] = np.inf
    scores[3, 0] = 0.8
    boxes[3, 5] = np.nan  # undefined box: dropped
    scores[5, 1] = 0.95
    boxes[5, 8:16] = -np.inf  # every bin of a side -inf: uniform (the limit of equal logits)
    scores[10, 1] = 0.7
    boxes[10] = -np.inf
    boxes[10].reshape(4, 8)[:, 0] = 0.0  # zero distances: x1 == x2, y1 == y2
    boxes[20:30] = np.nan  # NaN rows without a candidate score change nothing
    scores[30:40, :] = np.nan
    return scores, boxes


@pytest.mark.parametrize("engine", ENGINES)
def test_nan_and_inf_model_outputs(engine, tmp_path):
    scores, boxes = _hostile_outputs()
    path = constant_outputs_model(tmp_path / "hostile.onnx", scores, boxes, metadata())
    det = Detector(path, backend=engine, score_threshold=0.5, num_threads=1)
    result = det(np.zeros((64, 128, 3), np.uint8))  # stretch: x scale 2, y scale 1
    assert_valid(result, (128, 64))
    np.testing.assert_array_equal(result.scores, np.float32([0.95, 0.9, 0.7]))
    np.testing.assert_array_equal(result.class_ids, [1, 2, 1])
    # prior 5 at (40, 0): every side uniform (zeros, or all -inf), 3.5 * 8 = 28 px: [12, -28, 68, 28] clipped
    np.testing.assert_allclose(result.xyxy, [[24, 0, 128, 28], [0, 0, 64, 16], [32, 8, 32, 8]], atol=1e-4)


def test_extreme_score_logits_of_a_logits_model(tmp_path):
    """``scores_activation="none"``: the runtime's sigmoid of -100 / -inf / +inf logits, without overflow warnings."""
    scores = np.full((85, 3), -100.0, np.float32)
    scores[4, 1] = -np.inf
    scores[2, 0] = np.inf  # the sigmoid's limit: probability 1
    scores[9, 2] = 5.0
    scores[11, 0] = np.nan  # stays NaN: not a candidate
    path = constant_outputs_model(
        tmp_path / "logits.onnx", scores, np.zeros((85, 32), np.float32), metadata(scores_activation="none")
    )
    result = Detector(path, backend="onnxruntime", score_threshold=0.5)(np.zeros((64, 64, 3), np.uint8))
    assert_valid(result, (64, 64))
    np.testing.assert_allclose(result.scores, [1.0, 1 / (1 + np.exp(-5.0))], rtol=1e-6)
    np.testing.assert_array_equal(result.class_ids, [0, 2])


def test_zero_size_detections_are_kept_and_exported(tmp_path):
    """x1 == x2: a valid (degenerate) detection; IoU 0/0 never suppresses, COCO width 0."""
    scores = np.zeros((85, 3), np.float32)
    boxes = np.full((85, 32), -np.inf, np.float32)
    boxes.reshape(85, 4, 8)[:, :, 0] = 0.0  # every box has zero size
    scores[[0, 1, 9], 0] = [0.9, 0.8, 0.7]
    path = constant_outputs_model(tmp_path / "zero.onnx", scores, boxes, metadata())
    result = Detector(path, backend="onnxruntime", score_threshold=0.5)(np.zeros((64, 64, 3), np.uint8))
    np.testing.assert_array_equal(result.xyxy, [[0, 0, 0, 0], [8, 0, 8, 0], [8, 8, 8, 8]])
    assert [row["bbox"][2:] for row in result.to_coco(1)] == [[0.0, 0.0]] * 3


@pytest.mark.parametrize(
    "key, value", [("std", "[NaN, 1, 1]"), ("mean", "[Infinity, 0, 0]"), ("std", "[1e-300, 1, 1]")]
)
def test_non_finite_normalisation_metadata_is_refused(key, value, tmp_path):
    path = fake_detector(tmp_path / "m.onnx", metadata=metadata() | {f"nanodet.{key}": value})
    with pytest.raises(MetadataError):
        Detector(path, backend="onnxruntime")


# ---------------------------------------------------------------------------------------------- nanodet-infer
def _infer(capsys, *argv) -> tuple[int, str, str]:
    code = infer_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_corrupt_model_is_one_line_exit_2(capsys, tmp_path):
    code, _, err = _infer(
        capsys,
        "detect",
        IMAGE,
        "--model",
        _truncated_onnx(tmp_path),
        "--backend",
        "openvino",
        "--num-classes",
        "3",
        "--no-progress",
    )
    assert code == 2
    assert "cannot load" in one_line_error(err, "nanodet-infer")


def test_cli_control_flow_needs_allow_control_flow(capsys, tmp_path):
    """Refused with exit 2 and one line naming the opt-in; with it, the bounded Loop gets past the check (and is
    then refused as what it is, not a detector)."""
    loop = hostile.loop_model(tmp_path / "loop.onnx", trip_count=3)
    code, _, err = _infer(capsys, "detect", IMAGE, "--model", loop, "--backend", "onnxruntime", "--no-progress")
    assert code == 2 and "--allow-control-flow" in one_line_error(err, "nanodet-infer")
    code, _, err = _infer(
        capsys, "detect", IMAGE, "--model", loop, "--backend", "onnxruntime", "--no-progress", "--allow-control-flow"
    )
    assert code == 2 and "no nanodet metadata" in one_line_error(err, "nanodet-infer")


def test_cli_model_failing_at_run_time_is_one_line_exit_2(capsys, tmp_path):
    code, _, err = _infer(
        capsys,
        "detect",
        IMAGE,
        "--model",
        _fails_at_run(tmp_path),
        "--backend",
        "onnxruntime",
        "--num-classes",
        "3",
        "--input-size",
        "64,64",
        "--no-progress",
    )
    assert code == 2
    assert "failed to run the model" in one_line_error(err, "nanodet-infer")


def test_cli_undecodable_image_is_a_warning_and_exit_2(capsys, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    code, out, err = _infer(
        capsys, "detect", empty, IMAGE, "--model", UPSTREAM, "--num-classes", "3", "--no-progress"
    )
    assert code == 2 and "Traceback" not in err
    warning, error = err.strip().splitlines()
    assert warning.startswith("nanodet-infer: warning: ") and "not a decodable image" in warning
    assert error.startswith("nanodet-infer: error: 1 of 2 inputs could not be read")
    assert f"{IMAGE}: 7 detections" in out  # the readable image was still processed


def test_cli_eval_image_entry_without_file_name_is_one_line_exit_2(capsys, tmp_path):
    pytest.importorskip("pycocotools")
    ann = tmp_path / "ann.json"
    dataset = json.loads((SHAPES / "annotations.json").read_text())
    del dataset["images"][1]["file_name"]
    ann.write_text(json.dumps(dataset))
    code, _, err = _infer(
        capsys, "eval", "--model", UPSTREAM, "--num-classes", "3", "--ann", ann, "--images", SHAPES / "images",
        "--no-progress",
    )
    assert code == 2
    assert "has no 'file_name'" in one_line_error(err, "nanodet-infer")


def test_cli_binary_class_names_file_is_one_line_exit_2(capsys, tmp_path):
    names = tmp_path / "names.txt"
    names.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    code, _, err = _infer(capsys, "detect", IMAGE, "--model", UPSTREAM, "--class-names", names, "--no-progress")
    assert code == 2
    assert "not UTF-8" in one_line_error(err, "nanodet-infer")


def test_cli_unicode_class_names(capsys, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("圆形\nrectangle ▭\ntriángulo\n", encoding="utf-8")
    out_json = tmp_path / "out.json"
    code, out, err = _infer(
        capsys,
        "detect",
        IMAGE,
        "--model",
        UPSTREAM,
        "--backend",
        "onnxruntime",
        "--class-names",
        names,
        "--json",
        out_json,
        "--no-progress",
    )
    assert (code, err) == (0, "")
    assert "7 detections (4 圆形, 2 triángulo, 1 rectangle ▭)" in out  # upstream's 7 detections of this image
    assert len(json.loads(out_json.read_text(encoding="utf-8"))) == 7


@pytest.mark.parametrize("content", ["not json at all", '{"images": 3}'])
def test_cli_eval_malformed_annotations_is_one_line_exit_2(content, capsys, tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(content)
    code, _, err = _infer(
        capsys,
        "eval",
        "--model",
        UPSTREAM,
        "--num-classes",
        "3",
        "--ann",
        ann,
        "--images",
        SHAPES / "images",
        "--no-progress",
    )
    assert code == 2
    one_line_error(err, "nanodet-infer")


# ---------------------------------------------------------------------------------------------- nanodet-export
class _CreatesMarker:
    """Unpickling this runs ``open(marker, "w")``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _export(capsys, *argv) -> tuple[int, str, str]:
    from nanodet_export.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _random_zip(tmp: Path) -> Path:
    path = tmp / "random.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a checkpoint")
    return path


def _text(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


EXPORT_ERRORS: dict[str, tuple[Callable[[Path], list], str]] = {
    "--ckpt is an ONNX model": (lambda tmp: ["--ckpt", UPSTREAM], "not a readable PyTorch checkpoint"),
    "--ckpt is a zip that is not a checkpoint": (lambda tmp: ["--ckpt", _random_zip(tmp)], "not a readable PyTorch"),
    "--ckpt is a directory": (lambda tmp: ["--ckpt", tmp], "is not a file"),
    "--class-names not UTF-8": (
        lambda tmp: ["--ckpt", UPSTREAM, "--class-names", _text(tmp, "n.txt", "caf\xe9\n".encode("latin-1"))],
        "UTF-8",
    ),
    "--class-names JSON of numbers": (
        lambda tmp: ["--ckpt", UPSTREAM, "--class-names", _text(tmp, "n.json", b"[1, 2, 3]")],
        "JSON list of strings",
    ),
}


@pytest.mark.parametrize("case", list(EXPORT_ERRORS))
def test_export_bad_inputs(case, capsys, tmp_path):
    build, fragment = EXPORT_ERRORS[case]
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = _export(capsys, *build(tmp_path), "--out", out / "m.onnx")
    assert (code, stdout) == (2, "")
    assert fragment in one_line_error(err, "nanodet-export")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_export_refuses_plain_pickle_that_runs_code(suffix, capsys, tmp_path):
    """A non-zip pickle (``pickle.dump``) whose loading would create a marker file: refused, marker absent."""
    marker = tmp_path / "pwned"
    evil = tmp_path / f"evil{suffix}"
    with evil.open("wb") as handle:
        pickle.dump({"state_dict": {}, "payload": _CreatesMarker(marker)}, handle)
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = _export(capsys, "--ckpt", evil, "--out", out / "m.onnx")
    assert code == 2 and "--trust-checkpoint" in one_line_error(err, "nanodet-export")
    assert not marker.exists() and list(out.iterdir()) == []


def test_read_checkpoint_random_zip(tmp_path):
    from nanodet_models import read_checkpoint

    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(_random_zip(tmp_path))
    with pytest.raises(ModelLoadError, match="is not a file"):
        read_checkpoint(tmp_path)


# ---------------------------------------------------------------------------------------------- checkpoint archives
def _torch_zip(tmp: Path, numel: int = 6) -> Path:
    """A real checkpoint as torch.save writes it (a zip of stored entries under one folder): ``numel`` zeros."""
    import torch

    path = tmp / "small.pth"
    torch.save({"state_dict": {"w": torch.zeros(numel)}}, path)
    return path


def _rezip(source: Path, target: Path, extra: Callable[[zipfile.ZipFile, str], None] | None = None, **kw) -> Path:
    """Copy ``source``'s entries into ``target`` (``kw`` for ``ZipFile``), then let ``extra`` add entries."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", **kw) as new:
        for info in old.infolist():
            with old.open(info) as src, new.open(info.filename, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        if extra is not None:
            extra(new, old.namelist()[0].split("/")[0])
    return target


def _zip_bomb(tmp: Path) -> Path:
    """A checkpoint of 64 MiB of zeros re-zipped with deflate (66 kB): torch.load would inflate all of it."""
    return _rezip(_torch_zip(tmp, 1 << 24), tmp / "bomb.pth", compression=zipfile.ZIP_DEFLATED)


def _entry(name: str) -> Callable[[Path], Path]:
    """The small checkpoint plus an empty entry ``name`` (``{}``: torch's folder), written despite zipfile's warning."""

    def add(archive: zipfile.ZipFile, folder: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Duplicate name"
            archive.writestr(name.format(folder), b"")

    return lambda tmp: _rezip(_torch_zip(tmp), tmp / "odd.pth", add)


def _encrypted(tmp: Path) -> Path:
    """The small checkpoint with the "encrypted" flag set on its first entry in the central directory."""
    path = _torch_zip(tmp)
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")
    data[at + 8] |= 1
    path.write_bytes(bytes(data))
    return path


ARCHIVE_ERRORS: dict[str, tuple[Callable[[Path], Path], str]] = {
    # case: (make the file, message fragment)
    "zip bomb: 66 kB inflating to 64 MiB": (_zip_bomb, "refused before inflating it: it inflates to 64.0 MiB"),
    "entry outside the folder (../)": (_entry("{}/../escape"), "an entry named '{}/../escape'"),
    "absolute entry name": (_entry("/etc/passwd"), "an entry named '/etc/passwd'"),
    "backslash in an entry name": (_entry("{}\\data\\1"), "an entry named"),
    "control character in an entry name": (_entry("{}/data/\x1b[2J"), "an entry named"),
    "entries deeper than 8 levels": (_entry("{}/a/b/c/d/e/f/g/h/i"), "an entry named"),
    "two entries of one name": (_entry("{}/data.pkl"), "two entries of one name"),
    "a second top-level folder": (_entry("other/data.pkl"), "outside one top-level folder"),
    "bzip2-compressed entry": (
        lambda tmp: _rezip(_torch_zip(tmp), tmp / "bz.pth", compression=zipfile.ZIP_BZIP2),
        "compression method 12",
    ),
    "encrypted entry": (_encrypted, "is encrypted"),
    "zip without its directory": (lambda tmp: _text(tmp, "cut.pth", _torch_zip(tmp).read_bytes()[:200]), "without"),
}


@pytest.mark.parametrize("case", list(ARCHIVE_ERRORS))
def test_checkpoint_archives_are_checked_before_torch_reads_them(case, tmp_path, monkeypatch):
    from nanodet_models import checkpoint
    from nanodet_models.nanodet_plus.checkpoint import read_checkpoint

    make, fragment = ARCHIVE_ERRORS[case]
    path = make(tmp_path)

    def never(*args, **kwargs):
        raise AssertionError("torch.load was reached")

    monkeypatch.setattr(checkpoint.torch, "load", never)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert fragment.replace("{}", "small") in str(info.value) and "\n" not in str(info.value)
    assert path.stat().st_size < 100_000


def test_export_refuses_a_zip_bomb_checkpoint(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = _export(capsys, "--ckpt", _zip_bomb(tmp_path), "--out", out / "m.onnx")
    assert code == 2 and "refused before inflating" in one_line_error(err, "nanodet-export")
    assert list(out.iterdir()) == []


def test_archive_limits(tmp_path, monkeypatch):
    """Entry count and (legacy, non-zip) file size caps; a deflated re-zip within the ratio is accepted."""
    import torch
    from nanodet_models import checkpoint
    from nanodet_models.nanodet_plus.checkpoint import read_checkpoint

    small = _torch_zip(tmp_path)
    deflated = _rezip(small, tmp_path / "deflated.pth", compression=zipfile.ZIP_DEFLATED)
    assert read_checkpoint(deflated).state_dict["w"].shape == (6,)
    monkeypatch.setattr(checkpoint, "MAX_ENTRIES", len(zipfile.ZipFile(small).namelist()) - 1)
    with pytest.raises(CheckpointError, match="entries"):
        checkpoint.check_archive(small)
    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": {"w": torch.zeros(2, 3)}}, legacy, _use_new_zipfile_serialization=False)
    checkpoint.check_archive(legacy)
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", legacy.stat().st_size - 1)
    with pytest.raises(CheckpointError, match="limit of a legacy"):
        checkpoint.check_archive(legacy)


def test_zip64_directory_size_is_read_from_the_zip64_record(tmp_path, monkeypatch):
    """A zip64 end record (forced by a lowered zipfile limit, the classic field saturated): its directory size
    is the one bounded."""
    from nanodet_models import checkpoint

    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    path = _rezip(_torch_zip(tmp_path), tmp_path / "zip64.pth")
    data = bytearray(path.read_bytes())
    at = data.rindex(b"PK\x05\x06")
    size = int.from_bytes(data[at + 12 : at + 16], "little")
    data[at + 12 : at + 16] = b"\xff" * 4
    path.write_bytes(bytes(data))
    checkpoint.check_archive(path)
    monkeypatch.setattr(checkpoint, "MAX_CENTRAL_DIRECTORY", 100)
    with pytest.raises(CheckpointError, match=f"zip directory is {size} bytes"):
        checkpoint.check_archive(path)


def test_real_checkpoints_pass_the_archive_check(shared_fixtures):
    from nanodet_models.checkpoint import check_archive

    paths = [*shared_fixtures.rglob("*.pth"), *shared_fixtures.rglob("*.ckpt"), *shared_fixtures.rglob("*.pt")]
    assert len(paths) >= 3
    for path in paths:
        check_archive(path)


UNICODE_NAMES = ["猫 cat", 'café, "quoted"', "🚗"]


@pytest.fixture(scope="session")
def unicode_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export of a seeded 3-class model (shapes config) at 64x64 with unicode class names (JSON list)."""
    import torch
    from nanodet_export.cli import main
    from nanodet_models import build_model, load_config

    tmp = tmp_path_factory.mktemp("unicode")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        ckpt = tmp / "seeded.pth"
        torch.save({"state_dict": build_model(load_config(SHAPES / "config.yml")).state_dict()}, ckpt)
        names = tmp / "names.json"
        names.write_text(json.dumps(UNICODE_NAMES, ensure_ascii=False), encoding="utf-8")
        out = tmp / "unicode.onnx"
        code = main(["--ckpt", str(ckpt), "--out", str(out), "--input-size", "64,64", "--class-names", str(names)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_unicode_class_names_round_trip(engine, unicode_export):
    det = Detector(unicode_export, backend=engine, score_threshold=0.0, num_threads=1)
    assert list(det.metadata.class_names) == UNICODE_NAMES
    result = det(cv2.imread(str(IMAGE)))
    assert len(result) > 0 and set(result.labels) <= set(UNICODE_NAMES)
    assert list(result.class_names) == UNICODE_NAMES
    assert json.loads(json.dumps(result.to_dict(), ensure_ascii=False))["detections"][0]["class_name"] in UNICODE_NAMES
