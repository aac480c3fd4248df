"""INT8 export (``nanodet-export --int8``): calibration inputs, agreement check, accuracy on the trained fixture.

Accuracy: both formats are calibrated on the 20 annotated fixture images and evaluated on the same 20
(the only annotated images there are); INT8 must stay within 0.5 COCO mAP points of f32 at upstream's
evaluation settings (score 0.05, IoU 0.6, max 100).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import SHAPES
from nanodet_export import export_checkpoint
from nanodet_export import quantize as q
from nanodet_export.cli import main
from nanodet_export.openvino_export import read_properties

from nanodet_infer import Detector
from nanodet_infer.errors import ExportError, ImageReadError, InvalidArgumentError
from nanodet_infer.metadata import ModelMetadata
from nanodet_infer.results import Detections

pytest.importorskip("nncf")
pytest.importorskip("pycocotools")

IMAGES = SHAPES / "images"
ANNOTATIONS = SHAPES / "annotations.json"
CONFIG = SHAPES / "config.yml"
MAX_MAP_DROP = 0.005  # 0.5 mAP points

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes_pth(shared_fixtures: Path) -> Path:
    return shared_fixtures / "shapes-m-256" / "nanodet_model_best.pth"


def _int8(**changes) -> q.Int8Request:
    return q.Int8Request(**{"calib_images": IMAGES, **changes})


# ---------------------------------------------------------------------------------------------- bad input
def _image_folder(folder: Path, count: int, value: int = 0) -> Path:
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((48, 64, 3), value, dtype=np.uint8))
    return folder


@pytest.mark.parametrize(
    ("make", "count", "error", "words"),
    [
        (lambda tmp: tmp / "missing", None, ImageReadError, "does not exist"),
        (lambda tmp: _image_folder(tmp / "empty", 0), None, ImageReadError, "no images"),
        (lambda tmp: _image_folder(tmp / "three", 3), 5, ImageReadError, "holds 3 images, fewer than --calib-count 5"),
        (lambda tmp: _image_folder(tmp / "three", 3), 0, InvalidArgumentError, "positive integer"),
    ],
)
def test_bad_calibration_folder_fails_before_any_work(tmp_path, make, count, error, words):
    folder = make(tmp_path)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    # the checkpoint does not even exist: the calibration folder is checked first
    with pytest.raises(error, match=words):
        export_checkpoint(tmp_path / "no.pth", out, int8=_int8(calib_images=folder, calib_count=count))
    assert list(out.parent.iterdir()) == []


def test_undecodable_calibration_image_is_named(tmp_path):
    folder = _image_folder(tmp_path / "cal", 2)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        q.find_calibration_images(folder, None)


def test_calibration_set_is_sorted_counted_and_digested(tmp_path):
    folder = _image_folder(tmp_path / "cal", 4)
    (folder / "notes.txt").write_text("ignored")
    first = q.find_calibration_images(folder, 2)
    assert [p.name for p in first.paths] == ["000.png", "001.png"]
    assert q.find_calibration_images(folder, 2) == first
    assert q.find_calibration_images(folder, None).sha256 != first.sha256


@pytest.mark.parametrize(
    "argv",
    [
        ["--int8"],
        ["--calib-images", "somewhere"],
        ["--eval-ann", "a.json"],
        ["--format", "openvino", "--fp16", "--int8", "--calib-images", str(IMAGES)],
    ],
)
def test_cli_int8_usage_errors(tmp_path, capsys, argv):
    out = tmp_path / ("m.xml" if "openvino" in argv else "m.onnx")
    assert main(["--ckpt", str(tmp_path / "x.pth"), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("--int8" in err or "--fp16" in err)
    assert list(tmp_path.iterdir()) == []


def test_eval_options_go_together(tmp_path):
    with pytest.raises(InvalidArgumentError, match="go together"):
        export_checkpoint(tmp_path / "no.pth", tmp_path / "m.onnx", int8=_int8(eval_ann=ANNOTATIONS))


# ---------------------------------------------------------------------------------------------- agreement
def _dets(boxes, scores, classes) -> Detections:
    return Detections(
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(scores, dtype=np.float32),
        np.asarray(classes, dtype=np.int64),
        ("a", "b"),
        (100, 100),
    )


def test_agreement_matches_same_class_overlapping_boxes():
    f32 = [_dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [0, 1])]
    int8 = [_dets([[0, 0, 10, 11], [50, 50, 60, 60]], [0.85, 0.8], [0, 0])]  # second one: wrong class
    result = q.agreement(f32, int8)
    assert (result.f32_detections, result.stable, result.int8_detections, result.matched) == (2, 2, 2, 1)
    assert result.mean_iou == pytest.approx(100 / 110)
    assert result.max_score_delta == pytest.approx(0.05, abs=1e-6)
    assert result.matched_fraction == 0.5 and not result.collapsed
    assert not q.check_agreement(result, force=False)


def test_agreement_collapse_fails_unless_forced():
    f32 = [_dets([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.9, 0.8, 0.7], [0, 0, 0])]
    collapsed = q.agreement(f32, [_dets([[0, 0, 10, 10]], [0.9], [0])])
    assert collapsed.collapsed and collapsed.matched_fraction == pytest.approx(1 / 3)
    with pytest.raises(ExportError, match="33% of the stable f32 detections"):
        q.check_agreement(collapsed, force=False)
    assert q.check_agreement(collapsed, force=True)
    nothing = q.agreement([_dets([], [], [])], [_dets([], [], [])])
    assert nothing.stable == 0
    assert nothing.collapsed and np.isnan(nothing.mean_iou)
    with pytest.raises(ExportError, match="detects nothing"):
        q.check_agreement(nothing, force=False)


def test_agreement_judges_only_detections_stable_under_one_grey_level():
    f32 = [_dets([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], [0.9, 0.8, 0.7, 0.6], [0] * 4)]
    # the f32 model itself loses the last two under a one-grey-level change: near-ties, not judged
    perturbed = [_dets([[0, 0, 10, 10], [20, 20, 30, 31]], [0.9, 0.8], [0, 0])]
    int8 = [_dets([[0, 0, 10, 10]], [0.9], [0])]
    result = q.agreement(f32, int8, perturbed=perturbed)
    assert (result.f32_detections, result.stable, result.matched) == (4, 2, 1)
    assert result.matched_fraction == 0.5 and not result.collapsed
    assert q.agreement(f32, int8).collapsed  # judged on all four: 25 %
    # INT8 that loses every stable detection is refused, whatever the unstable ones do
    lost = q.agreement(f32, [_dets([[40, 40, 50, 50], [60, 60, 70, 70]], [0.7, 0.6], [0, 0])], perturbed=perturbed)
    assert lost.collapsed and lost.matched == 0
    with pytest.raises(ExportError, match="0% of the stable f32 detections"):
        q.check_agreement(lost, force=False)
    unstable = q.agreement(f32, f32, perturbed=[_dets([], [], [])])
    assert unstable.collapsed and unstable.stable == 0
    with pytest.raises(ExportError, match="one-grey-level change"):
        q.check_agreement(unstable, force=False)


def test_perturb_image_changes_each_value_by_at_most_one_grey_level():
    image = np.array([[0, 128, 255]] * 50, dtype=np.uint8)
    changed = q.perturb_image(image, 3)
    assert changed.dtype == np.uint8 and changed.shape == image.shape
    assert np.abs(changed.astype(int) - image).max() == 1 and (changed != image).any()
    assert np.array_equal(changed, q.perturb_image(image, 3))


# ---------------------------------------------------------------------------------------------- trained fixture
@pytest.fixture(scope="module")
def int8_exports(shapes_pth, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("int8")
    request = _int8(eval_ann=ANNOTATIONS, eval_images=IMAGES)
    return {
        fmt: export_checkpoint(shapes_pth, out / f"shapes_int8{suffix}", config=CONFIG, fmt=fmt, int8=request)
        for fmt, suffix in (("onnx", ".onnx"), ("openvino", ".xml"))
    }


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_export_accuracy_and_metadata(int8_exports, fmt):
    report = int8_exports[fmt]
    stats = report.int8.mean_ap
    assert stats["f32"]["mAP"] == pytest.approx(0.69937, abs=1e-4)  # = upstream's mAP on these 20 images
    assert stats["int8"]["mAP"] - stats["f32"]["mAP"] >= -MAX_MAP_DROP
    if fmt == "openvino":
        assert abs(stats["bf16"]["mAP"] - stats["f32"]["mAP"]) <= MAX_MAP_DROP
    agreement = report.int8.agreement
    assert agreement.images == 20 and agreement.matched_fraction >= 0.9 and not report.int8.forced
    if fmt == "onnx":
        graph = onnx.load(str(report.path))
        props = {p.key: p.value for p in graph.metadata_props}
        assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.graph.node}
    else:
        props = read_properties(report.path)
        assert "FakeQuantize" in report.path.read_text()
    meta = ModelMetadata.from_properties(props)
    assert meta == report.metadata and meta.precision == "int8"
    assert meta.calibration["count"] == 20 and meta.calibration["sha256"] == report.int8.calibration.sha256
    assert len(meta.calibration["float_layers"]) >= 4  # the head's class/box convs stay float


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize(("fmt", "backends"), [("onnx", ("onnxruntime", "openvino")), ("openvino", ("openvino",))])
def test_detector_runs_int8_files(int8_exports, fmt, backends):
    image = cv2.imread(str(IMAGES / "val_00003.jpg"))
    # "auto": OpenVINO, except for a QDQ ONNX file, whose calibration is ONNX Runtime's
    assert Detector(int8_exports[fmt].path).backend_name == backends[0]
    for backend in backends:
        detector = Detector(int8_exports[fmt].path, backend=backend, num_threads=1)
        assert detector.metadata.precision == "int8"
        found = detector(image)
        assert len(found) > 0 and found.image_size == (image.shape[1], image.shape[0])


@pytest.mark.slow
@pytest.mark.shared
def test_black_calibration_is_refused_and_forced(shapes_pth, tmp_path):
    black = _image_folder(tmp_path / "black", 3)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    with pytest.raises(ExportError, match="detects nothing on the calibration images"):
        export_checkpoint(shapes_pth, out, config=CONFIG, int8=_int8(calib_images=black))
    assert list(out.parent.iterdir()) == []
    report = export_checkpoint(shapes_pth, out, config=CONFIG, int8=_int8(calib_images=black, force=True))
    assert report.int8.forced and report.int8.agreement.collapsed and out.is_file()


@pytest.mark.slow
@pytest.mark.shared
def test_interrupted_calibration_leaves_no_file(shapes_pth, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(q, "quantize_onnx", interrupt)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(shapes_pth, out, config=CONFIG, int8=_int8(calib_count=2))
    assert list(out.parent.iterdir()) == []
