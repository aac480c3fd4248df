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
