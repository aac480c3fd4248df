"""Detector families: the registry from a model's ``model_family`` to the code that runs it.

Each family is one folder here holding everything specific to that detector (see :mod:`.base` for the
protocol and docs/DESIGN.md, "Adding a family"):

* ``section.py`` — ``SECTION``: the family's metadata section (its own ``nanodet.*`` keys), a
  :class:`~nanodet_infer.metadata_section.MetadataSection` subclass. Importing it must stay cheap (no OpenCV,
  no engine), and it imports ``metadata_section``, never ``metadata`` (which imports this registry).
* ``family.py`` — ``FAMILY``: the :class:`~.base.Family` object (output-layout check, resize plan,
  preprocess, postprocess, default settings, foreign-model facts).

Code shared by several families sits next to the folders: ``torchvision_common`` (torchvision's transform,
box coder, clip, ``batched_nms`` and rescale, in numpy), ``torchvision_section`` (the metadata keys ``ssd`` and
``retinanet`` share) and ``torchvision_family`` (their common :class:`~.base.Family` part).

Adding a family is one folder plus one line in :data:`FAMILIES`. Family modules are imported on first use,
so ``import nanodet_infer`` loads none of them. Nothing outside this registry branches on a family's name.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

from ..errors import MetadataError

if TYPE_CHECKING:
    from ..metadata_section import MetadataSection
    from .base import Family
    from .facts import Fact

FAMILIES: dict[str, str] = {
    "nanodet-plus": "nanodet_plus",
    "yolov7": "yolov7",
    "ssd": "ssd",
    "retinanet": "retinanet",
    "detr": "detr",
}
"""``model_family`` string → the family's folder (a subpackage of this package)."""

DEFAULT_FAMILY = "nanodet-plus"
"""The family of schema-version-1 files (which predate the other families) and of foreign models by default."""


def family_names() -> tuple[str, ...]:
    """The supported ``model_family`` strings, in registry order."""
    return tuple(FAMILIES)


def check_family_name(name: object) -> str:
    """``name`` when it is a registered family; else :class:`MetadataError` naming the supported ones."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise MetadataError(
            f"model_family {name!r} is not supported; this runtime runs {', '.join(map(repr, FAMILIES))} "
            "(update nanodet-infer, or re-export the model)"
        )
    return name


@cache
def get_family(name: str) -> Family:
    """The :class:`~.base.Family` registered as ``name`` (imports its folder on first use)."""
    return import_module(f".{FAMILIES[check_family_name(name)]}.family", __name__).FAMILY


@cache
def get_section(name: str) -> type[MetadataSection]:
    """The metadata section class of family ``name`` (imports only its ``section`` module)."""
    return import_module(f".{FAMILIES[check_family_name(name)]}.section", __name__).SECTION


def foreign_fact_options() -> dict[str, list[tuple[str, Fact]]]:
    """Every family's foreign-model facts, by fact name: ``{name: [(family, Fact), ...]}`` in registry and
    declaration order (imports every family). A name several families declare has one kind in all of them."""
    options: dict[str, list[tuple[str, Fact]]] = {}
    for family in FAMILIES:
        for fact in get_family(family).foreign_facts:
            options.setdefault(fact.name, []).append((family, fact))
    return options
