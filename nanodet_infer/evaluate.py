"""COCO box mAP of a :class:`~nanodet_infer.Detector`, computed with pycocotools.

Two entry points:

- :func:`coco_stats` — the 12 standard COCO bbox numbers of a list of COCO result rows
  (``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``) against a ground-truth file;
- :func:`evaluate_coco` — runs a detector over every image of a COCO annotation file, then
  :func:`coco_stats` on its detections.

Categories are matched **by name** when both the model and the annotation file name them
(:func:`category_mapping`): every annotation category must be a class of the model (else
:class:`~nanodet_infer.errors.InvalidArgumentError` naming the missing ones), while model classes the
file does not annotate are fine (their detections are left out, as pycocotools leaves out every
category outside ``params.catIds``; e.g. a COCO-80 model on a person-only file). Only when a side has
no names (a foreign model given no ``class_names``; categories without ``name``) does class index ``i``
map to the ``i``-th category id in ascending order, which is how upstream NanoDet's ``CocoDataset``
numbers its labels; the counts must then agree.

Hand-made ground truth often lacks ``area`` and ``iscrowd``; :func:`load_ground_truth` fills them as
pycocotools users do (``area`` = bbox width x height, ``iscrowd`` 0), after checking every field evaluation reads
(:mod:`nanodet_infer.ground_truth`: duplicate or mixed-type ids, a malformed ``bbox``, ...).

pycocotools is an optional dependency (the ``eval`` extra); it is imported only when a function here
runs, and its absence raises :class:`~nanodet_infer.errors.BackendUnavailableError` with the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import ImageReadError, InvalidArgumentError
from .ground_truth import MAX_ANNOTATION_BYTES, check_coco_dataset

#: Names of the 12 numbers ``COCOeval.summarize`` prints, in its order.
STAT_NAMES = (
    "mAP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:  # pragma: no cover - depends on the install
        from .errors import BackendUnavailableError

        raise BackendUnavailableError(
            'COCO evaluation needs pycocotools; install it with: pip install "nanodet-infer[eval]"'
        ) from exc
    return COCO, COCOeval


def load_ground_truth(ann_file: str | Path) -> Any:
    """Load a COCO annotation file quietly (pycocotools prints progress otherwise).

    An annotation without ``area`` gets its bbox's width x height, one without ``iscrowd`` gets 0.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise ImageReadError(f"annotation file not found: {path}")
    coco_cls, _ = _pycocotools()
    if path.stat().st_size > MAX_ANNOTATION_BYTES:
        raise InvalidArgumentError(
            f"{path} is {path.stat().st_size / 2**30:.1f} GiB, above the {MAX_ANNOTATION_BYTES / 2**30:g} GiB limit "
            "of an annotation file; split it"
        )
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise InvalidArgumentError(f"{path} is not a JSON file ({reason}); give a COCO instances_*.json") from None
    if not isinstance(dataset, dict) or not all(
        isinstance(dataset.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise InvalidArgumentError(
            f"{path} is not a COCO annotation file: it needs 'images', 'annotations' and 'categories' lists"
        )
    check_coco_dataset(dataset, path)
    for annotation in dataset["annotations"]:
        _fill_defaults(annotation)
    gt = coco_cls()
    gt.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
    except (KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"{path} has a malformed COCO entry (missing or wrong field {exc})") from None
    return gt


def _fill_defaults(annotation: dict[str, Any]) -> None:
    """``iscrowd`` 0 and ``area`` = bbox width x height where missing (the bbox is already checked)."""
    annotation.setdefault("iscrowd", 0)
    if "area" not in annotation:
        box = annotation["bbox"]
        annotation["area"] = float(box[2]) * float(box[3])


def category_ids_of(gt: Any) -> list[int]:
    """Category ids of a loaded ground truth in ascending order (the positional mapping)."""
    return sorted(gt.getCatIds())


def _placeholder_names(names: Sequence[str]) -> bool:
    """Whether ``names`` are the runtime's stand-ins for a model without names (``class_0``, ...)."""
    return list(names) == [f"class_{i}" for i in range(len(names))]


def category_mapping(
    model_names: Sequence[str] | None, gt: Any, *, named: bool = True
) -> tuple[list[int], list[str]]:
    """The COCO category id of each model class (``-1``: not annotated, left out), and notes to print.

    ``model_names`` are the model's classes (``None``: unknown); ``named=False`` says they are only
    placeholders. By name when the model is named and every category has a non-empty ``name``; by
    position otherwise (see the module docstring). :class:`InvalidArgumentError` names what disagrees.
    """
    ids = category_ids_of(gt)
    names = [gt.cats[i].get("name") for i in ids]
    if model_names is None or not named or not all(isinstance(n, str) and n for n in names):
        count = len(model_names) if model_names is not None else None
        if count is not None and count != len(ids):
            raise InvalidArgumentError(
                f"the model has {count} classes but the annotation file {len(ids)} categories, and they cannot be "
                "matched by name: give the model's class names (--class-names) and a 'name' to every category"
            )
        return ids, ["categories matched by position (class i = i-th category id), not by name"]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidArgumentError(
            f"the annotation file names several categories {repeated[0]!r}; category names must be unique"
        )
    by_name = dict(zip(names, ids, strict=True))
    missing = [n for n in names if n not in model_names]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InvalidArgumentError(
            f"{len(missing)} annotation categories are not classes of the model ({shown}); the model's classes "
            f"are {', '.join(repr(n) for n in list(model_names)[:5])}{', ...' if len(model_names) > 5 else ''}: "
            "evaluate on annotations of the model's classes, or give its names with --class-names"
        )
    mapping = [by_name.get(name, -1) for name in model_names]
    notes = []
    unused = [name for name, cat in zip(model_names, mapping, strict=True) if cat < 0]
    if unused:
        notes.append(f"{len(unused)} model classes are not annotation categories and are left out "
                     f"({', '.join(unused[:5])}{', ...' if len(unused) > 5 else ''})")
    return mapping, notes


def coco_stats(
    results: Sequence[dict[str, Any]],
    ground_truth: str | Path | Any,
    *,
    image_ids: Iterable[int] | None = None,
) -> dict[str, float]:
    """COCO bbox statistics of ``results`` against ``ground_truth``.

    Args:
        results: COCO result rows; ``bbox`` is ``[x, y, width, height]`` in image pixels.
        ground_truth: a COCO annotation file path, or a ``pycocotools.coco.COCO`` object.
        image_ids: evaluate only these images (default: every image of the ground truth).

    Returns:
        ``{name: value}`` for the names in :data:`STAT_NAMES`; every value is 0.0 when there are no
        results (pycocotools itself refuses an empty result list).
    """
    gt = ground_truth if hasattr(ground_truth, "loadRes") else load_ground_truth(ground_truth)
    if not results:
        return dict.fromkeys(STAT_NAMES, 0.0)
    known = set(gt.getImgIds())
    unknown = {row.get("image_id") for row in results} - known
    if unknown:
        raise InvalidArgumentError(
            f"{len(unknown)} result image ids are not in the ground truth (e.g. {sorted(unknown)[0]!r}); "
            "use the image ids of the annotation file"
        )
    _, coco_eval_cls = _pycocotools()
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(row) for row in results])
        evaluator = coco_eval_cls(gt, dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)}


