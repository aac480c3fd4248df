"""Shared test fixtures and paths.

``tests/data`` holds small copies of upstream's own artifacts (see its README); the suite passes on a
fresh clone with it alone. Tests that need the large upstream checkpoints read ``../shared/fixtures``
through the ``shared_fixtures`` fixture: they skip when that folder is absent, and fail instead when
``NANODET_REQUIRE_SHARED=1`` (set by ``.ci/run``), so CI can never silently skip them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
SHAPES = DATA / "shapes-m-256"
PLUS320 = DATA / "plus-m-320"
SHARED = Path(os.environ.get("NANODET_SHARED_FIXTURES", TESTS.parent.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """Path of ``../shared/fixtures``; skip (or fail under CI) when it is missing."""
    if not (SHARED / "README.md").is_file():
        message = f"upstream fixtures not found at {SHARED}"
        if os.environ.get("NANODET_REQUIRE_SHARED") == "1":
            pytest.fail(message + " (NANODET_REQUIRE_SHARED=1 forbids skipping)")
        pytest.skip(message)
    return SHARED


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one thread for a module: on 2 shared cores its OpenMP pool thrashes; one is faster."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _export_fixture(shared_fixtures: Path, tmp_path_factory, checkpoint: str) -> Path:
    """``nanodet-export --ckpt <shared checkpoint> --out m.onnx``, no other flag, on one torch thread."""
    torch = pytest.importorskip("torch")
    from nanodet_export.cli import main

    out = tmp_path_factory.mktemp(Path(checkpoint).parent.name) / "m.onnx"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["--ckpt", str(shared_fixtures / checkpoint), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="session")
def ssdlite_onnx(shared_fixtures: Path, tmp_path_factory) -> Path:
    """The shared torchvision SSDLite320 checkpoint exported as the issue requires (one export per session)."""
    return _export_fixture(shared_fixtures, tmp_path_factory, "tv-ssdlite320/model.pth")


@pytest.fixture(scope="session")
def retinanet_onnx(shared_fixtures: Path, tmp_path_factory) -> Path:
    """The shared torchvision RetinaNet-ResNet50-FPN checkpoint (fp16-stored) exported with no flag."""
    return _export_fixture(shared_fixtures, tmp_path_factory, "tv-retinanet-r50/model_fp16.pth")
