"""``detect`` and :class:`VideoSource` on real streams served on 127.0.0.1 by the test itself: an MJPEG HTTP server,
ffmpeg sending MPEG-TS over UDP and TCP, an RTSP server (RTP over TCP or UDP), a peer that never answers, a dead port;
plus image patterns.

Every loop is bounded in frames (``max_frames``) and time (``read_timeout``, process timeouts)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from _loopback import MjpegServer, RtspServer, SilentServer, ffmpeg_mpegts, free_port, moving_shapes, stop
from conftest import SHAPES

from nanodet_infer.cli import main
from nanodet_infer.errors import StreamError
from nanodet_infer.live import VideoSource, source_kind

MODEL = SHAPES / "upstream_export.onnx"
MODEL_ARGS = ["--model", str(MODEL), "--class-names", "circle,rectangle,triangle", "--no-progress",
              "--score-threshold", "0.5"]


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_source_kinds() -> None:
    assert source_kind("0") == "camera" and source_kind("/dev/video2") == "device"
    assert source_kind("rtsp://user:pw@cam/live") == "stream" and source_kind("udp://127.0.0.1:5000") == "stream"
    assert source_kind("frames/f_%04d.png") == "pattern" and source_kind("frames/*.jpg") == "pattern"
    assert source_kind("clip.mp4") is None
    assert VideoSource("rtsp://user:secret@cam:554/live").name == "rtsp://user:***@cam:554/live"


def test_mjpeg_stream_with_tracking_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "frames.jsonl"
    with MjpegServer(fps=60) as server:
        argv = ["detect", server.url, *MODEL_ARGS, "--jsonl", str(out), "--max-frames", "100", "--track",
                "--save-dir", str(tmp_path / "video"), "--every-frame"]  # real-time drops: tested below
        assert main(argv) == 0
    lines = _lines(out)
    assert [line["frame"] for line in lines] == list(range(100))  # no shape wraps around within 100 frames
    assert all(line["source"] == server.url and line["timestamp"] > 0 and line["latency_ms"] >= 0 for line in lines)
    rows = [row for line in lines for row in line["rows"]]
    assert rows and all("tracker_id" in row and "frame" in row for row in rows)
    # the circle and the rectangle are tracked: once confirmed, each keeps one id
    for name in ("circle", "rectangle"):
        ids = {row["tracker_id"] for row in rows if row["class_name"] == name and row["tracker_id"] >= 0}
        assert len(ids) == 1, (name, ids)
    video = cv2.VideoCapture(str(tmp_path / "video" / f"127.0.0.1_{server.port}_stream.mjpg.mp4"))
    assert video.isOpened() and int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == lines[-1]["frame"] + 1
    video.release()
    assert "100 frames" in capsys.readouterr().out


def test_udp_mpegts_end_to_end(tmp_path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    sender = ffmpeg_mpegts(f"udp://127.0.0.1:{port}", seconds=20)
    try:
        out = tmp_path / "udp.jsonl"
        assert main(["detect", f"udp://127.0.0.1:{port}", *MODEL_ARGS, "--jsonl", str(out), "--max-frames", "30",
                     "--read-timeout", "5", "--track"]) == 0
    finally:
        stop(sender)
    lines = _lines(out)
    assert len(lines) == 30 and all(line["image_size"] == [160, 120] for line in lines)
    assert all("tracker_id" in row for line in lines for row in line["rows"])


def test_hls_over_http(tmp_path) -> None:
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from _loopback import ffmpeg_binary

    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=30", "-t", "2", "-c:v", "mpeg2video", "-f", "hls", "-hls_time", "1",
                    "-hls_list_size", "0", str(tmp_path / "live.m3u8")], check=True, timeout=60)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    frames = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/live.m3u8"
        source = VideoSource(url, realtime=False, read_timeout=5, reconnects=0, max_frames=100)
        with pytest.raises(StreamError, match="lost .* after 60 frames"):  # a live source that ends is lost
            frames.extend(source.frames())
    finally:
        server.shutdown()
        server.server_close()
    assert [f.index for f in frames] == list(range(60))


def test_tcp_mpegts_every_frame() -> None:
    port = free_port()
    sender = ffmpeg_mpegts(f"tcp://127.0.0.1:{port}?listen=1", seconds=20)
    try:
        deadline = time.monotonic() + 5
        while True:  # ffmpeg needs a moment to listen; a refused first try is a clean StreamError
            try:
                with VideoSource(f"tcp://127.0.0.1:{port}", realtime=False, max_frames=40, read_timeout=5) as source:
                    frames = list(source.frames())
                break
            except StreamError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        stop(sender)
    assert [f.index for f in frames] == list(range(40)) and source.stats.dropped == 0


@pytest.mark.parametrize(("flags", "transport"), [([], "tcp"), (["--rtsp-tcp"], "tcp"), (["--rtsp-udp"], "udp")])
def test_rtsp_every_frame_over_each_transport(tmp_path, flags, transport) -> None:
    out = tmp_path / "rtsp.jsonl"
    with RtspServer(tmp_path) as server:
        assert main(["detect", server.url, *MODEL_ARGS, *flags, "--every-frame", "--jsonl", str(out),
                     "--max-frames", "20", "--read-timeout", "5"]) == 0
    assert server.transports == [transport]  # what the client asked for in SETUP (default: OpenCV's, TCP)
    lines = _lines(out)
    assert [line["frame"] for line in lines] == list(range(20))
    assert all(line["image_size"] == [160, 120] and line["source"] == server.url for line in lines)


def test_both_rtsp_transports_are_refused_together(capsys) -> None:
    with pytest.raises(SystemExit) as caught:  # argparse's usage error, exit 2
        main(["detect", "rtsp://127.0.0.1:9/live", *MODEL_ARGS, "--rtsp-tcp", "--rtsp-udp"])
    assert caught.value.code == 2 and "--rtsp-udp: not allowed with argument --rtsp-tcp" in capsys.readouterr().err


def test_realtime_drops_stale_frames_every_frame_does_not() -> None:
    with MjpegServer(fps=30) as server:
        with VideoSource(server.url, max_frames=10) as source:
            indices = []
            for frame in source.frames():
                indices.append(frame.index)
                time.sleep(0.1)  # a detector 3x slower than the source
        with VideoSource(server.url, max_frames=10, realtime=False) as slow:
            every = []
            for frame in slow.frames():
                every.append(frame.index)
                time.sleep(0.05)
    assert source.realtime and source.stats.dropped >= 10
    assert indices == sorted(indices) and indices[-1] - indices[0] >= 15  # it kept up with the source
    assert every == list(range(10)) and slow.stats.dropped == 0


def test_reconnects_after_the_server_restarts() -> None:
    server = MjpegServer(fps=30).start()
    restarted = threading.Event()

    def restart() -> None:
        server.stop()
        time.sleep(0.3)
        server.start()
        restarted.set()

    try:
        with VideoSource(server.url, realtime=False, max_frames=20, read_timeout=2, reconnects=3) as source:
            for frame in source.frames():
                if frame.index == 5:
                    threading.Thread(target=restart).start()
        assert restarted.wait(5)
    finally:
        server.stop()
    assert source.stats.delivered == 20 and source.stats.reconnects == 1


def test_a_lost_stream_is_one_error_after_the_reconnect_limit(capsys) -> None:
    server = MjpegServer(fps=30).start()
    started = time.monotonic()
    with pytest.raises(StreamError, match="could not reopen it in 2 attempts"):
        for frame in VideoSource(server.url, read_timeout=1, reconnects=2).frames():
            if frame.index == 3:
                server.stop()
    assert time.monotonic() - started < 10  # backoff 0.5 s + 1 s, refused connections


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/cam", "tcp://127.0.0.1:{port}"])
def test_a_peer_that_never_answers_times_out(url, tmp_path, capsys) -> None:
    with SilentServer() as peer:
        started = time.monotonic()
        assert main(["detect", url.format(port=peer.port), *MODEL_ARGS, "--read-timeout", "1"]) == 2
        assert time.monotonic() - started < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nanodet-infer: error: cannot open")


def test_a_dead_port_is_a_one_line_error(capsys) -> None:
    assert main(["detect", f"tcp://127.0.0.1:{free_port()}", *MODEL_ARGS, "--read-timeout", "1"]) == 2
    assert "check the address and that the source is running" in capsys.readouterr().err


def test_json_on_a_live_source_is_refused(tmp_path, capsys) -> None:
    assert main(["detect", "udp://127.0.0.1:9", *MODEL_ARGS, "--json", str(tmp_path / "r.json")]) == 2
    assert "use --jsonl" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("pattern", ["f_%03d.png", "*.png"])
def test_image_patterns(pattern, tmp_path) -> None:
    for index in range(6):
        cv2.imwrite(str(tmp_path / f"f_{index:03d}.png"), moving_shapes(index))
    out = tmp_path / "rows.json"
    assert main(["detect", str(tmp_path / pattern), *MODEL_ARGS, "--json", str(out)]) == 0
    assert sorted({row["frame"] for row in json.loads(out.read_text())}) == list(range(6))


def test_printf_patterns_read_in_numeric_order_across_gaps(tmp_path) -> None:
    from nanodet_infer.live import pattern_files

    for name in ("f_2.png", "f_10.png", "f_1.png", "f_x.png", "g_3.png", "f_0007.png"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).name for p in pattern_files(str(tmp_path / "f_%d.png"))] == [
        "f_1.png", "f_2.png", "f_0007.png", "f_10.png"]
    assert [Path(p).name for p in pattern_files(str(tmp_path / "f_%04d.png"))] == ["f_0007.png"]
    assert [Path(p).name for p in pattern_files(str(tmp_path / "f_*.png"))] == [
        "f_0007.png", "f_1.png", "f_10.png", "f_2.png", "f_x.png"]


@pytest.mark.parametrize("pattern", ["f_%03d.png", "*.png"])
def test_an_output_never_overwrites_a_frame_of_the_pattern(pattern, tmp_path, capsys) -> None:
    for index in range(3):
        cv2.imwrite(str(tmp_path / f"f_{index:03d}.png"), moving_shapes(index))
    frame = tmp_path / "f_001.png"
    before = frame.read_bytes()
    assert main(["detect", str(tmp_path / pattern), *MODEL_ARGS, "--jsonl", str(frame), "--overwrite"]) == 2
    assert "--jsonl" in capsys.readouterr().err and frame.read_bytes() == before


@pytest.mark.parametrize("pattern", ["f_%03d.png", "*.png"])
def test_a_pattern_frame_over_the_pixel_budget_is_unreadable(pattern, tmp_path, capsys) -> None:
    """Both kinds of pattern are read through the header check (never by OpenCV's image-sequence reader)."""
    for index in range(3):
        cv2.imwrite(str(tmp_path / f"f_{index:03d}.png"), moving_shapes(index))
    cv2.imwrite(str(tmp_path / "f_003.png"), np.zeros((300, 300, 3), np.uint8))  # 90000 pixels
    out = tmp_path / "rows.json"
    pixels = moving_shapes(0).shape[0] * moving_shapes(0).shape[1]
    assert pixels < 90_000, "the test needs frames below the big one's size"
    code = main(["detect", str(tmp_path / pattern), *MODEL_ARGS, "--json", str(out), "--max-image-pixels",
                 str(pixels)])
    assert code == 2 and "could not be read" in capsys.readouterr().err


_RUN = "import sys; from nanodet_infer.cli import main; sys.exit(main(sys.argv[1:]))"


def test_sigterm_ends_an_unbounded_run_within_two_seconds(tmp_path) -> None:
    out = tmp_path / "frames.jsonl"
    with MjpegServer(fps=30) as server:
        process = subprocess.Popen([sys.executable, "-c", _RUN, "detect", server.url, *MODEL_ARGS, "--jsonl", str(out),
                                    "--save-dir", str(tmp_path / "video")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not (out.exists() and len(out.read_text().splitlines()) >= 5):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            process.wait(5)
            assert time.monotonic() - sent < 2
        finally:
            process.kill()
            process.communicate()
    assert process.returncode == 143
    lines = _lines(out)  # every line complete
    assert len(lines) >= 5
    (video,) = (tmp_path / "video").iterdir()
    capture = cv2.VideoCapture(str(video))
    assert capture.isOpened() and capture.read()[0]
    capture.release()


def test_detector_stream_takes_a_video_source(tmp_path) -> None:
    from nanodet_infer import Detector

    for index in range(4):
        cv2.imwrite(str(tmp_path / f"f_{index}.png"), moving_shapes(index))
    detector = Detector(MODEL, num_threads=1, class_names=("circle", "rectangle", "triangle"))
    source = VideoSource(str(tmp_path / "f_*.png"))
    results = list(detector.stream(source, workers=2))
    expected = [detector(moving_shapes(index)) for index in range(4)]
    assert [r.xyxy.tolist() for r in results] == [e.xyxy.tolist() for e in expected]
    assert source.stats.delivered == 4 and not source.realtime


def test_live_results_never_carry_the_background_class(tmp_path) -> None:
    from nanodet_infer.cli.live import _results
    from nanodet_infer.results import Detections

    for index in range(2):
        cv2.imwrite(str(tmp_path / f"f_{index:03d}.png"), moving_shapes(index))

    def detector(image):  # a torchvision-style model: class 0 is the background
        return Detections(np.array([[0, 0, 5, 5], [1, 1, 6, 6]], np.float32), np.array([0.9, 0.8], np.float32),
                          np.array([0, 1]), ("__background__", "person"), (image.shape[1], image.shape[0]))

    with VideoSource(str(tmp_path / "*.png"), realtime=True) as source:  # real time: may drop a frame
        labels = [result.labels for _frame, result in _results(detector, source, workers=1)]
    assert labels and all(found == ["person"] for found in labels)
