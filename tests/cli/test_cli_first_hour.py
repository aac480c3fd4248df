"""What a new user trips over first: abbreviations, wrong option names, a checkpoint as --model, bench's
default backend and engine label, labels at the image edge, detect's display defaults, background labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHAPES

from nanodet_infer.cli import main
from nanodet_infer.cli.drawing import draw_detections, label_origin
from nanodet_infer.results import Detections, foreground

MODEL = str(SHAPES / "upstream_export.onnx")
IMAGES = SHAPES / "images"
FOREIGN = ["--model", MODEL, "--backend", "onnxruntime", "--class-names", "circle,rectangle,triangle"]


def test_abbreviated_option_is_refused_with_the_full_name(capsys) -> None:
    assert main(["detect", str(IMAGES), *FOREIGN, "--score", "0.5", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unrecognized arguments: --score 0.5" in err
    assert "did you mean --score-threshold?" in err
    assert len(err.splitlines()) == 1


def test_out_suggests_json_and_save_dir(capsys, tmp_path) -> None:
    assert main(["detect", str(IMAGES), *FOREIGN, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "--out: did you mean --json / --save-dir?" in err
    assert "usage:" not in err
    assert not (tmp_path / "r.json").exists()


def test_export_cli_refuses_abbreviations(capsys) -> None:
    from nanodet_export.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--ckpt", "a.pth", "--ou", "m.onnx"])
    assert "required: --out" in capsys.readouterr().err  # --ou is not taken as --out


@pytest.mark.parametrize("suffix", [".pth", ".ckpt", ".pt"])
def test_checkpoint_as_model_says_export_it_first(tmp_path, capsys, suffix) -> None:
    checkpoint = tmp_path / f"model_best{suffix}"
    checkpoint.write_bytes(b"PK\x03\x04 not a model")
    assert main(["detect", str(IMAGES), "--model", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "is a training checkpoint" in err
    assert f"nanodet-export --ckpt model_best{suffix}" in err


def test_xml_on_onnxruntime_names_the_flag(tmp_path, capsys) -> None:
    model = tmp_path / "m.xml"
    model.write_text("<net/>")
    assert main(["detect", str(IMAGES), "--model", str(model), "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert "--backend openvino" in err


def test_bench_default_backend_is_auto_and_names_the_engine(tmp_path, capsys) -> None:
    out = tmp_path / "b.json"
    assert main(["bench", "--model", MODEL, "--iters", "2", "--warmup", "0", "--no-progress", "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["backend"] in ("openvino", "onnxruntime")  # auto, resolved; not the literal "auto"
    assert row["engine"] == f"{row['backend']} f32"
    with pytest.raises(SystemExit) as stop:  # abbreviations are refused here too
        main(["bench", "--model", MODEL, "--iter", "2"])
    assert stop.value.code == 2


def test_bench_labels_an_int8_model_int8(tmp_path) -> None:
    from nanodet_infer.bench import engine_label

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s"], ["y"])],
        "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])],
    )
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph), path)
    assert engine_label(path, "onnxruntime", "f32") == "onnxruntime int8"
    assert engine_label(SHAPES / "upstream_export.onnx", "openvino", "bf16") == "openvino bf16"


@pytest.mark.parametrize(
    ("corner", "expected"),
    [((10, 30), (10, 18)),      # room above the box: above it
     ((10, 5), (10, 5)),        # no room above: inside the box, below its top edge
     ((95, 30), (60, 18)),      # at the right edge: shifted left, whole label inside
     ((10, 99), (10, 87)),      # near the bottom: above the corner
     ((10, 0), (10, 0))],       # at the top edge: below it
)
def test_label_lies_inside_the_image(corner, expected) -> None:
    assert label_origin(corner, (40, 12), (100, 100)) == expected


def test_drawn_label_is_not_cut_at_the_right_edge() -> None:
    image = np.zeros((60, 200, 3), np.uint8)
    found = Detections(np.array([[185, 20, 199, 50]], np.float32), np.array([0.9], np.float32), np.array([0]),
                       ("rectangle",), (200, 60))
    drawn = draw_detections(image, found)
    filled = np.flatnonzero(drawn[:, :, :].any(axis=(0, 2)))
    assert filled.min() < 185 - 40  # the label box was moved left to fit "rectangle 0.90"


def test_background_is_never_a_detect_label() -> None:
    found = Detections(np.array([[0, 0, 5, 5], [1, 1, 6, 6]], np.float32), np.array([0.9, 0.8], np.float32),
                       np.array([0, 1]), ("__background__", "person"), (10, 10))
    assert foreground(found).labels == ["person"]


def test_torchvision_detect_default_is_not_the_evaluation_threshold() -> None:
    from nanodet_infer.families import get_family

    ssd = get_family("ssd")

    class Meta:
        score_thresh, nms_thresh, detections_per_img = 0.001, 0.55, 300

    assert ssd.evaluation_settings(Meta)["score_threshold"] == 0.001
    assert ssd.display_settings(Meta)["score_threshold"] == 0.5
    assert ssd.display_settings(Meta)["iou_threshold"] == 0.55
    assert get_family("nanodet-plus").display_settings(None)["score_threshold"] == 0.35


@pytest.fixture(scope="module")
def renamed_model(tmp_path_factory) -> str:
    """The upstream shapes model with our metadata, its classes misnamed ``a, b, c``."""
    import onnx

    from nanodet_infer import Detector

    model = onnx.load(MODEL)
    meta = Detector(MODEL, backend="onnxruntime", class_names=["a", "b", "c"]).metadata  # what the file lacks
    for key, value in meta.to_properties().items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path_factory.mktemp("renamed") / "m.onnx"
    onnx.save(model, path)
    return str(path)


def test_eval_hint_to_give_class_names_works_on_a_model_with_metadata(renamed_model, capsys) -> None:
    ann, options = str(SHAPES / "annotations.json"), ["--backend", "onnxruntime", "--no-progress"]
    assert main(["eval", "--model", renamed_model, "--ann", ann, "--images", str(IMAGES), *options]) == 2
    assert "--class-names" in capsys.readouterr().err
    assert main(["eval", "--model", renamed_model, "--ann", ann, "--images", str(IMAGES), *options,
                 "--class-names", "circle,rectangle,triangle"]) == 0
    assert float(capsys.readouterr().out.split("mAP")[1].split()[0]) > 0.5


def test_class_names_rename_detections_and_must_count_the_classes(renamed_model, capsys) -> None:
    from nanodet_infer import Detector
    from nanodet_infer.errors import InvalidArgumentError

    found = Detector(renamed_model, backend="onnxruntime", class_names=["circle", "rectangle", "triangle"],
                     score_threshold=0.3)(IMAGES / "val_00000.jpg")
    assert len(found) and set(found.labels) <= {"circle", "rectangle", "triangle"}
    with pytest.raises(InvalidArgumentError, match="2 class names were given but the model has 3 classes"):
        Detector(renamed_model, backend="onnxruntime", class_names=["circle", "rectangle"])
    with pytest.raises(InvalidArgumentError, match="class_names may be"):
        Detector(renamed_model, backend="onnxruntime", num_classes=3)


@pytest.mark.parametrize(("size", "num_classes"), [((128, 96), 80), (None, 80), ((128, 96), 3)])
def test_foreign_yolov7_layout_names_its_family(tmp_path, capsys, size, num_classes) -> None:
    """A YOLOv7 ONNX without metadata, read as the default family, gets told to say --model-family yolov7
    (static H/W: when the model loads; dynamic: at the first image)."""
    from _tiny_models import tiny_yolov7

    path = tiny_yolov7(tmp_path / "y7.onnx", size=size, num_classes=num_classes)
    image = tmp_path / "i.jpg"
    import cv2

    cv2.imwrite(str(image), np.zeros((96, 128, 3), np.uint8))
    code = main(["detect", str(image), "--model", str(path), "--backend", "onnxruntime", "--input-size", "128,96",
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "is the layout of a YOLOv7 model at 128x96: give --model-family yolov7" in err
    assert main(["detect", str(image), "--model", str(path), "--backend", "onnxruntime", "--input-size", "128,96",
                 "--model-family", "yolov7", "--no-progress"]) == 0
