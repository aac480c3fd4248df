"""The batcher and the queue bound in process: batches group same-settings jobs up to ``max_batch``, a full
queue answers 503 with ``Retry-After`` (never an unbounded queue), a draining server 503, a failing job leaves
the rest of its batch its answers."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient

from nanodet_infer.results import Detections
from nanodet_infer.serve.app import Limits, ServedModel, build_app
from nanodet_infer.serve.batching import Batcher, Overloaded, ShuttingDown


class _Metadata:
    class_names = ("a", "b")


class FakeDetector:
    """Records each batch; blocks every batch until ``release`` is set; fails on images whose first pixel is 255."""

    metadata = _Metadata()

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches: list[tuple[int, float | None]] = []
        self.score_threshold = None
        self.iou_threshold = None
        self.max_detections = None

    def detect_batch(self, images, max_batch):
        self.release.wait(30)
        self.batches.append((len(images), self.score_threshold))
        if any(image[0, 0, 0] == 255 for image in images):
            raise ValueError("bad image")
        return [Detections.empty(self.metadata.class_names, (image.shape[1], image.shape[0])) for image in images]


def _image(value: int = 0) -> np.ndarray:
    return np.full((4, 6, 3), value, np.uint8)


def _settings(score: float | None) -> tuple:
    return (("iou_threshold", None), ("max_detections", None), ("score_threshold", score))


def test_jobs_with_the_same_settings_share_a_batch_up_to_max_batch() -> None:
    detector = FakeDetector()
    batcher = Batcher(detector, max_batch=3, max_wait_ms=200, max_queue=16)
    futures = [batcher.submit(_image(), _settings(0.5 if i % 2 else None)) for i in range(7)]
    detector.release.set()
    assert all(len(f.result(30)) == 0 for f in futures)
    batcher.close(30)
    # the oldest job's settings pick each batch: 3 default, then 3 at 0.5, then the last default one
    assert detector.batches == [(3, None), (3, 0.5), (1, None)]


def test_full_queue_is_refused_and_close_drains() -> None:
    detector = FakeDetector()
    batcher = Batcher(detector, max_batch=1, max_wait_ms=0, max_queue=2)
    first = batcher.submit(_image(), _settings(None))
    while batcher.depth:  # the worker holds the first job (blocked in detect_batch)
        threading.Event().wait(0.01)
    queued = [batcher.submit(_image(), _settings(None)) for _ in range(2)]
    with pytest.raises(Overloaded):
        batcher.submit(_image(), _settings(None))
    detector.release.set()
    batcher.close(30)
    assert all(f.done() and not f.exception() for f in [first, *queued])
    with pytest.raises(ShuttingDown):
        batcher.submit(_image(), _settings(None))


def test_a_failing_job_does_not_fail_its_batch() -> None:
    detector = FakeDetector()
    batcher = Batcher(detector, max_batch=4, max_wait_ms=100, max_queue=8)
    good, bad = batcher.submit(_image(), _settings(None)), batcher.submit(_image(255), _settings(None))
    detector.release.set()
    assert len(good.result(30)) == 0
    with pytest.raises(ValueError, match="bad image"):
        bad.result(30)
    batcher.close(30)


def test_http_queue_limit_is_503_with_retry_after_and_draining_is_503() -> None:
    detector = FakeDetector()
    limits = Limits(max_batch=1, max_wait_ms=0, max_queue=1, request_timeout_s=30)
    batcher = Batcher(detector, max_batch=1, max_wait_ms=0, max_queue=1)
    app, state = build_app({"m": ServedModel("m", detector, batcher)}, limits)
    png = cv2.imencode(".png", _image())[1].tobytes()
    with TestClient(app) as client:
        batcher.submit(_image(), _settings(None))  # held by the worker
        while batcher.depth:
            threading.Event().wait(0.01)
        batcher.submit(_image(), _settings(None))  # fills the queue
        answer = client.post("/v1/models/m/detect", content=png)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "queue limit" in answer.json()["error"]
        detector.release.set()
        assert client.post("/v1/models/m/detect", content=png).status_code == 200
        state.draining = True
        assert client.post("/v1/models/m/detect", content=png).status_code == 503
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 200
        metrics = client.get("/metrics").text
    batcher.close(30)
    assert 'nanodet_rejections_total{model="m",reason="queue_full"} 1.0' in metrics
    assert 'nanodet_rejections_total{model="m",reason="shutting_down"} 1.0' in metrics


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model", "a.onnx", "--name", "x", "--name", "y"], "--name given 2 times for 1 --model"),
        (["--model", "a.onnx", "--model", "b/a.onnx"], "repeat"),
        (["--model", "missing.onnx", "--max-queue", "0"], "--max-queue"),
        (["--model", "missing.onnx"], "missing.onnx"),
    ],
)
def test_bad_serve_options_are_one_line_exit_2(options, message, capsys) -> None:
    from nanodet_infer.cli import main

    assert main(["serve", *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_serve_help_lists_its_bounds(capsys) -> None:
    from nanodet_infer.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["serve", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert all(option in out for option in ("--max-batch", "--max-wait-ms", "--max-queue", "--max-image-pixels"))


def test_serve_and_detect_share_one_pixel_budget() -> None:
    """One option name and one default for the pixel budget of an image: ``serve``'s and ``detect``'s."""
    from nanodet_infer.cli.arguments import build_parser as cli_parser
    from nanodet_infer.cli.arguments import subcommand_parser
    from nanodet_infer.images import MAX_IMAGE_PIXELS
    from nanodet_infer.serve.app import Limits
    from nanodet_infer.serve.command import build_parser

    served = build_parser().parse_args(["--model", "m.onnx"]).max_image_pixels
    detect = subcommand_parser(cli_parser(), "detect").parse_args(["x.jpg", "--model", "m.onnx"]).max_image_pixels
    assert served == detect == Limits().max_pixels == MAX_IMAGE_PIXELS
