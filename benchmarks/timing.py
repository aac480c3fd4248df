"""Timing helpers: repeated calls with warm-up, per-stage samples and their summary statistics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("preprocess", "inference", "postprocess", "end_to_end")
"""Stage names, in pipeline order, used as keys in every result."""


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """``median``, ``p90``, ``p99``, ``mean``, ``min`` (milliseconds) and ``n`` of a list of samples."""
    if not samples_ms:
        return {"median": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan"),
                "min": float("nan"), "n": 0}
    data = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return {"median": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(data.mean()),
            "min": float(data.min()), "n": int(data.size)}


@dataclass
class Measurement:
    """Samples (ms) of one configuration, per stage; stages that were not measured stay empty."""

    name: str
    group: str
    facts: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})

    def stats(self) -> dict[str, dict[str, float]]:
        """Summary statistics of every measured stage."""
        return {stage: summarize(values) for stage, values in self.samples.items() if values}

    def median(self, stage: str = "end_to_end") -> float:
        """Median of one stage (NaN when it was not measured)."""
        return summarize(self.samples.get(stage, []))["median"]


@dataclass
class Entry:
    """One thing to time: ``call()``; ``stages(value)`` extracts per-stage ms from its return value."""

    measurement: Measurement
    call: Callable[[], Any]
    stages: Callable[[Any], dict[str, float]] | None = None


def measure_side_by_side(
    entries: list[Entry], *, iters: int, warmup: int, tick: Callable[[], None], block: int = 10
) -> None:
    """Time every entry ``iters`` times (after ``warmup`` untimed calls each), interleaved in blocks.

    Entries take turns in blocks of ``block`` calls, so load from other processes on a shared
    machine hits all of them alike and their *ratios* stay meaningful. Each call's wall time is
    appended to ``end_to_end``; the stages ``stages`` reports to their own lists. ``tick`` runs after
    every call (progress bar).
    """
    for entry in entries:
        for _ in range(warmup):
            entry.call()
            tick()
    done = 0
    while done < iters:
        count = min(block, iters - done)
        for entry in entries:
            samples = entry.measurement.samples
            for _ in range(count):
                start = time.perf_counter()
                value = entry.call()
                samples["end_to_end"].append((time.perf_counter() - start) * 1e3)
                if entry.stages is not None:
                    for stage, ms in entry.stages(value).items():
                        samples[stage].append(ms)
                tick()
        done += count
