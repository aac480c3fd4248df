"""``benchmarks/latency.py`` runs end to end (tiny iteration counts) and its JSON follows docs/benchmark.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHAPES

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import latency, report  # noqa: E402

STATS_KEYS = {"median", "p90", "p99", "mean", "min", "n"}
PIPELINE_KEYS = {"engine", "backend", "precision", "threads", "stages_ms", "bare_inference_ms", "overhead",
                 "images_per_s", "speedup_vs_pytorch", "detections"}
CASE_KEYS = {"score_threshold", "candidates", "detections", "ours_ms", "all_priors_ms", "all_priors_over_ours",
             "all_priors_identical", "pytorch_ms", "pytorch_over_ours", "pytorch_matches"}
OPTIONAL_PIPELINE_KEYS = {"throughput", "map"}
THROUGHPUT_KEYS = {"workers", "images", "sync_images_per_s", "stream_images_per_s", "speedup", "identical"}
TINY = ["--iters", "2", "--warmup", "1", "--threads", "1", "--no-progress", "--stream-images", "4"]


def check_schema(doc: dict, postprocess_cases: int = 2) -> None:
    """The documented top-level layout (docs/benchmark.md); the post-process study runs for NanoDet-Plus only."""
    assert doc["schema"] == report.SCHEMA
    assert set(doc) == {"schema", "environment", "model", "settings", "pipelines", "postprocess", "notes",
                        "interrupted"}
    assert doc["interrupted"] is False
    assert {"cpu", "logical_cores", "onnxruntime", "openvino", "torch", "openvino_cpu_capabilities"} <= set(
        doc["environment"])
    assert {"batch", "iters", "warmup", "threads", "score_threshold", "image", "image_size"} <= set(doc["settings"])
    assert doc["pipelines"]
    for row in doc["pipelines"]:
        assert PIPELINE_KEYS <= set(row) <= PIPELINE_KEYS | OPTIONAL_PIPELINE_KEYS
        if "throughput" in row:
            assert set(row["throughput"]) == THROUGHPUT_KEYS and row["throughput"]["identical"] is True
        for stage in ("preprocess", "inference", "postprocess", "end_to_end"):
            assert set(row["stages_ms"][stage]) == STATS_KEYS
            assert row["stages_ms"][stage]["n"] == 2
    assert len(doc["postprocess"]) == postprocess_cases
    for case in doc["postprocess"]:
        assert set(case) == CASE_KEYS
        assert case["all_priors_identical"] is True


@pytest.mark.slow
def test_default_model_benchmark(tmp_path_factory, monkeypatch, capsys) -> None:
    pytest.importorskip("torch")
    monkeypatch.setenv("NANODET_CACHE", str(tmp_path_factory.mktemp("cache")))
    out = tmp_path_factory.mktemp("bench")
    assert latency.main([*TINY, "--json", str(out / "b.json"), "--plot", str(out / "b.png")]) == 0
    doc = json.loads((out / "b.json").read_text())
    check_schema(doc)
    assert doc["model"]["default"] is True and doc["model"]["num_classes"] == 80
    engines = {row["engine"] for row in doc["pipelines"]}
    assert "onnxruntime f32" in engines and any(e.startswith("PyTorch") for e in engines)
    assert {"onnxruntime int8", "openvino int8"} <= engines  # calibrated on the synthetic image
    assert all("throughput" in row for row in doc["pipelines"] if row["backend"] != "torch")
    worst = doc["postprocess"][1]
    assert worst["score_threshold"] == 0.05 and 40_000 < worst["candidates"] < 50_000
    assert all(case["pytorch_matches"] is True for case in doc["postprocess"])
    assert (out / "b.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| engine | threads |" in printed and "Post-process alone" in printed


def test_foreign_model_without_torch(tmp_path) -> None:
    path = tmp_path / "b.json"
    argv = [*TINY, "--model", str(SHAPES / "upstream_export.onnx"), "--backend", "onnxruntime", "--no-torch",
            "--size", "640,360", "--json", str(path)]
    assert latency.main(argv) == 0
    doc = json.loads(path.read_text())
    check_schema(doc)
    assert [row["engine"] for row in doc["pipelines"]] == ["onnxruntime f32"]
    assert doc["pipelines"][0]["speedup_vs_pytorch"] is None
    assert all(case["pytorch_ms"] is None for case in doc["postprocess"])
    assert doc["settings"]["image_size"] == [640, 360]


def test_cli_bench_measures_a_model_file_without_the_source_tree(tmp_path) -> None:
    """``nanodet-infer bench`` is the runtime's own (nanodet_infer.bench): no benchmarks/ import, no torch."""
    out = tmp_path / "row.json"
    argv = ["bench", "--iters", "2", "--warmup", "1", "--size", "320,240", "--no-progress", "--backend", "onnxruntime",
            "--model", str(SHAPES / "upstream_export.onnx"), "--json", str(out)]
    script = (
        "import sys\nfrom nanodet_infer.cli import main\n"
        f"code = main({argv!r})\n"
        "assert code == 0, code\n"
        "assert not any(m == 'benchmarks' or m.startswith('benchmarks.') for m in sys.modules), 'benchmarks imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| onnxruntime f32 | 1 |" in result.stdout
    row = json.loads(out.read_text())
    assert set(row) == PIPELINE_KEYS - {"speedup_vs_pytorch"}
    assert row["stages_ms"]["end_to_end"]["n"] == 2 and row["detections"] >= 0


@pytest.fixture(scope="module")
def yolov7_onnx(tmp_path_factory) -> Path:
    """A small YOLOv7 (yolov7-tiny at width 1/16, 3 classes) exported at 128x96, dynamic H/W."""
    pytest.importorskip("torch")
    from _yolov7 import seeded, small_yaml
    from nanodet_export.yolov7 import export_model
    from nanodet_models.yolov7 import YOLOv7

    path = tmp_path_factory.mktemp("y7") / "y7.onnx"
    return export_model(seeded(YOLOv7(small_yaml())), path, input_size=(128, 96)).path


def test_any_family_benchmarks_through_its_own_preprocess(yolov7_onnx: Path, tmp_path: Path) -> None:
    from nanodet_infer import Detector
    from nanodet_infer.bench import bare_tensor, synthetic_image
    from nanodet_infer.cli import main

    detector = Detector(yolov7_onnx, backend="onnxruntime")
    image = synthetic_image((320, 200))
    tensor = bare_tensor(detector, image, 2)  # YOLOv7's letterbox: the minimal rectangle 128 x 96 (not 128 x 128)
    assert tensor.shape == (2, 3, 96, 128) and (tensor[1] == detector.network_input(image)).all()

    path = tmp_path / "b.json"
    argv = [*TINY, "--model", str(yolov7_onnx), "--backend", "onnxruntime", "--no-torch", "--size", "320,200",
            "--json", str(path)]
    assert latency.main(argv) == 0
    doc = json.loads(path.read_text())
    check_schema(doc, postprocess_cases=0)
    assert doc["settings"]["score_threshold"] == 0.25  # the family's default
    assert any("skipped for a yolov7 model" in note for note in doc["notes"])
    out = tmp_path / "row.json"
    argv = ["bench", "--iters", "2", "--warmup", "1", "--size", "320,200", "--no-progress",
            "--model", str(yolov7_onnx), "--json", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["stages_ms"]["end_to_end"]["n"] == 2


@pytest.mark.parametrize("argv", [["--iters", "0"], ["--size", "320"]])
def test_cli_bench_bad_options_are_one_line_exit_2(argv, capsys) -> None:
    from nanodet_infer.cli import main

    assert main(["bench", "--model", str(SHAPES / "upstream_export.onnx"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nanodet-infer: error:") and "\n" not in err


@pytest.mark.shared
def test_checkpoint_torch_model_builds_the_trained_fixture(shared_fixtures: Path) -> None:
    """``latency.py --checkpoint``'s PyTorch row: the training-side model of an upstream checkpoint."""
    import torch

    from benchmarks import speed

    checkpoint = shared_fixtures / "shapes-m-256" / "nanodet_model_best.pth"
    model = speed.checkpoint_torch_model(checkpoint, SHAPES / "config.yml")
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 256, 256))
    assert tuple(out.shape) == (1, 1360, 35)
