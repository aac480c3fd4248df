"""The training side's family claim: a family is one adapter module plus one registry line (``_toy_export.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from nanodet_export import export_checkpoint  # noqa: E402
from nanodet_export.cli import main  # noqa: E402
from nanodet_export.families import EXPORT_ADAPTERS  # noqa: E402

from nanodet_infer import Detector  # noqa: E402
from nanodet_infer.errors import InvalidArgumentError  # noqa: E402
from nanodet_infer.families import FAMILIES, get_family, get_section  # noqa: E402


@pytest.fixture
def toy(monkeypatch):
    """The toy registered on both sides: runtime family ``toy`` and export adapter ``toy`` (one line each)."""
    import _toy_export
    import _toy_family

    monkeypatch.setitem(FAMILIES, "toy", "toy")
    monkeypatch.setitem(sys.modules, "nanodet_infer.families.toy.family", _toy_family)
    monkeypatch.setitem(sys.modules, "nanodet_infer.families.toy.section", _toy_family)
    monkeypatch.setitem(EXPORT_ADAPTERS, "toy", _toy_export.ADAPTER)
    yield _toy_export
    get_family.cache_clear()
    get_section.cache_clear()


def _weight() -> np.ndarray:
    return (np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1) - 2.5) / 4


def _score(image: np.ndarray, gain: float) -> float:
    """The toy's score computed independently: stretch to 32x16, RGB / 255, conv channel 0 x gain, mean, sigmoid."""
    import cv2

    rgb = cv2.resize(image, (32, 16), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float64) / 255
    y0 = gain * (rgb @ _weight()[0, :, 0, 0].astype(np.float64))
    return float(1 / (1 + np.exp(-y0.mean())))


def test_help_lists_the_declared_option(toy, capsys) -> None:
    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--gain G multiply the conv's weights by this [toy]" in out
    assert "{nanodet-plus,yolov7,ssd,retinanet,detr,toy}" in out


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_toy_checkpoint_exports_through_the_cli_and_runs(toy, tmp_path: Path, capsys, fmt) -> None:
    ckpt = toy.save_checkpoint(tmp_path / "toy.pt", _weight())
    out = tmp_path / ("toy.onnx" if fmt == "onnx" else "toy.xml")
    assert main(["--ckpt", str(ckpt), "--out", str(out), "--format", fmt, "--gain=-2"]) == 0
    printed = capsys.readouterr().out
    assert "toy 1x1 conv, gain -2.0" in printed and "parity       max |Δ| y" in printed
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for engine in ("onnxruntime", "openvino") if fmt == "onnx" else ("openvino",):
        detector = Detector(out, backend=engine, num_threads=1)
        assert detector.metadata.model_family == "toy" and detector.metadata.output == "y"
        found = detector(image)
        assert found.labels == ["thing"]
        np.testing.assert_allclose(found.scores, [_score(image, -2.0)], rtol=0, atol=1e-5)


def test_python_api_takes_the_declared_option_and_refuses_it_elsewhere(toy, tmp_path: Path) -> None:
    import torch

    ckpt = toy.save_checkpoint(tmp_path / "toy.pt", _weight())
    nanodet = tmp_path / "nanodet.pth"  # recognised by its keys; refused before it is read
    torch.save({"state_dict": {"head.gfl_cls.0.weight": torch.zeros(1)}}, nanodet)
    report = export_checkpoint(ckpt, tmp_path / "toy.onnx", gain=0.5)
    assert report.family == "toy" and report.metadata.architecture["summary"] == "toy 1x1 conv, gain 0.5"
    assert report.max_abs_diff["y"] <= report.tolerance["y"]
    with pytest.raises(InvalidArgumentError, match="--gain does not apply to nanodet-plus checkpoints"):
        export_checkpoint(nanodet, tmp_path / "n.onnx", gain=2.0)
    with pytest.raises(InvalidArgumentError, match="--config does not apply to toy checkpoints"):
        export_checkpoint(ckpt, tmp_path / "t.onnx", config=tmp_path / "c.yml")
    with pytest.raises(InvalidArgumentError, match="unknown export option 'gian'"):
        export_checkpoint(ckpt, tmp_path / "t.onnx", gian=2.0)
