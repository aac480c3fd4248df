"""Declared tensor sizes checked against the bytes a checkpoint really stores, before any cast or model build.

A pickled tensor is a view: a storage (the bytes in the file), an offset, a shape and strides. A few bytes of
storage can declare any shape through stride 0 (``torch.empty(1).expand(32768, 32768)`` pickles as one
element), and ``.float()`` / ``.clone()`` / ``load_state_dict`` then allocate the declared size: 4 GiB from a
kilobyte. :func:`check_tensors` refuses, per tensor, a view reaching beyond its storage and one declaring more
bytes than its storage holds (stride-0 or overlapping views); and for the whole checkpoint, float32 weights
above :data:`MAX_WEIGHT_BYTES`. Every checkpoint reader calls it on the tensors it will use.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from nanodet_infer.errors import CheckpointError

MAX_WEIGHT_BYTES = 4 << 30
"""Memory budget of one model's weights once cast to float32: 4 GiB (1G parameters; the largest model the
exporter supports, YOLOv7-E6E, has 0.15G)."""


def check_tensors(state_dict: Mapping[str, torch.Tensor], source: object) -> None:
    """Raise :class:`CheckpointError` unless every tensor of ``state_dict`` lies within its storage and declares no
    more bytes than the storage holds, and all of them together fit :data:`MAX_WEIGHT_BYTES` as float32.

    ``source`` names the checkpoint in the message. Nothing is allocated or copied.
    """
    total = 0
    for name, tensor in state_dict.items():
        problem = _view_problem(tensor)
        if problem is not None:
            raise CheckpointError(
                f"{source}: tensor {str(name)[:80]!r} {problem}; the file is damaged or crafted, pass the checkpoint "
                "written by training"
            )
        total += tensor.numel() * max(tensor.element_size(), 4 if tensor.is_floating_point() else 1)
        if total > MAX_WEIGHT_BYTES:
            raise CheckpointError(
                f"{source}: its tensors need more than {MAX_WEIGHT_BYTES >> 30} GiB as float32 (the exporter's "
                "memory budget for one model); pass a checkpoint of the supported models"
            )


def _view_problem(tensor: torch.Tensor) -> str | None:
    """Why ``tensor``'s view cannot be trusted, or None."""
    if tensor.layout != torch.strided or tensor.is_quantized:
        return f"has layout {tensor.layout}, which checkpoints of the supported models never hold"
    count = tensor.numel()
    if count == 0:
        return None
    size = tensor.element_size()
    stored = tensor.untyped_storage().nbytes()
    last = tensor.storage_offset() + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride(), strict=True))
    if tensor.storage_offset() < 0 or min(tensor.stride(), default=0) < 0 or (last + 1) * size > stored:
        return f"of shape {list(tensor.shape)} reaches beyond its {stored}-byte storage"
    if count * size > stored:
        return (f"declares shape {list(tensor.shape)} ({count * size} bytes) but its storage holds {stored} bytes "
                f"(strides {list(tensor.stride())}: a stride-0 or overlapping view)")
    return None
