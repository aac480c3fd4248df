"""A real ``nanodet-infer serve`` in a subprocess on 127.0.0.1 (ephemeral port), bounded in time, for the serve tests;
the tiny YOLOv7-shaped model it serves (dynamic batch and H/W, 3 classes, seeded weights) and a RetinaNet-shaped
one with a background class."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from _tiny_models import pooled_head, tiny_yolov7

from nanodet_infer.families.yolov7.section import UPSTREAM_ANCHORS
from nanodet_infer.metadata import ModelMetadata

REPO = Path(__file__).resolve().parents[2]
NAMES = ("cat", "dog", "bird")
START_TIMEOUT_S = 60


def tiny_model(path: Path) -> Path:
    """The served model: ``tiny_yolov7`` with YOLOv7 metadata (128x128, dynamic batch and H/W)."""
    meta = ModelMetadata(
        num_classes=3, class_names=NAMES, model_family="yolov7", input_size=(128, 128), strides=(8, 16, 32),
        anchors=UPSTREAM_ANCHORS[3], dynamic_hw=True, dynamic_batch=True, predictions_output="output",
        input_name="images",
    )
    return tiny_yolov7(path, metadata=meta.to_properties())


BACKGROUND_NAMES = ("__background__", "kept", "faint")
BACKGROUND_LOGITS = (1.0, 2.0, -1.0)
"""The classes of :func:`background_model` and every anchor's logit for each: scores 0.73 (the background, which
``detect`` drops), 0.88 and 0.27 (under the display threshold 0.5, above RetinaNet's own 0.05)."""


def background_model(path: Path) -> Path:
    """A RetinaNet-shaped model (``pooled_head``, any input size, 5 levels of one 32-pixel anchor, every detection
    kept) whose classes include torchvision's ``__background__``: the case where ``detect``'s display defaults and
    background filter differ from the Detector's own defaults."""
    meta = ModelMetadata(
        num_classes=3, class_names=BACKGROUND_NAMES, model_family="retinanet", input_size=(1344, 800),
        dynamic_hw=True, anchor_sizes=((32.0,),) * 5, anchor_aspect_ratios=((1.0,),) * 5, detections_per_img=10_000,
    )
    return pooled_head(path, strides=(8, 16, 32, 64, 128), num_classes=3, logit=BACKGROUND_LOGITS,
                       metadata=meta.to_properties())


def sample_images(folder: Path, count: int = 4) -> list[Path]:
    """``count`` seeded noise images of different sizes as PNG and JPEG files."""
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        image = rng.integers(0, 256, (60 + 17 * i, 100 - 9 * i, 3), dtype=np.uint8)
        path = folder / f"image{i}.{'png' if i % 2 else 'jpg'}"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


class Server:
    """``nanodet-infer serve --port 0 ...`` started and waited for; ``url`` is its base URL."""

    def __init__(self, *options: str, start_timeout: float = START_TIMEOUT_S) -> None:
        self.stderr_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-{os.getpid()}-{time.monotonic_ns()}.log"
        self._stderr = open(self.stderr_path, "w+b")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from nanodet_infer.cli import main; sys.exit(main())",
             "serve", "--port", "0", "--backend", "onnxruntime", "--threads", "1", *options],
            stdout=subprocess.DEVNULL, stderr=self._stderr, env=env,
        )
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            match = re.search(rb"on (http://127\.0\.0\.1:\d+)", self.stderr_path.read_bytes())
            if match:
                self.url = match.group(1).decode()
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"serve did not start: {self.log()}")

    def log(self) -> str:
        return self.stderr_path.read_bytes().decode(errors="replace")

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status (killed after ``timeout`` seconds)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()
        self.stderr_path.unlink(missing_ok=True)


def serve_files(folder: Path) -> tuple[Path, list[Path], Path]:
    """The served test files in ``folder``: the tiny model, the sample images and the background-class model."""
    return tiny_model(folder / "tiny.onnx"), sample_images(folder), background_model(folder / "background.onnx")
