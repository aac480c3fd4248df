"""YOLOv7 export: the ONNX / OpenVINO file against upstream's deploy outputs, metadata, family choice.

Tolerance against the fixtures' ``deploy`` rows (upstream's fp32 PyTorch deploy model) for the exported
file: boxes ``|Δ| <= 2e-4 x max(1, |reference|)`` px, obj/class probabilities ``|Δ| <= 5e-4``. Measured
on the 3 fixtures x 3 images: boxes <= 0.0121 px (relative 1.04e-4, yolov7-w6-aux-s val_00000), probabilities
<= 2.6e-4 (onnxruntime); OpenVINO f32 <= 0.0106 px / 2.1e-4. Our PyTorch deploy model itself is
bit-identical to upstream's (tests/families/yolov7/test_yolov7_models.py): the rest is the engines' float32 rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _yolov7 import FIXTURES, STEMS, fixture_input, save_upstream_checkpoint, seeded, small_yaml
from conftest import SHAPES
from nanodet_export import export_checkpoint
from nanodet_export.cli import main
from nanodet_export.families import EXPORT_ADAPTERS, recognise
from nanodet_models import build_model, load_config
from nanodet_models.yolov7 import YOLOv7

from nanodet_infer.errors import CheckpointError, InvalidArgumentError
from nanodet_infer.metadata import KEY_PREFIX, ModelMetadata

BOX_TOLERANCE, PROBABILITY_TOLERANCE = 2e-4, 5e-4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _properties(path: Path) -> dict[str, str]:
    return {p.key[len(KEY_PREFIX) :]: p.value for p in onnx.load(str(path)).metadata_props}


def _assert_matches_fixture(outputs: np.ndarray, ref: np.lib.npyio.NpzFile) -> None:
    got, want = outputs[0][ref["index"]].astype(np.float64), ref["deploy"]
    boxes = np.abs(got[:, :4] - want[:, :4]) / np.maximum(1.0, np.abs(want[:, :4]))
    assert boxes.max() <= BOX_TOLERANCE
    assert np.abs(got[:, 4:] - want[:, 4:]).max() <= PROBABILITY_TOLERANCE


@pytest.mark.parametrize("name", FIXTURES)
def test_onnx_matches_upstream_deploy_outputs(shared_fixtures: Path, tmp_path: Path, name: str) -> None:
    import onnxruntime as ort

    folder = shared_fixtures / name
    out = tmp_path / f"{name}.onnx"
    report = export_checkpoint(folder / f"{name}.pt", out)
    assert report.family == "yolov7" and report.used_ema
    assert report.input_shape == ["batch", 3, "height", "width"]
    assert report.output_shapes == {"output": ["batch", "priors", 85]}
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for stem in STEMS:  # each image has its own letterboxed H, W: the dynamic-H/W graph serves them all
        _assert_matches_fixture(
            session.run(["output"], {"images": fixture_input(folder, stem)})[0], np.load(folder / f"{stem}_pred.npz")
        )

    meta = json.loads((folder / "meta.json").read_text())
    props = _properties(out)
    assert props["schema_version"] == "2" and props["model_family"] == "yolov7"
    assert json.loads(props["strides"]) == meta["strides"]
    assert json.loads(props["anchors"]) == meta["anchors_pixels"]
    assert json.loads(props["class_names"])[:2] == ["person", "bicycle"]
    assert json.loads(props["mean"]) == [0, 0, 0] and json.loads(props["std"]) == [255, 255, 255]
    assert props["channel_order"] == "RGB" and props["letterbox_color"] == "114"
    assert props["predictions_output"] == "output" and props["input_name"] == "images"
    assert json.loads(props["input_size"]) == [640, 640] and props["dynamic_hw"] == "true"
    assert props["source_sha256"] == report.metadata.source_sha256


@pytest.mark.slow
def test_openvino_matches_upstream_deploy_outputs(shared_fixtures: Path, tmp_path: Path) -> None:
    import openvino as ov

    folder = shared_fixtures / "yolov7-w6-aux-s"
    out = tmp_path / "w6.xml"
    report = export_checkpoint(folder / "yolov7-w6-aux-s.pt", out, fmt="openvino")
    assert report.aux_params_dropped > 0
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(out)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for stem in STEMS:
        result = compiled({"images": fixture_input(folder, stem)})[compiled.output("output")]
        _assert_matches_fixture(result, np.load(folder / f"{stem}_pred.npz"))


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upstream-format checkpoint (pickled modules, fp16) of a small yolov7-tiny."""
    path = tmp_path_factory.mktemp("y7") / "tiny.pt"
    model = seeded(YOLOv7(small_yaml()))
    save_upstream_checkpoint(path, model, model)
    return path


