"""Validation of a COCO instances file before pycocotools indexes it (``nanodet-infer eval``).

pycocotools trusts its input: a missing ``bbox`` or a string in it is a ``KeyError`` / ``TypeError``
deep inside ``COCOeval``, and two images sharing one id silently merge (a wrong mAP, exit 0).
:func:`check_coco_dataset` checks every field evaluation reads and raises
:class:`~nanodet_infer.errors.InvalidArgumentError` naming its JSON location (``annotations[3].bbox``) and the
fix. Rules:

- ``images[i]``: an object with ``id`` (an integer or a string, one kind for the whole file, unique) and
  ``file_name`` (a non-empty string, unique); ``width`` / ``height``, when given, integers >= 1;
- ``categories[i]``: ``id`` (integer, unique), ``name`` (when given, a string);
- ``annotations[i]``: ``id`` (integer or string, unique), ``image_id`` (an id of ``images``, of the same kind),
  ``category_id`` (an id of ``categories``), ``bbox`` ``[x, y, w, h]`` of four finite numbers with ``w, h >= 0``;
  ``area`` (when given) a finite number >= 0, ``iscrowd`` (when given) 0 or 1;
- at most :data:`MAX_CATEGORIES` categories (the largest public vocabularies hold a few thousand).

The size of the file itself is bounded by :data:`MAX_ANNOTATION_BYTES` before it is parsed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .errors import InvalidArgumentError

MAX_ANNOTATION_BYTES = 2 << 30
"""Largest annotation file read (2 GiB; COCO's train2017 instances file is 0.45 GB, LVIS v1 train 1.1 GB)."""
MAX_CATEGORIES = 100_000
"""Most categories an annotation file may hold (LVIS: 1,203; Objects365: 365; Open Images: 601)."""


def check_coco_dataset(dataset: dict[str, Any], source: object) -> None:
    """Raise :class:`InvalidArgumentError` for the first field of a parsed COCO file that evaluation cannot use.

    ``dataset`` has ``images``, ``annotations`` and ``categories`` lists (checked by the caller); ``source``
    names the file in messages.
    """
    def fail(where: str, problem: str, fix: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{source}: {where} {problem}; {fix}")

    categories = dataset["categories"]
    if len(categories) > MAX_CATEGORIES:
        raise fail("'categories'", f"holds {len(categories)} entries, above the limit of {MAX_CATEGORIES}",
                   "evaluate with the categories the model was trained on")
    image_ids = _unique_ids(dataset["images"], "images", fail, allow_strings=True)
    category_ids = _unique_ids(categories, "categories", fail, allow_strings=False)
    _unique_ids(dataset["annotations"], "annotations", fail, allow_strings=True)
    names: dict[str, int] = {}
    for i, image in enumerate(dataset["images"]):
        name = image.get("file_name")
        if not isinstance(name, str) or not name:
            raise fail(f"images[{i}]: image id {image['id']!r}", f"has no 'file_name' (got {_shown(name)})",
                       "every entry of 'images' needs 'id' and 'file_name' (its path relative to the image folder)")
        if name in names:
            raise fail(f"images[{i}].file_name", f"{name!r} is also images[{names[name]}].file_name",
                       "each image must be listed once")
        names[name] = i
        for key in ("width", "height"):
            if key in image and not _is_int(image[key], minimum=1):
                raise fail(f"images[{i}].{key}", f"is {_shown(image[key])}", "give the size in pixels (>= 1)")
    for i, category in enumerate(categories):
        if "name" in category and not isinstance(category["name"], str):
            raise fail(f"categories[{i}].name", f"is {_shown(category['name'])}", "give category names as strings")
    for i, annotation in enumerate(dataset["annotations"]):
        _check_annotation(annotation, f"annotations[{i}]", image_ids, category_ids, fail)


def _check_annotation(annotation: dict[str, Any], where: str, image_ids: set[Any], category_ids: set[Any],
                      fail: Callable[[str, str, str], InvalidArgumentError]) -> None:
    for key, known, kind in (("image_id", image_ids, "images"), ("category_id", category_ids, "categories")):
        value = annotation.get(key)
        if value not in known or type(value) is not type(next(iter(known), value)):
            raise fail(f"{where}.{key}", f"{_shown(value)} is not an id of '{kind}'",
                       f"give every annotation the id of an entry of '{kind}'")
    box = annotation.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise fail(f"{where}.bbox", f"is {_shown(box)}", "give [x, y, width, height]: four numbers, in pixels")
    if box[2] < 0 or box[3] < 0:
        raise fail(f"{where}.bbox", f"has a negative size {box[2:]}", "give [x, y, width, height] with width, "
                   "height >= 0 (not [x1, y1, x2, y2])")
    if "area" in annotation and not (_is_number(annotation["area"]) and annotation["area"] >= 0):
        raise fail(f"{where}.area", f"is {_shown(annotation['area'])}", "give a number >= 0, or leave it out")
    if "iscrowd" in annotation and annotation["iscrowd"] not in (0, 1):
        raise fail(f"{where}.iscrowd", f"is {_shown(annotation['iscrowd'])}", "give 0 or 1, or leave it out")


def _unique_ids(entries: Sequence[Any], key: str, fail: Callable[[str, str, str], InvalidArgumentError], *,
                allow_strings: bool) -> set[Any]:
    """The ids of ``entries`` (each an object with an ``id``), all of one kind and unique."""
    kinds = (int, str) if allow_strings else (int,)
    first: dict[Any, int] = {}
    kind: type | None = None
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise fail(f"{key}[{i}]", f"is {_shown(entry)}", f"every entry of '{key}' must be a JSON object")
        value = entry.get("id")
        if isinstance(value, bool) or not isinstance(value, kinds):
            wanted = "an integer or a string" if allow_strings else "an integer"
            raise fail(f"{key}[{i}].id", f"is {_shown(value)}", f"give every entry of '{key}' {wanted} 'id'")
        if kind is not None and type(value) is not kind:
            raise fail(f"{key}[{i}].id", f"{value!r} is a {type(value).__name__} while {key}[0].id is a "
                       f"{kind.__name__}", "use one kind of id throughout the file")
        kind = type(value)
        if value in first:
            raise fail(f"{key}[{i}].id", f"{value!r} is also {key}[{first[value]}].id",
                       f"ids must be unique; merge or renumber the entries of '{key}'")
        first[value] = i
    return set(first)


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: Any) -> str:
    text = "missing" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
