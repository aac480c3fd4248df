"""``nanodet-infer detect`` on images, folders and videos; errors; no torch on the CLI's import path."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest
from conftest import SHAPES

from nanodet_infer.cli import main

MODEL = str(SHAPES / "upstream_export.onnx")
IMAGES = SHAPES / "images"
FOREIGN = ["--model", MODEL, "--backend", "onnxruntime", "--class-names", "circle,rectangle,triangle"]


def test_detect_folder_writes_annotated_images_and_coco_json(tmp_path, capsys) -> None:
    out_json = tmp_path / "results.json"
    code = main(["detect", str(IMAGES), *FOREIGN, "--save-dir", str(tmp_path / "out"), "--json", str(out_json)])
    assert code == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(p.name for p in IMAGES.glob("*.jpg"))
    assert cv2.imread(str(tmp_path / "out" / "val_00000.jpg")).shape == cv2.imread(str(IMAGES / "val_00000.jpg")).shape
    rows = json.loads(out_json.read_text())
    assert {row["file_name"] for row in rows} <= set(written)
    assert all(set(row) >= {"image_id", "category_id", "bbox", "score"} and row["score"] > 0.35 for row in rows)
    # the best detection of val_00000 is upstream's best (upstream demo, same image, same model)
    upstream = json.loads((SHAPES / "detections_upstream.json").read_text())["images"][0]["detections"][0]
    first = max((r for r in rows if r["file_name"] == "val_00000.jpg"), key=lambda r: r["score"])
    x1, y1, x2, y2 = upstream["bbox"]
    assert first["category_id"] == upstream["label"]
    assert first["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-2)
    assert first["score"] == pytest.approx(upstream["score"], abs=1e-4)
    assert "20 images/frames" in capsys.readouterr().out


def test_detect_video(tmp_path) -> None:
    video = tmp_path / "clip.avi"
    frames = [cv2.resize(cv2.imread(str(p)), (320, 240)) for p in sorted(IMAGES.glob("*.jpg"))[:4]]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    for frame in frames:
        writer.write(frame)
    writer.release()
    out_json = tmp_path / "video.json"
    code = main(["detect", str(video), *FOREIGN, "--save-dir", str(tmp_path / "out"), "--json", str(out_json),
                 "--no-progress"])
    assert code == 0
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    capture.release()
    rows = json.loads(out_json.read_text())
    assert rows and {row["frame"] for row in rows} <= set(range(len(frames)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["detect", "no/such/dir", *FOREIGN], "no such file or folder"),
        (["detect", str(IMAGES), "--model", "missing.onnx"], "missing.onnx"),
        (["eval", *FOREIGN, "--ann", "missing.json", "--images", str(IMAGES)], "annotation file not found"),
    ],
)
def test_errors_are_one_line_with_exit_2(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nanodet-infer: error:") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_verbose_shows_the_exception() -> None:
    from nanodet_infer.errors import ImageReadError

    with pytest.raises(ImageReadError):
        main(["detect", "no/such/dir", *FOREIGN, "--verbose"])


def test_cli_does_not_import_torch(tmp_path) -> None:
    script = (
        "import sys\nfrom nanodet_infer.cli import main\n"
        f"code = main({['detect', str(IMAGES / 'val_00000.jpg'), *FOREIGN, '--no-progress']!r})\n"
        "assert code == 0, code\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------- robustness
def _stderr_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()


@pytest.mark.parametrize(("name", "written"), [("PHOTO", "PHOTO.jpg"), ("photo.dat", "photo.dat.jpg"),
                                              ("photo.png", "photo.png")])
def test_annotated_image_without_a_writable_suffix_is_saved_as_jpg(tmp_path, name, written) -> None:
    photo = tmp_path / name
    photo.write_bytes((IMAGES / "val_00000.jpg").read_bytes())
    out = tmp_path / "out"
    assert main(["detect", str(photo), *FOREIGN, "--save-dir", str(out), "--no-progress"]) == 0
    assert [p.name for p in out.iterdir()] == [written]
    assert cv2.imread(str(out / written)).shape == cv2.imread(str(photo)).shape


def test_binary_class_names_file_is_one_line_exit_2(tmp_path, capsys) -> None:
    names = tmp_path / "names.txt"
    names.write_bytes(bytes(range(256)))
    argv = ["detect", str(IMAGES / "val_00000.jpg"), "--model", MODEL, "--class-names", str(names)]
    assert main(argv) == 2
    (line,) = _stderr_lines(capsys)
    assert line.startswith("nanodet-infer: error:") and "not UTF-8" in line


def test_unreadable_files_are_skipped_with_a_warning_and_exit_2(tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    good = sorted(IMAGES.glob("*.jpg"))[:3]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "a_corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "b_empty.png").write_bytes(b"")
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"garbage")
    out_json = tmp_path / "rows.json"
    argv = ["detect", str(folder), str(video), *FOREIGN, "--save-dir", str(tmp_path / "out"), "--json", str(out_json),
            "--no-progress"]
    assert main(argv) == 2
    lines = _stderr_lines(capsys)
    warnings = [line for line in lines if line.startswith("nanodet-infer: warning:")]
    assert len(warnings) == 3 and all(line.endswith("skipped") for line in warnings)
    assert any("a_corrupt.jpg" in w for w in warnings) and any("broken.mp4" in w for w in warnings)
    assert lines[-1].startswith("nanodet-infer: error: 3 of 6 inputs could not be read")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in good]
    assert {row["file_name"] for row in json.loads(out_json.read_text())} == {p.name for p in good}


def test_help_documents_skipping_and_exit_status(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status is then 2" in text and "gets .jpg appended" in text and "atomically" in text


class _FailingDetector:
    """Wraps a detector; the ``fail_at``-th image of its streams raises like a model failing at run time."""

    def __init__(self, detector, fail_at: int) -> None:
        self.detector, self.fail_at, self.calls = detector, fail_at, 0

    def stream(self, images, workers=None):
        for result in self.detector.stream(images, workers=workers):
            self.calls += 1
            if self.calls == self.fail_at:
                from nanodet_infer.errors import IncompatibleModelError

                raise IncompatibleModelError("simulated failure at run time")
            yield result


def _fail_at(monkeypatch, call: int) -> None:
    from nanodet_infer.cli import arguments

    make = arguments.make_detector
    monkeypatch.setattr(arguments, "make_detector", lambda args: _FailingDetector(make(args), call))


def test_json_is_written_when_the_run_stops_on_an_error(tmp_path, capsys, monkeypatch) -> None:
    _fail_at(monkeypatch, 3)
    out_json = tmp_path / "rows.json"
    out_json.write_text("old content")
    argv = ["detect", str(IMAGES), *FOREIGN, "--json", str(out_json), "--overwrite", "--no-progress"]
    assert main(argv) == 2
    (line,) = _stderr_lines(capsys)
    assert "simulated failure" in line
    rows = json.loads(out_json.read_text())
    assert rows and {row["file_name"] for row in rows} == {"val_00000.jpg", "val_00001.jpg"}
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # no temporary file left


def test_write_json_is_atomic(tmp_path) -> None:
    from nanodet_infer.paths import write_json

    target = tmp_path / "sub" / "out.json"
    target.parent.mkdir()
    write_json(target, [{"a": 1}])
    assert json.loads(target.read_text()) == [{"a": 1}]
    with pytest.raises(TypeError):
        write_json(target, [{"a": 2}, {"b": object()}])  # fails half-way through serialising
    assert json.loads(target.read_text()) == [{"a": 1}]
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_video_failing_mid_way_leaves_no_partial_mp4(tmp_path, capsys, monkeypatch) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (128, 96))
    for path in sorted(IMAGES.glob("*.jpg"))[:4]:
        writer.write(cv2.resize(cv2.imread(str(path)), (128, 96)))
    writer.release()
    _fail_at(monkeypatch, 3)
    out = tmp_path / "out"
    out_json = tmp_path / "rows.json"
    argv = ["detect", str(video), *FOREIGN, "--save-dir", str(out), "--json", str(out_json), "--no-progress"]
    assert main(argv) == 2
    assert "simulated failure" in _stderr_lines(capsys)[-1]
    assert list(out.iterdir()) == []
    assert {row["frame"] for row in json.loads(out_json.read_text())} <= {0, 1}


# ---------------------------------------------------------------------------------------------- shared formats
def test_one_w_h_parser_for_both_command_lines() -> None:
    from nanodet_infer.cli.arguments import parse_size
    from nanodet_infer.errors import InvalidArgumentError

    assert pytest.importorskip("nanodet_export.cli").parse_size is parse_size  # the exporter needs torch
    assert parse_size("320,192") == parse_size("320x192") == parse_size(" 320 , 192 ") == (320, 192)
    for text in ("320", "0,5", "-1,5", "a,b", "1,2,3", ""):
        with pytest.raises(InvalidArgumentError, match="is not W,H"):
            parse_size(text)


def test_one_class_names_file_format_for_both_command_lines(tmp_path) -> None:
    from nanodet_infer.cli.arguments import class_names_option, read_class_names_file
    from nanodet_infer.errors import InvalidArgumentError

    assert pytest.importorskip("nanodet_export.cli").read_class_names_file is read_class_names_file
    lines, listed, empty, numbers = (tmp_path / n for n in ("lines.txt", "list.json", "empty.txt", "numbers.json"))
    lines.write_text(" cat \n\ndog, big\n")
    listed.write_text('["cat", "dog, big"]')
    empty.write_text("\n \n")
    numbers.write_text("[1, 2]")
    assert read_class_names_file(lines) == read_class_names_file(listed) == ("cat", "dog, big")
    assert class_names_option(str(lines)) == ("cat", "dog, big") and class_names_option("cat, dog") == ("cat", "dog")
    with pytest.raises(InvalidArgumentError, match="names no class"):
        read_class_names_file(empty)
    with pytest.raises(InvalidArgumentError, match="JSON list of strings"):
        read_class_names_file(numbers)


def test_unset_model_options_take_the_family_defaults() -> None:
    from nanodet_infer.cli import arguments
    from nanodet_infer.families import get_family

    args = arguments.build_parser().parse_args(["detect", "x.jpg", *FOREIGN])
    det = arguments.make_detector(args)
    assert {name: getattr(det, name) for name in get_family("nanodet-plus").default_settings} == {
        "score_threshold": 0.35, "iou_threshold": 0.6, "max_detections": 100, "multi_label": True,
    }
    argv = ["detect", "x.jpg", *FOREIGN, "--single-label", "--iou-threshold", "0.5", "--model-family", "nanodet-plus"]
    det = arguments.make_detector(arguments.build_parser().parse_args(argv))
    assert (det.multi_label, det.iou_threshold, det.metadata.model_family) == (False, 0.5, "nanodet-plus")
    evaluate = arguments.build_parser().parse_args(["eval", *FOREIGN, "--ann", "a.json", "--images", "."])
    assert evaluate.score_threshold is None and evaluate.iou_threshold is None
    det = arguments.make_detector(evaluate, evaluation=True)  # upstream's evaluator settings
    assert {name: getattr(det, name) for name in get_family("nanodet-plus").default_settings} == {
        "score_threshold": 0.05, "iou_threshold": 0.6, "max_detections": 100, "multi_label": True,
    }


def test_unknown_model_family_is_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["detect", str(IMAGES), *FOREIGN, "--model-family", "yolo"])
    assert caught.value.code == 2 and "invalid choice: 'yolo'" in capsys.readouterr().err
