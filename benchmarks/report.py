"""Benchmark output: the Markdown tables, the JSON document (schema in docs/benchmark.md), the plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nanodet_infer import paths
from nanodet_infer.bench import STAGES, Measurement

SCHEMA = "nanodet-infer.benchmark/1"


def _cell(stats: dict[str, float] | None) -> str:
    if not stats or not stats.get("n"):
        return "–"
    return f"{stats['median']:.2f} / {stats['p90']:.2f} / {stats['p99']:.2f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2f}×"


def markdown(doc: dict[str, Any]) -> str:
    """The human-readable report of a benchmark document."""
    env, settings = doc["environment"], doc["settings"]
    lines = [
        f"## nanodet-infer latency — {doc['model']['name']}, input {settings['image']}, batch {settings['batch']}",
        "",
        f"{env['cpu']} ({env['logical_cores']} logical cores); onnxruntime {env['onnxruntime']}, "
        f"openvino {env['openvino']}, torch {env['torch'] or 'not installed'}. "
        f"{settings['iters']} timed iterations after {settings['warmup']} warm-up, score threshold "
        f"{settings['score_threshold']}. Cells: median / p90 / p99 in ms.",
        "",
        "| engine | threads | preprocess | inference | postprocess | end-to-end | bare inference | overhead "
        "(e2e / bare) | images/s | speed-up vs PyTorch | detections |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in doc["pipelines"]:
        stages = row["stages_ms"]
        lines.append(
            f"| {row['engine']} | {row['threads']} | {_cell(stages.get('preprocess'))} | "
            f"{_cell(stages.get('inference'))} | {_cell(stages.get('postprocess'))} | "
            f"{_cell(stages.get('end_to_end'))} | {_cell(row.get('bare_inference_ms'))} | "
            f"{_ratio(row.get('overhead'))} | {row['images_per_s']:.1f} | {_ratio(row.get('speedup_vs_pytorch'))} | "
            f"{row['detections']} |"
        )
    if doc["postprocess"]:
        lines += [
            "",
            "### Post-process alone (same model outputs, 1 thread)",
            "",
            "| score threshold | candidates | detections | ours (candidate-first) | all-priors decode | "
            "PyTorch post-process | all-priors / ours | PyTorch / ours | same result |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for case in doc["postprocess"]:
            same = "yes" if case["all_priors_identical"] else "NO"
            if case["pytorch_matches"] is not None:
                same += ", PyTorch " + ("yes" if case["pytorch_matches"] else "NO")
            lines.append(
                f"| {case['score_threshold']} | {case['candidates']} | {case['detections']} | "
                f"{_cell(case['ours_ms'])} | {_cell(case['all_priors_ms'])} | {_cell(case.get('pytorch_ms'))} | "
                f"{_ratio(case['all_priors_over_ours'])} | {_ratio(case.get('pytorch_over_ours'))} | {same} |"
            )
    lines += _speed_tables(doc["pipelines"])
    for note in doc["notes"]:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines)


def _speed_tables(rows: list[dict[str, Any]]) -> list[str]:
    """Accuracy and throughput tables, for the rows that have them."""
    lines: list[str] = []
    scored = [row for row in rows if row.get("map") is not None]
    if scored:
        lines += ["", "### Accuracy (COCO mAP, score 0.05, IoU 0.6, max 100)", "", "| engine | mAP | Δ vs first |",
                  "|---|---|---|"]
        for row in scored:
            delta = (row["map"] - scored[0]["map"]) * 100
            lines.append(f"| {row['engine']} | {row['map']:.4f} | {delta:+.2f} points |")
    streamed = [row for row in rows if row.get("throughput")]
    if streamed:
        lines += ["", "### Throughput (1-thread detector: synchronous calls vs `Detector.stream`)", "",
                  "| engine | workers | images | sync images/s | stream images/s | stream / sync | same results |",
                  "|---|---|---|---|---|---|---|"]
        for row in streamed:
            t = row["throughput"]
            lines.append(f"| {row['engine']} | {t['workers']} | {t['images']} | {t['sync_images_per_s']:.1f} | "
                         f"{t['stream_images_per_s']:.1f} | {_ratio(t['speedup'])} | "
                         f"{'yes' if t['identical'] else 'NO'} |")
    return lines


def write_json(doc: dict[str, Any], path: Path) -> None:
    """Write the benchmark document as JSON (NaN written as null), atomically or streamed into a pipe, as the
    command lines write theirs (:func:`nanodet_infer.paths.write_json`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    paths.write_json(path, _finite(doc))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def plot(measurements: list[Measurement], path: Path) -> str | None:
    """Box plots of every stage's latency distribution, one panel per stage; returns an error or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 'matplotlib is not installed, so --plot was skipped; install it with: pip install "nanodet-infer[plot]"'
    fig, axes = plt.subplots(len(STAGES), 1, figsize=(10, 2.4 * len(STAGES)), squeeze=False)
    for ax, stage in zip(axes[:, 0], STAGES, strict=True):
        rows = [m for m in measurements if m.samples.get(stage)]
        ax.boxplot([m.samples[stage] for m in rows], orientation="horizontal", showfliers=True, whis=(1, 99))
        ax.set_yticks(range(1, len(rows) + 1), [m.name for m in rows], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(f"{stage} (ms, log scale; whiskers p1–p99)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
