"""The interface of a family's export adapter (one per folder under ``export/``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .writer import ExportReport


@dataclass(frozen=True)
class FamilyAdapter:
    """How ``nanodet-export`` handles one detector family.

    ``recognise(path)``: whether the checkpoint file is this family's (content sniffing, never
    executes pickled code). ``export_checkpoint(ckpt, out, options=..., input_size=..., class_names=...,
    **specific)``: read, convert to the deploy model, export, check; ``specific`` are the keyword
    options named in ``options`` beyond the common ones (e.g. NanoDet-Plus's ``config``).
    """

    name: str
    description: str
    recognise: Callable[[Path], bool]
    export_checkpoint: Callable[..., ExportReport]
    options: frozenset[str] = frozenset()
