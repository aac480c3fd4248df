"""A real ``nanodet-infer`` subprocess whose detection stalls after a given number of results, for signal tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

_SCRIPT = """
import sys, time
from pathlib import Path
from nanodet_infer.cli import arguments, main
marker, stall_at = Path(sys.argv[1]), int(sys.argv[2])
make = arguments.make_detector
class Slow:  # the result at position stall_at waits, as a long inference would
    def __init__(self, detector):
        self.detector = detector
    def stream(self, images, workers=None):
        for n, result in enumerate(self.detector.stream(images, workers=workers)):
            if n == stall_at:
                marker.touch()
                time.sleep(60)
            yield result
arguments.make_detector = lambda args, **kw: Slow(make(args, **kw))
sys.exit(main(sys.argv[3:]))
"""


def start_stalled_detect(marker: Path, stall_at: int, argv: list[str]) -> subprocess.Popen:
    """``nanodet-infer`` ``argv`` in a subprocess; returns once result ``stall_at`` (0-based) is stalled, which
    ``marker`` (created then) shows, so the caller can signal a run that is mid-way through its outputs."""
    process = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(marker), str(stall_at), *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), process.communicate(timeout=60)
    return process
