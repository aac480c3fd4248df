"""The benchmark's phases are capped by time as well as by count, and Ctrl-C keeps what was measured."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import SHAPES

from nanodet_infer.bench import Entry, Measurement, measure_side_by_side

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import latency  # noqa: E402


def _sleeper(name: str, seconds: float) -> Entry:
    return Entry(Measurement(name, "test"), lambda: time.sleep(seconds))


def test_time_cap_stops_after_whole_rounds() -> None:
    entries = [_sleeper("a", 0.002), _sleeper("b", 0.004)]
    done = measure_side_by_side(entries, iters=10_000, warmup=10_000, tick=lambda: None, block=5, time_limit_s=0.2)
    counts = {len(e.measurement.samples["end_to_end"]) for e in entries}
    assert counts == {done} and 5 <= done < 10_000 and done % 5 == 0


def test_without_cap_runs_every_iteration() -> None:
    entries = [_sleeper("a", 0.0)]
    assert measure_side_by_side(entries, iters=23, warmup=2, tick=lambda: None, block=10) == 23
    assert len(entries[0].measurement.samples["end_to_end"]) == 23


def test_ctrl_c_prints_and_saves_what_was_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def interrupt(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - Ctrl-C during the post-process study
        raise KeyboardInterrupt

    monkeypatch.setattr(latency, "compare_postprocess", interrupt)
    path = tmp_path / "b.json"
    argv = ["--iters", "2", "--warmup", "1", "--no-progress", "--stream-images", "0", "--model",
            str(SHAPES / "upstream_export.onnx"), "--backend", "onnxruntime", "--no-torch", "--size", "320,240",
            "--json", str(path)]
    assert latency.main(argv) == 130
    doc = json.loads(path.read_text())
    assert doc["interrupted"] is True and doc["postprocess"] == []
    assert [row["engine"] for row in doc["pipelines"]] == ["onnxruntime f32"]
    assert doc["pipelines"][0]["stages_ms"]["end_to_end"]["n"] == 2
    assert any(note.startswith("Interrupted (Ctrl-C)") for note in doc["notes"])
    assert "| onnxruntime f32 | 1 |" in capsys.readouterr().out


def test_ctrl_c_before_any_measurement(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def interrupt(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(latency, "engine_entries", interrupt)
    argv = ["--no-progress", "--model", str(SHAPES / "upstream_export.onnx"), "--backend", "onnxruntime",
            "--no-torch"]
    assert latency.main(argv) == 130
    assert "interrupted before anything was measured" in capsys.readouterr().err


def test_threads_default_to_one_and_all_is_opt_in() -> None:
    assert latency.parse_args([]).threads == [1]
    assert latency.parse_args(["--threads", "all"]).threads == sorted({1, os.cpu_count() or 1})
    with pytest.raises(SystemExit):
        latency.parse_args(["--phase-seconds", "-1"])
