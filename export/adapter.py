"""The interface of a family's export adapter (one folder under ``export/``, one line in :mod:`.families`).

An adapter states only what is its family's own; :mod:`.pipeline` does the rest (check the options,
trace, count the parameters, embed the metadata, write the file staged and parity-checked, quantize,
report). What the adapter states:

* ``recognise(path)`` — whether a checkpoint file is this family's (content sniffing, nothing executed);
* ``prepare(checkpoint, common, **options)`` — read it and return a :class:`Prepared`: the deploy
  module, the metadata, the parity inputs and the graph's output facts;
* ``parity`` — its :class:`ParityRule`: the output views and tolerances of the parity check;
* ``options`` — its own options as data (:class:`Option`, in the style of OpenVINO Model API's
  ``parameters()``): ``nanodet-export --help`` and ``export_checkpoint(**options)`` are built from them;
* ``int8`` — its :class:`Int8Rule`: which nodes stay in float when quantized.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from torch import nn

from nanodet_infer.metadata import ModelMetadata

from . import parity


@dataclass(frozen=True)
class Option:
    """One family option: ``--<name with dashes>`` on the command line, ``name=`` in the Python API.

    ``kind`` converts the command-line string (``bool``: a flag; ``Path``: an input file, which no output
    may overwrite); ``default`` None means "not given";
    ``exclusive`` names a group of options that cannot be given together (e.g. ``--config``/``--preset``).
    """

    name: str
    kind: type
    help: str
    default: Any = None
    metavar: str | None = None
    exclusive: str | None = None

    @property
    def flag(self) -> str:
        """The command-line spelling, ``--bn-eps`` for ``bn_eps``."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class CommonArgs:
    """What every family is given: the user's ``input_size`` ``(W, H)`` or None, class names or None,
    and ``dynamic`` (None: the family's default)."""

    input_size: tuple[int, int] | None
    class_names: Sequence[str] | None
    dynamic: bool | None
    fp16: bool
    check: bool


@dataclass(frozen=True)
class Prepared:
    """A family's deploy model ready to trace (what :attr:`ExportAdapter.prepare` returns).

    ``deploy`` maps ``images [B, 3, H, W]`` to the outputs named ``output_names``, each ``[B, N, c]`` with
    ``c`` the matching entry of ``channels``; it is traced at ``trace_size`` ``(W, H)``. ``samples`` are the
    parity inputs. ``check_graph(graph, trace_size)`` raises :class:`ExportError` when the graph's outputs do
    not fit the metadata (rows per level). ``elementwise`` counts parameters feeding element-wise nodes (not
    counted in the graph's weights, e.g. SSD300's L2Norm scale); no initializer may start with a
    ``training_only`` prefix.
    """

    deploy: nn.Module
    metadata: ModelMetadata
    output_names: tuple[str, ...]
    channels: tuple[int, ...]
    trace_size: tuple[int, int]
    samples: list[np.ndarray]
    input_shape: list[int | str]
    dynamic: bool
    dynamic_hw: bool
    check_graph: Callable[[onnx.ModelProto, tuple[int, int]], None] | None = None
    elementwise: int = 0
    training_only: tuple[str, ...] = ()
    aux_params_dropped: int = 0
    used_ema: bool | None = None
    source_format: str = "in-memory"
    count_weights: bool = True
    """Check that the graph's matrix-product weights add up to the deploy model's (False for a transformer:
    constant folding splits attention biases and merges the query embedding, so the count is no invariant;
    the parity check remains the guard)."""


def _same(run: parity.Runner) -> parity.Runner:
    return run


@dataclass(frozen=True)
class ParityRule:
    """How the file is compared with PyTorch: ``view`` regroups a runner's outputs (e.g. YOLOv7's one output
    into box and probability columns), ``tolerances(cases, fp16=, noise=)`` gives the max |Δ| per view and
    ``rule(fp16=, noise=)`` says it in words; with ``measure_noise`` PyTorch's own float error is measured
    (:func:`parity.reference_noise`) and passed as ``noise``."""

    view: Callable[[parity.Runner], parity.Runner] = _same
    tolerances: Callable[..., dict[str, float]] = parity.tolerances
    rule: Callable[..., str] = parity.tolerance_rule
    measure_noise: bool = False


@dataclass(frozen=True)
class Int8Rule:
    """Which nodes of the family's graph stay in float when quantized to INT8 (see :mod:`.quantize`).

    ``head_tail``: every node between the outputs and the last layers of a ``tail_stops`` type, those layers
    included (a head whose outputs share one activation scale can lose every score); ``first_conv``: the convolutions
    reading the image (ONNX only; NNCF keeps the first layer's input scale per channel itself).
    """

    head_tail: bool = True
    first_conv: bool = True
    tail_stops: tuple[str, ...] = ("Conv",)
    """ONNX op types that end the head tail (the last such layers are kept float, nothing before them);
    e.g. ``("MatMul", "Gemm")`` for a head of linear layers."""


@dataclass(frozen=True)
class ExportAdapter:
    """How ``nanodet-export`` handles one detector family (see the module docstring)."""

    name: str
    description: str
    recognise: Callable[[Path], bool]
    prepare: Callable[..., Prepared]
    options: tuple[Option, ...] = ()
    parity: ParityRule = field(default_factory=ParityRule)
    int8: Int8Rule = field(default_factory=Int8Rule)
    ema_weights: str = "EMA"
    """How the summary names the checkpoint's EMA weights when they were used (e.g. ``EMA (avg_model.*)``)."""
    assumption_fix: str = "state them with the family's options"
    """The summary's fix when the metadata's ``architecture["assumed"]`` lists facts the checkpoint does not
    store (e.g. ``pass --config to use the training YAML``)."""

    @property
    def option_names(self) -> frozenset[str]:
        """The names of :attr:`options` (the keyword arguments :attr:`prepare` takes beyond the common ones)."""
        return frozenset(option.name for option in self.options)


#: The option of every family whose reader refuses pickled code unless told otherwise.
TRUST_CHECKPOINT = Option("trust_checkpoint", bool, "allow full unpickling (runs code from the file!)", default=False)