def evaluate_coco(
    detector: Any,
    ground_truth: str | Path | Any,
    image_dir: str | Path,
    *,
    progress: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run ``detector`` on every image of ``ground_truth`` (read from ``image_dir``) and score it.

    The images go through ``detector.stream`` (reading, pre- and post-processing overlap inference; the
    results equal one call per image). An image that cannot be read stops the evaluation with its
    :class:`~nanodet_infer.errors.ImageReadError`.

    Args:
        detector: a :class:`~nanodet_infer.Detector` (anything with ``stream(paths, workers=...)`` yielding,
            in order, objects with ``to_coco(image_id, category_ids)``; its ``metadata.class_names``, if any,
            are matched to the categories by :func:`category_mapping`).
        ground_truth: COCO annotation JSON path (``images`` give ``id`` and ``file_name``), or a
            ``COCO`` object from :func:`load_ground_truth`.
        image_dir: folder the ``file_name`` entries are relative to.
        progress: show a tqdm progress bar on stderr.
        workers: images in flight at once (``Detector.stream``; ``None``: its default, the CPU count).

    Returns:
        The :func:`coco_stats` numbers plus ``num_images`` and ``num_detections``; the result rows
        themselves under ``results``; how categories were matched under ``notes``.
    """
    gt = ground_truth if hasattr(ground_truth, "loadRes") else load_ground_truth(ground_truth)
    metadata = getattr(detector, "metadata", None)
    names = list(metadata.class_names) if metadata is not None else None
    category_ids, notes = category_mapping(names, gt, named=names is not None and not _placeholder_names(names))
    root = Path(image_dir)
    if not root.is_dir():
        raise ImageReadError(f"image folder not found: {root}")
    files = image_files(gt, ground_truth if isinstance(ground_truth, str | Path) else "annotation file")
    rows: list[dict[str, Any]] = []
    found = detector.stream((str(root / file_name) for _, file_name in files), workers=workers)
    if progress:
        from tqdm import tqdm

        found = tqdm(found, total=len(files), desc="eval", unit="img")
    for (image_id, _), detections in zip(files, found, strict=True):
        rows.extend(row for row in detections.to_coco(image_id, category_ids) if row["category_id"] >= 0)
    stats: dict[str, Any] = coco_stats(rows, gt)
    stats["num_images"] = len(gt.getImgIds())
    stats["num_detections"] = len(rows)
    stats["notes"] = notes
    stats["results"] = rows
    return stats


def image_files(gt: Any, source: object = "annotation file") -> list[tuple[Any, str]]:
    """``(id, file_name)`` of every image of a loaded ground truth, by ascending id; :class:`InvalidArgumentError`
    naming an entry without a usable ``file_name`` (``source`` names the file in that message)."""
    files = []
    for info in gt.loadImgs(sorted(gt.getImgIds())):
        file_name = info.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise InvalidArgumentError(
                f"{source}: image id {info['id']!r} has no 'file_name' (got {file_name!r}); every entry of "
                "'images' needs 'id' and 'file_name' (its path relative to the image folder)"
            )
        files.append((info["id"], file_name))
    return files