@pytest.fixture(scope="module")
def nanodet_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("nd") / "seeded.pth"
    torch.save({"state_dict": build_model(load_config(SHAPES / "config.yml")).state_dict()}, path)
    return path


def test_family_is_recognised_from_content(small_ckpt: Path, nanodet_pth: Path, tmp_path: Path) -> None:
    assert list(EXPORT_ADAPTERS) == ["nanodet-plus", "yolov7", "ssd", "retinanet", "detr"]
    assert recognise(small_ckpt) == "yolov7"
    assert recognise(nanodet_pth) == "nanodet-plus"
    report = export_checkpoint(small_ckpt, tmp_path / "t.onnx", input_size=(128, 96), dynamic=False)
    assert report.family == "yolov7" and report.input_shape == [1, 3, 96, 128]
    assert report.output_shapes == {"output": [1, 3 * (16 * 12 + 8 * 6 + 4 * 3), 8]}
    assert report.max_abs_diff["output[xywh]"] <= report.tolerance["output[xywh]"]
    assert _properties(report.path)["class_names"] == json.dumps(["class0", "class1", "class2"])


def test_forcing_the_wrong_family_is_a_clear_error(small_ckpt: Path, nanodet_pth: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(CheckpointError, match="is a yolov7 checkpoint, not nanodet-plus; drop --family"):
        export_checkpoint(small_ckpt, tmp_path / "a.onnx", family="nanodet-plus")
    assert main(["--ckpt", str(nanodet_pth), "--out", str(tmp_path / "b.onnx"), "--family", "yolov7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a nanodet-plus checkpoint, not yolov7" in err
    assert not list(tmp_path.iterdir())


def test_nanodet_only_options_are_refused_for_yolov7(small_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="--preset does not apply to yolov7"):
        export_checkpoint(small_ckpt, tmp_path / "a.onnx", preset="nanodet-plus-m_320")
    with pytest.raises(InvalidArgumentError, match="not a multiple of 32.*--input-size 128,96"):
        export_checkpoint(small_ckpt, tmp_path / "a.onnx", input_size=(120, 100))
    with pytest.raises(InvalidArgumentError, match="2 class names given for a model with 3 classes"):
        export_checkpoint(small_ckpt, tmp_path / "a.onnx", class_names=["a", "b"])


def test_upstream_checkpoints_are_recognised(shared_fixtures: Path) -> None:
    cases = {
        "plus-m-320/model_best.ckpt": "nanodet-plus",
        "shapes-m-256/nanodet_model_best.pth": "nanodet-plus",
        **{f"{name}/{name}.pt": "yolov7" for name in FIXTURES},
        "tv-ssdlite320/model.pth": "ssd",  # torchvision state dicts: the ssd / retinanet adapters
        "tv-retinanet-r50/model_fp16.pth": "retinanet",
    }
    assert {path: recognise(shared_fixtures / path) for path in cases} == cases


def test_metadata_reads_back_through_the_runtime_schema(small_ckpt: Path, tmp_path: Path) -> None:
    """The export writes the runtime's own schema: ``ModelMetadata`` with the ``yolov7`` section."""
    report = export_checkpoint(small_ckpt, tmp_path / "t.onnx", input_size=(128, 96))
    meta = ModelMetadata.from_properties({p.key: p.value for p in onnx.load(str(report.path)).metadata_props})
    assert meta == report.metadata and meta.model_family == "yolov7" and meta.letterbox_color == 114
