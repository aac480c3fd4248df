"""``detect`` and ``eval`` run through ``Detector.stream``: exactly the rows, annotated copies and COCO numbers of
one synchronous detector call per image, on both backends; an unreadable file mid-run is skipped, not fatal."""

from __future__ import annotations

import json

import cv2
import pytest
from conftest import SHAPES

from nanodet_infer import Detector
from nanodet_infer.cli import main
from nanodet_infer.cli.drawing import draw_detections
from nanodet_infer.evaluate import category_mapping, coco_stats, load_ground_truth

MODEL = SHAPES / "upstream_export.onnx"
CLASS_NAMES = ("circle", "rectangle", "triangle")
IMAGES = sorted((SHAPES / "images").glob("*.jpg"))[:7]


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def backend(request) -> str:
    return request.param


def _argv(backend: str) -> list[str]:
    return ["--model", str(MODEL), "--backend", backend, "--class-names", ",".join(CLASS_NAMES), "--no-progress"]


def _video(path, frames: int) -> list:
    """An MJPG video of ``frames`` fixture images; the frames as OpenCV decodes them back."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    for index in range(frames):
        writer.write(cv2.resize(cv2.imread(str(IMAGES[index])), (320, 240)))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    decoded = [capture.read()[1] for _ in range(frames)]
    capture.release()
    return decoded


@pytest.mark.parametrize("workers", [None, "3"])
def test_detect_equals_synchronous_calls_and_skips_an_unreadable_file(backend, workers, tmp_path, capsys) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    clip = tmp_path / "clip.avi"
    frames = _video(clip, 4)
    inputs = [*IMAGES[:3], corrupt, *IMAGES[3:], clip]  # the bad file in the middle, more than the read-ahead
    out_json, save_dir = tmp_path / "rows.json", tmp_path / "out"
    extra = [] if workers is None else ["--workers", workers]
    argv = ["detect", *map(str, inputs), *_argv(backend), "--json", str(out_json), "--save-dir", str(save_dir), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    (warning,) = [line for line in err if line.startswith("nanodet-infer: warning:")]
    assert str(corrupt) in warning and warning.endswith("; skipped")
    assert err[-1].startswith(f"nanodet-infer: error: 1 of {len(inputs)} inputs could not be read")

    detector = Detector(MODEL, backend=backend, num_threads=1, class_names=CLASS_NAMES)
    expected, image_id = [], 0
    for path in IMAGES:
        image = cv2.imread(str(path))
        result = detector(image)
        expected += [{**row, "file_name": path.name, "path": str(path)} for row in result.to_coco(image_id)]
        image_id += 1
        ok, encoded = cv2.imencode(".jpg", draw_detections(image, result))
        assert ok and (save_dir / path.name).read_bytes() == encoded.tobytes(), path.name
    for index, frame in enumerate(frames):
        rows = detector(frame).to_coco(image_id)
        expected += [{**row, "file_name": clip.name, "path": str(clip), "frame": index} for row in rows]
        image_id += 1
    assert json.loads(out_json.read_text()) == expected
    assert sorted(p.name for p in save_dir.iterdir()) == sorted([p.name for p in IMAGES] + ["clip.mp4"])


def test_eval_equals_synchronous_calls(backend, tmp_path, capsys) -> None:
    out_json = tmp_path / "stats.json"
    ann = SHAPES / "annotations.json"
    argv = ["eval", *_argv(backend), "--ann", str(ann), "--images", str(SHAPES / "images"), "--json", str(out_json)]
    assert main([*argv, "--workers", "2"]) == 0
    stats = json.loads(out_json.read_text())

    detector = Detector(MODEL, backend=backend, num_threads=1, class_names=CLASS_NAMES)
    for name, value in detector.evaluation_settings.items():
        setattr(detector, name, value)
    gt = load_ground_truth(ann)
    category_ids, _ = category_mapping(CLASS_NAMES, gt)
    rows = []
    for info in gt.loadImgs(sorted(gt.getImgIds())):
        found = detector(str(SHAPES / "images" / info["file_name"]))
        rows += found.to_coco(info["id"], category_ids)
    assert stats["results"] == rows and stats["num_detections"] == len(rows) > 0
    assert {name: stats[name] for name in coco_stats(rows, gt)} == coco_stats(rows, gt)
    assert "mAP" in capsys.readouterr().out


_SLOW_WORKERS = """
import sys, threading, time
from pathlib import Path
from nanodet_infer.cli import arguments, main
marker = Path(sys.argv[1])
make = arguments.make_detector
def slow(args):
    detector = make(args)
    run, calls, lock = detector._backend.run, [], threading.Lock()
    def slow_run(batch):  # from the 4th inference on, each takes 2 s on its worker thread
        with lock:
            calls.append(1)
            late = len(calls) >= 4
        if late:
            marker.touch()
            time.sleep(2)
        return run(batch)
    detector._backend.run = slow_run
    return detector
arguments.make_detector = slow
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_while_workers_infer_keeps_the_rows_so_far(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out, out_json, marker = tmp_path / "out", tmp_path / "rows.json", tmp_path / "started"
    argv = [str(marker), "detect", *map(str, IMAGES), *_argv("onnxruntime"), "--workers", "2", "--save-dir", str(out),
            "--json", str(out_json)]
    process = subprocess.Popen([sys.executable, "-c", _SLOW_WORKERS, *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), process.communicate(timeout=60)
    time.sleep(0.5)  # the main thread now waits for the 4th image's result
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err.strip() == "nanodet-infer: terminated"
    rows = json.loads(out_json.read_text())  # the images done before the signal, in order, numbered from 0
    done = sorted({row["image_id"] for row in rows})
    assert 0 < len(done) < len(IMAGES) and done == list(range(len(done)))
    copies = {p.name for p in out.iterdir()}  # complete annotated copies only: no temporary file is left
    assert copies <= {p.name for p in IMAGES} and {row["file_name"] for row in rows} <= copies


@pytest.mark.parametrize("extra", [["--workers", "0"], ["--workers", "two"], ["--workers", "2", "--ray"]])
def test_bad_workers_option_is_refused(extra, tmp_path, capsys) -> None:
    out_json = tmp_path / "rows.json"
    argv = ["detect", str(IMAGES[0]), *_argv("onnxruntime"), "--json", str(out_json), *extra]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage error
        code = exit_.code
    assert code == 2 and "--workers" in capsys.readouterr().err
    assert not out_json.exists() or json.loads(out_json.read_text()) == []  # no rows: nothing was detected
