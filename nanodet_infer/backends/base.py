"""The backend interface: one small adapter per inference engine (like OpenVINO Model API's adapters).

A backend owns one loaded, compiled model with a single NCHW float32 input and runs it. It knows
nothing about NanoDet: model facts are resolved by :mod:`nanodet_infer.model_spec` from
:attr:`Backend.properties` and the graph's names and shapes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..errors import IncompatibleModelError, InvalidArgumentError, ModelLoadError

Shape = tuple[int | None, ...]
"""A tensor shape; ``None`` marks a symbolic (dynamic) dimension."""


class Backend(ABC):
    """A loaded model behind a uniform interface.

    Subclasses fill the protected fields in ``__init__``. :meth:`run` is safe to call from several
    threads at once on one instance.
    """

    name: str = ""
    _input_name: str
    _input_shape: Shape
    _output_names: tuple[str, ...]
    _output_shapes: tuple[Shape, ...]
    _properties: dict[str, str]

    @property
    def input_name(self) -> str:
        """Name of the single model input (NCHW float32)."""
        return self._input_name

    @property
    def input_shape(self) -> Shape:
        """Input shape ``(B, 3, H, W)``; ``None`` for symbolic dimensions."""
        return self._input_shape

    @property
    def output_names(self) -> tuple[str, ...]:
        """Output names, in the order :meth:`run` returns the arrays."""
        return self._output_names

    @property
    def output_shapes(self) -> tuple[Shape, ...]:
        """Output shapes in :attr:`output_names` order; ``None`` for symbolic dimensions."""
        return self._output_shapes

    @property
    def properties(self) -> dict[str, str]:
        """The model's embedded metadata string map (a copy); empty when it has none."""
        return dict(self._properties)

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run the model on ``tensor`` (float32 ``[B, 3, H, W]``).

        Returns one array per output, in :attr:`output_names` order, owned by the caller.
        Raises :class:`InvalidArgumentError` when the tensor's dtype or shape does not fit the input, and
        :class:`IncompatibleModelError` when the engine fails to run the model on it (the engine's own
        exception types never escape).
        """
        if not isinstance(tensor, np.ndarray) or tensor.dtype != np.float32 or tensor.ndim != len(self._input_shape):
            raise InvalidArgumentError(
                f"the model input must be a float32 array of rank {len(self._input_shape)}, got "
                f"{getattr(tensor, 'dtype', type(tensor).__name__)} with shape {getattr(tensor, 'shape', None)}"
            )
        for got, want in zip(tensor.shape, self._input_shape, strict=True):
            if want is not None and got != want:
                raise InvalidArgumentError(
                    f"input shape {tuple(tensor.shape)} does not fit the model input {format_shape(self._input_shape)}"
                )
        try:
            return self._run(np.ascontiguousarray(tensor))
        except MemoryError:
            raise
        except Exception as exc:  # the engines raise their own types (pybind11 errors, RuntimeError)
            raise IncompatibleModelError(
                f"{self.name} failed to run the model on a {list(tensor.shape)} input: {engine_message(exc)}; "
                "the graph cannot run on this input; check its input size / dynamic axes (input_size)"
            ) from None

    @abstractmethod
    def _run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Engine-specific inference on a validated, C-contiguous tensor."""

    def describe_outputs(self) -> str:
        """The outputs as ``name [B, N, C], ...``, for error messages."""
        return ", ".join(f"{n} {format_shape(s)}" for n, s in zip(self._output_names, self._output_shapes, strict=True))

    def __repr__(self) -> str:
        inputs = f"{self._input_name} {format_shape(self._input_shape)}"
        return f"<{type(self).__name__} {inputs} -> {self.describe_outputs()}>"


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".tar")
"""Suffixes of PyTorch training checkpoints (NanoDet ``.pth`` / Lightning ``.ckpt``, YOLOv7 ``.pt``): a
model file with one gets the hint to export it first."""


def check_model_path(path: str | Path, suffixes: tuple[str, ...], backend: str) -> Path:
    """Return ``path`` as a :class:`Path` or raise :class:`ModelLoadError` if it cannot be a model file."""
    model = Path(path)
    if not model.is_file():
        what = "is a directory" if model.is_dir() else "does not exist"
        raise ModelLoadError(f"model file {str(model)!r} {what}; pass the path of a {'/'.join(suffixes)} model file")
    if model.suffix.lower() in CHECKPOINT_SUFFIXES:
        raise ModelLoadError(
            f"{model.name!r} is a training checkpoint, not an exported model: export it with "
            f"`nanodet-export --ckpt {model.name} --out model.onnx` first (see docs/export.md)"
        )
    if model.suffix.lower() not in suffixes:
        raise ModelLoadError(
            f"{backend} cannot load {model.name!r}: expected a {' or '.join(suffixes)} file"
            + ("" if ".xml" in suffixes else
               " (an OpenVINO IR (.xml) needs the openvino backend: --backend openvino or auto, "
               "backend='openvino' in Python)")
        )
    return model


def engine_message(exc: BaseException) -> str:
    """An engine exception's text on one line (OpenVINO's span several lines of C++ detail)."""
    return " ".join(str(exc).split())


def format_shape(shape: Shape) -> str:
    """``shape`` as ``[1, 3, ?, ?]`` (``?`` for a symbolic dimension), for error messages."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
