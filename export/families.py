"""Family name → export adapter: the registry ``nanodet-export`` picks from.

A new family is one folder under ``export/`` exposing an ``ADAPTER``
(:class:`~.adapter.ExportAdapter`) plus one line in :data:`EXPORT_ADAPTERS`. Without ``--family`` the first
adapter that recognises the checkpoint's content is used; when none does, the first entry (the
default family) reads the file and reports what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path

from nanodet_infer.errors import CheckpointError, InvalidArgumentError, ModelLoadError

from . import detr, nanodet_plus, yolov7
from .adapter import ExportAdapter
from .torchvision_export import RETINANET_ADAPTER, SSD_ADAPTER

EXPORT_ADAPTERS: dict[str, ExportAdapter] = {
    nanodet_plus.ADAPTER.name: nanodet_plus.ADAPTER,
    yolov7.ADAPTER.name: yolov7.ADAPTER,
    SSD_ADAPTER.name: SSD_ADAPTER,
    RETINANET_ADAPTER.name: RETINANET_ADAPTER,
    detr.ADAPTER.name: detr.ADAPTER,
}


def recognise(path: Path) -> str | None:
    """The name of the family whose adapter recognises ``path``, or None."""
    return next((name for name, adapter in EXPORT_ADAPTERS.items() if adapter.recognise(path)), None)


def resolve(path: Path, family: str | None = None) -> ExportAdapter:
    """The adapter for ``path``: ``family`` when given (refused if the file is another family's),
    else the recognised one, else the default (first) family."""
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist (or is not a file); check the path")
    if family is not None and family not in EXPORT_ADAPTERS:
        raise InvalidArgumentError(f"unknown --family {family!r}; choose one of {', '.join(EXPORT_ADAPTERS)}")
    found = recognise(path)
    if family is None:
        return EXPORT_ADAPTERS[found or next(iter(EXPORT_ADAPTERS))]
    if found is not None and found != family:
        raise CheckpointError(f"{path} is a {found} checkpoint, not {family}; drop --family or pass --family {found}")
    return EXPORT_ADAPTERS[family]
