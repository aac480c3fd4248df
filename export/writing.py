"""Writing a traced graph to its final file(s) only once it is checked: metadata round trip, then parity.

Shared by every family's exporter: the graph is saved under a temporary name (:mod:`.staging`), its
metadata is read back from the written file, the file is run on its own backend against the PyTorch
reference on the given samples, and only then moved onto the requested name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from nanodet_infer.errors import ExportError

from . import openvino_export, parity
from .staging import StagedOutput

FORMATS = {"onnx": (".onnx",), "openvino": (".xml", ".bin")}


@dataclass(frozen=True)
class ParityResult:
    """The parity cases checked, the worst |Δ| per output and the tolerance it was held to."""

    cases: tuple[parity.ParityCase, ...]
    worst: dict[str, float]
    tolerance: dict[str, float]


def final_paths(out: Path, fmt: str) -> tuple[Path, ...]:
    """``(out,)`` for ONNX, ``(model.xml, model.bin)`` for OpenVINO."""
    return (out, *(out.with_suffix(suffix) for suffix in FORMATS[fmt][1:]))


def write_checked(
    graph: onnx.ModelProto,
    properties: dict[str, str],
    out: Path,
    *,
    fmt: str,
    fp16: bool,
    reference: parity.Runner,
    samples: Sequence[np.ndarray],
    names: tuple[str, ...],
    check_written: Callable[[dict[str, str]], None],
    noise: dict[str, float] | None = None,
) -> ParityResult:
    """Write ``graph`` (metadata ``properties`` already embedded for ONNX) as ``fmt`` at ``out``.

    ``check_written`` gets the metadata read back from the temporary file and raises
    :class:`ExportError` when it differs. Each sample runs through ``reference`` and the written file;
    a max |Δ| above :func:`parity.tolerances` raises :class:`ExportError` and nothing is written.
    ``noise`` (PyTorch's own float32 error per output) widens the tolerance. An empty ``samples`` skips
    the parity check.
    """
    with StagedOutput(final_paths(out, fmt)) as staged:
        if fmt == "onnx":
            onnx.save(graph, str(staged.temp))
            written = onnx.load(str(staged.temp), load_external_data=False).metadata_props
            check_written({p.key: p.value for p in written})
            candidate = parity.onnxruntime_runner(staged.temp, names)
        else:
            ov_model = openvino_export.convert(graph, properties)
            openvino_export.save(ov_model, staged.temp, fp16=fp16)
            check_written(openvino_export.read_properties(staged.temp))
            candidate = parity.openvino_runner(staged.temp, names)
        cases = parity.compare(reference, candidate, list(samples)) if samples else []
        worst = {name: max(case.max_abs_diff[name] for case in cases) for name in names} if cases else {}
        tolerance = parity.tolerances(cases, fp16=fp16, noise=noise)
        failed = [name for name, value in worst.items() if not value <= tolerance[name]]
        if failed:
            detail = ", ".join(f"{name} {worst[name]:.3g} > {tolerance[name]:.3g}" for name in failed)
            raise ExportError(
                f"parity check failed, max |Δ| against PyTorch: {detail}; nothing was written "
                "(re-run with --verbose and report the model)"
            )
        staged.commit()
    return ParityResult(tuple(cases), worst, tolerance)


def file_size(paths: Sequence[Path]) -> int:
    """Total bytes of ``paths``."""
    return sum(Path(p).stat().st_size for p in paths)
