"""Reliability round 3, command line: decoder bombs and over-long names are one warning / a shortened name and the
run goes on; videos without frames or with frames of changing size; Ray addresses validated with a timeout;
SIGINT / SIGTERM end a run within 2 s with its outputs finalised."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import cv2
import pytest
from _images import write_png_declaring
from _slow_cli import start_stalled_detect
from conftest import SHAPES

from nanodet_infer.cli import main
from nanodet_infer.cli.sources import NAME_MAX, fit_name
from nanodet_infer.scale_out import check_ray_address

MODEL = str(SHAPES / "upstream_export.onnx")
IMAGES = sorted((SHAPES / "images").glob("*.jpg"))
FOREIGN = ["--model", MODEL, "--backend", "onnxruntime", "--class-names", "circle,rectangle,triangle"]


def test_a_bomb_in_a_folder_is_one_warning_and_the_run_goes_on(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for image in IMAGES[:3]:
        (folder / image.name).write_bytes(image.read_bytes())
    write_png_declaring(folder / "val_00001b.png", 100_000, 100_000)
    out_json = tmp_path / "rows.json"
    assert main(["detect", str(folder), *FOREIGN, "--json", str(out_json), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "100000x100000" in err and "--max-image-pixels" in err
    assert {row["file_name"] for row in json.loads(out_json.read_text())} == {p.name for p in IMAGES[:3]}
    # the flag raises or lowers the budget; a bad value is a usage error
    assert main(["detect", str(IMAGES[0]), *FOREIGN, "--max-image-pixels", "1000", "--no-progress"]) == 2
    assert "above the budget of 0.001 megapixels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["detect", str(IMAGES[0]), *FOREIGN, "--max-image-pixels", "lots"])


def test_an_output_name_too_long_for_the_file_system_is_shortened(tmp_path: Path, capsys) -> None:
    long_input = tmp_path / ("p" * 251 + ".dat")  # legal; its annotated copy NAME.dat.jpg is 259 bytes
    long_input.write_bytes(IMAGES[0].read_bytes())
    after = tmp_path / "z.jpg"
    after.write_bytes(IMAGES[1].read_bytes())
    out = tmp_path / "out"
    assert main(["detect", str(long_input), str(after), *FOREIGN, "--save-dir", str(out), "--no-progress"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([fit_name(long_input.name + ".jpg"), "z.jpg"])
    assert all(len(n.encode()) <= NAME_MAX for n in names) and names[0].endswith(".jpg") and "~" in names[0]
    assert fit_name("é" * 200 + ".jpg").endswith(".jpg") and len(fit_name("é" * 200 + ".jpg").encode()) <= 255


def _video(path: Path, sizes: list[tuple[int, int]]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, sizes[0] if sizes else (64, 48))
    for k, size in enumerate(sizes):
        writer.write(cv2.resize(cv2.imread(str(IMAGES[k % len(IMAGES)])), size))
    writer.release()
    return path


def test_a_video_without_frames_is_a_warning_and_leaves_no_mp4(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.avi"
    empty.write_bytes(_video(tmp_path / "one.avi", [(64, 48)]).read_bytes()[:4096])  # header, no decodable frame
    out = tmp_path / "out"
    code = main(["detect", str(empty), str(IMAGES[0]), *FOREIGN, "--save-dir", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("warning:") == 1 and "empty.avi" in err
    assert sorted(p.name for p in out.iterdir()) == [IMAGES[0].name]


def test_frames_of_changing_size_are_all_detected_and_written(tmp_path: Path, capsys, monkeypatch) -> None:
    video = tmp_path / "clip.avi"
    _video(video, [(160, 120)] * 3)
    frames = [cv2.resize(cv2.imread(str(IMAGES[k])), size) for k, size in enumerate([(160, 120), (320, 200),
                                                                                      (90, 60)])]
    import nanodet_infer.cli.commands as commands

    monkeypatch.setattr(commands, "video_frames", lambda path: (iter(frames), 3, 5.0, (160, 120)))
    out, out_json = tmp_path / "out", tmp_path / "rows.json"
    assert main(["detect", str(video), *FOREIGN, "--save-dir", str(out), "--json", str(out_json),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "2 frames differ in size from the video's 160x120" in err
    written = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    frames = {row["frame"] for row in json.loads(out_json.read_text())}
    assert frames and frames <= {0, 1, 2}


@pytest.mark.parametrize("address", ["http://x:1", "host", "ray://:10001", "host:port", "ray://h:1/path", "a b:1"])
def test_malformed_ray_addresses_are_refused(address: str) -> None:
    from nanodet_infer.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="not a Ray address"):
        check_ray_address(address)


def test_a_ray_address_where_nothing_listens_fails_fast(tmp_path: Path, capsys) -> None:
    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    code = main(["detect", str(IMAGES[0]), *FOREIGN, "--ray", "--ray-address", f"127.0.0.1:{port}", "--no-progress"])
    assert code == 2 and time.monotonic() - start < 5
    assert "nothing answers at 127.0.0.1" in capsys.readouterr().err
    with socket.socket() as silent:  # listens, never accepts: with a backlog of 0 a second connect stalls
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        check_ray_address(f"127.0.0.1:{silent.getsockname()[1]}", timeout=2)  # answered (queued): fine


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_the_run_within_2_s_with_outputs_finalised(tmp_path: Path, signum: int, status: int) -> None:
    out, out_json, marker = tmp_path / "out", tmp_path / "rows.json", tmp_path / "started"
    argv = ["detect", *map(str, IMAGES[:6]), *FOREIGN, "--save-dir", str(out), "--json", str(out_json),
            "--no-progress", "--workers", "1"]
    process = start_stalled_detect(marker, 2, argv)  # the 3rd result waits
    sent = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - sent < 2.0
    assert process.returncode == status and "Traceback" not in err
    rows = json.loads(out_json.read_text())  # complete JSON: the two images done
    assert {row["file_name"] for row in rows} == {IMAGES[0].name, IMAGES[1].name}
    assert sorted(p.name for p in out.iterdir()) == [IMAGES[0].name, IMAGES[1].name]  # no half-written file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rows.json", "started"]


def test_bench_inputs_are_bounded_and_typed(tmp_path: Path, monkeypatch) -> None:
    import nanodet_infer.bench as bench
    from nanodet_infer.errors import ImageReadError, ImageTooLargeError

    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(4):
        (folder / f"{k}.jpg").write_bytes(IMAGES[k].read_bytes())
    os.mkfifo(folder / "pipe.jpg")  # cv2.imread would block on it forever
    monkeypatch.setattr(bench, "MAX_BENCH_IMAGES", 3)
    assert len(bench.load_images(folder)) == 3
    write_png_declaring(folder / "0a.png", 100_000, 100_000)
    with pytest.raises(ImageTooLargeError):
        bench.load_images(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no images"):
        bench.load_images(tmp_path / "empty")


def test_a_corrupt_frame_in_the_middle_is_passed_over_and_the_rest_detected(tmp_path: Path, capsys) -> None:
    sizes = [(128, 96)] * 10
    data = bytearray(_video(tmp_path / "good.avi", sizes).read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # one JPEG per frame
    assert len(starts) == 10
    data[starts[4] : starts[4] + 3000] = bytes(3000)  # frame 4 no longer decodes
    video = tmp_path / "clip.avi"
    video.write_bytes(bytes(data))
    out_json = tmp_path / "rows.json"
    assert main(["detect", str(video), *FOREIGN, "--json", str(out_json), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "1 frames do not decode; passed over" in captured.err
    assert "clip.avi: 9 frames" in captured.out
    assert 4 not in {row["frame"] for row in json.loads(out_json.read_text())}
    assert max(row["frame"] for row in json.loads(out_json.read_text())) >= 8
