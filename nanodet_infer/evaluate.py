"""COCO box mAP of a :class:`~nanodet_infer.Detector`, computed with pycocotools.

Two entry points:

- :func:`coco_stats` — the 12 standard COCO bbox numbers of a list of COCO result rows
  (``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``) against a ground-truth file;
- :func:`evaluate_coco` — runs a detector over every image of a COCO annotation file, then
  :func:`coco_stats` on its detections.

Class index ``i`` of the model maps to the ``i``-th category id of the annotation file in ascending
id order, which is how upstream NanoDet's ``CocoDataset`` numbers its labels.

pycocotools is an optional dependency (the ``eval`` extra); it is imported only when a function here
runs, and its absence raises :class:`~nanodet_infer.errors.BackendUnavailableError` with the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import ImageReadError, InvalidArgumentError

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
    """Load a COCO annotation file quietly (pycocotools prints progress otherwise)."""
    path = Path(ann_file)
    if not path.is_file():
        raise ImageReadError(f"annotation file not found: {path}")
    coco_cls, _ = _pycocotools()
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(f"{path} is not a JSON file ({exc}); give a COCO instances_*.json") from None
    if not isinstance(dataset, dict) or not all(
        isinstance(dataset.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise InvalidArgumentError(
            f"{path} is not a COCO annotation file: it needs 'images', 'annotations' and 'categories' lists"
        )
    gt = coco_cls()
    gt.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
    except (KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"{path} has a malformed COCO entry (missing or wrong field {exc})") from None
    return gt


def category_ids_of(gt: Any) -> list[int]:
    """Category ids of a loaded ground truth in ascending order: model class ``i`` is entry ``i``."""
    return sorted(gt.getCatIds())


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
    unknown = {row["image_id"] for row in results} - known
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
    detector: Callable[[Any], Any],
    ann_file: str | Path,
    image_dir: str | Path,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``detector`` on every image of ``ann_file`` (read from ``image_dir``) and score it.

    Args:
        detector: a :class:`~nanodet_infer.Detector` (anything callable on an image path that returns
            an object with ``to_coco(image_id, category_ids)``).
        ann_file: COCO annotation JSON (``images`` give ``id`` and ``file_name``).
        image_dir: folder the ``file_name`` entries are relative to.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The :func:`coco_stats` numbers plus ``num_images`` and ``num_detections``; the result rows
        themselves under ``results``.
    """
    gt = load_ground_truth(ann_file)
    category_ids = category_ids_of(gt)
    images = gt.loadImgs(sorted(gt.getImgIds()))
    root = Path(image_dir)
    if not root.is_dir():
        raise ImageReadError(f"image folder not found: {root}")
    files = _image_files(images, ann_file)
    rows: list[dict[str, Any]] = []
    if progress:
        from tqdm import tqdm

        files = tqdm(files, desc="eval", unit="img")
    for image_id, file_name in files:
        detections = detector(str(root / file_name))
        rows.extend(detections.to_coco(image_id, category_ids))
    stats: dict[str, Any] = coco_stats(rows, gt)
    stats["num_images"] = len(gt.getImgIds())
    stats["num_detections"] = len(rows)
    stats["results"] = rows
    return stats


def _image_files(images: list[dict[str, Any]], ann_file: str | Path) -> list[tuple[Any, str]]:
    """``(id, file_name)`` of every COCO image entry; :class:`InvalidArgumentError` naming a missing field."""
    files = []
    for info in images:
        file_name = info.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise InvalidArgumentError(
                f"{ann_file}: image id {info['id']!r} has no 'file_name' (got {file_name!r}); every entry of "
                "'images' needs 'id' and 'file_name' (its path relative to the image folder)"
            )
        files.append((info["id"], file_name))
    return files
