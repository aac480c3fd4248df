"""The one result type of the runtime: :class:`Detections` (one image), plus :class:`StageTimings`.

Boxes are xyxy float32 in original-image pixels (x in ``[0, W]``, y in ``[0, H]``), sorted by score
descending; ``class_ids`` index ``class_names``, which lists *all* classes of the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, SupportsIndex, overload

import numpy as np

from .errors import BackendUnavailableError, InvalidArgumentError


@dataclass(frozen=True)
class StageTimings:
    """Wall-clock milliseconds spent in each stage for one image (a batch's time is split evenly)."""

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        """Sum of the three stages."""
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(frozen=True)
class Detection:
    """One detection: ``xyxy`` (x1, y1, x2, y2) original-image pixels, ``score``, ``class_id``, ``class_name``, and
    ``tracker_id`` when a tracker ran (``-1``: not (yet) a confirmed track), else ``None``."""

    xyxy: tuple[float, float, float, float]
    score: float
    class_id: int
    class_name: str
    tracker_id: int | None = None


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image.

    ``xyxy`` float32 ``[N, 4]`` original-image pixels, ``scores`` float32 ``[N]``, ``class_ids`` int64 ``[N]``,
    ``class_names`` all model classes, ``image_size`` ``(W, H)``, ``timings`` when measured, ``tracker_ids`` int64
    ``[N]`` when a tracker ran (:mod:`nanodet_infer.tracking`; ``-1`` for a detection not (yet) in a confirmed
    track), else ``None``. The arrays are read-only.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    timings: StageTimings | None = None
    tracker_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        try:
            xyxy = np.array(self.xyxy, dtype=np.float32).reshape(-1, 4)
            scores = np.array(self.scores, dtype=np.float32).reshape(-1)
            class_ids = np.array(self.class_ids, dtype=np.int64).reshape(-1)
            width, height = (int(v) for v in self.image_size)
            names = tuple(str(n) for n in self.class_names)
            tracker_ids = None if self.tracker_ids is None else np.array(self.tracker_ids, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                "Detections needs xyxy [N, 4], scores [N] and class_ids [N] numbers, class_names (a list) and "
                "image_size (W, H)"
            ) from None
        if not len(xyxy) == len(scores) == len(class_ids):
            raise InvalidArgumentError(
                f"Detections needs one box, score and class id per detection; got {len(xyxy)}, {len(scores)} "
                f"and {len(class_ids)}"
            )
        if tracker_ids is not None and len(tracker_ids) != len(scores):
            raise InvalidArgumentError(f"Detections needs one tracker id per detection; got {len(tracker_ids)} for "
                                       f"{len(scores)}")
        if len(class_ids) and (class_ids.min() < 0 or class_ids.max() >= len(names)):
            raise InvalidArgumentError(f"class ids must lie in [0, {len(names)}) (one per class name)")
        for array in (xyxy, scores, class_ids) if tracker_ids is None else (xyxy, scores, class_ids, tracker_ids):
            array.flags.writeable = False
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "class_ids", class_ids)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "image_size", (width, height))
        object.__setattr__(self, "tracker_ids", tracker_ids)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle / copy by construction, so an unpickled or deep-copied result is validated again (class ids
        within the class list) and its arrays are read-only again."""
        fields = (self.xyxy, self.scores, self.class_ids, self.class_names, self.image_size, self.timings)
        return (Detections, (*fields, self.tracker_ids))

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A pickle that restores the fields as state (e.g. one written before :meth:`__reduce__` existed) is
        validated and made read-only like a new result."""
        if not isinstance(state, dict):
            raise InvalidArgumentError("a pickled Detections holds no fields; pickle it again")
        Detections.__init__(self, **state)

    @classmethod
    def empty(
        cls, class_names: Sequence[str], image_size: tuple[int, int], timings: StageTimings | None = None
    ) -> Detections:
        """No detections."""
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            tuple(class_names),
            image_size,
            timings,
        )

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Detection]:
        for index in range(len(self)):
            yield self[index]

    def with_tracker_ids(self, tracker_ids: Sequence[int] | np.ndarray) -> Detections:
        """The same detections with ``tracker_ids`` (one per detection, ``-1`` for untracked)."""
        return Detections(self.xyxy, self.scores, self.class_ids, self.class_names, self.image_size, self.timings,
                          tracker_ids)

    @overload
    def __getitem__(self, index: SupportsIndex) -> Detection: ...

    @overload
    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> Detections: ...

    def __getitem__(self, index: Any) -> Detection | Detections:
        """An integer gives one :class:`Detection`; a slice, an integer index array/list or a boolean mask of
        length ``len(self)`` gives the selected :class:`Detections` (same class names, image size, timings), in
        the order given. Out-of-range integers raise ``IndexError``, other index kinds ``InvalidArgumentError``.
        """
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            box = self.xyxy[index].tolist()
            class_id = int(self.class_ids[index])
            track = None if self.tracker_ids is None else int(self.tracker_ids[index])
            return Detection(tuple(box), float(self.scores[index]), class_id, self.class_names[class_id], track)
        rows = self._rows(index)
        return Detections(
            self.xyxy[rows], self.scores[rows], self.class_ids[rows], self.class_names, self.image_size, self.timings,
            None if self.tracker_ids is None else self.tracker_ids[rows],
        )

    def _rows(self, index: Any) -> slice | np.ndarray:
        """``index`` as a slice or an int64 array of rows; :class:`InvalidArgumentError` for other kinds."""
        if isinstance(index, slice):
            return index
        rows = np.asarray(index) if isinstance(index, (list, tuple, np.ndarray)) else None
        if rows is not None and rows.dtype == np.bool_ and rows.shape == (len(self),):
            return np.flatnonzero(rows)
        if rows is not None and rows.ndim == 1 and (rows.dtype.kind in "iu" or rows.size == 0):
            if rows.size and (rows.max() >= len(self) or rows.min() < -len(self)):
                raise IndexError(f"index out of range for {len(self)} detections")
            return rows.astype(np.int64)
        shape = getattr(rows, "shape", None)
        raise InvalidArgumentError(
            f"Detections take an integer, a slice, an integer index array or a boolean mask of length {len(self)}, "
            f"got {type(index).__name__}{'' if shape is None else f' of shape {shape} ({rows.dtype})'}"
        )

    def __repr__(self) -> str:
        return f"Detections(n={len(self)}, image_size={self.image_size}, classes={len(self.class_names)})"

    @property
    def labels(self) -> list[str]:
        """Class name of each detection."""
        return [self.class_names[i] for i in self.class_ids.tolist()]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: ``image_size``, ``detections`` (``bbox`` xyxy, ``score``, ``class_id``, ``class_name``, and
        ``tracker_id`` when a tracker ran) and ``timings_ms`` (or None)."""
        timings = None
        if self.timings is not None:
            t = self.timings
            timings = {
                "preprocess": t.preprocess_ms,
                "inference": t.inference_ms,
                "postprocess": t.postprocess_ms,
                "total": t.total_ms,
            }
        return {
            "image_size": list(self.image_size),
            "detections": [
                {"bbox": list(d.xyxy), "score": d.score, "class_id": d.class_id, "class_name": d.class_name,
                 **({} if d.tracker_id is None else {"tracker_id": d.tracker_id})}
                for d in self
            ],
            "timings_ms": timings,
        }

    def to_coco(self, image_id: int, category_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """COCO result rows: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, plus ``"tracker_id"``
        when a tracker ran.

        ``category_ids[class_id]`` gives the COCO category of each class (default: the class id itself).
        """
        xywh = self.xyxy.astype(np.float64)
        xywh[:, 2:] -= xywh[:, :2]
        ids = self.class_ids.tolist()
        if category_ids is not None:
            categories = _category_ids(category_ids, self.class_names)
            ids = [categories[i] for i in ids]
        rows = [
            {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}
            for cat, box, score in zip(ids, xywh.tolist(), self.scores.tolist(), strict=True)
        ]
        if self.tracker_ids is not None:
            for row, track in zip(rows, self.tracker_ids.tolist(), strict=True):
                row["tracker_id"] = track
        return rows

    def to_supervision(self) -> Any:
        """A ``supervision.Detections`` (class names in ``data["class_name"]``, ``tracker_id`` when a tracker ran);
        needs ``pip install supervision``."""
        try:
            import supervision
        except ImportError as exc:
            raise BackendUnavailableError(
                "to_supervision() needs the 'supervision' package: pip install supervision"
            ) from exc
        return supervision.Detections(
            xyxy=self.xyxy.copy(),
            confidence=self.scores.copy(),
            class_id=self.class_ids.copy(),
            tracker_id=None if self.tracker_ids is None else self.tracker_ids.copy(),
            data={"class_name": np.array(self.labels, dtype=str)},
        )


def _category_ids(category_ids: Any, class_names: Sequence[str]) -> list[int]:
    """``category_ids`` as one plain ``int`` per class; :class:`InvalidArgumentError` for a string, a mapping, a
    wrong length or entries that are not integers (``bool`` included)."""
    problem = None
    if isinstance(category_ids, (str, bytes, Mapping)) or not isinstance(category_ids, Sequence | np.ndarray):
        problem = f"a {type(category_ids).__name__}"
    elif len(category_ids) != len(class_names):
        problem = f"{len(category_ids)} entries for {len(class_names)} classes"
    elif not all(isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) for v in category_ids):
        problem = "entries that are not integers"
    if problem is not None:
        raise InvalidArgumentError(
            f"category_ids must be a sequence of one integer COCO category id per class, got {problem}; "
            "e.g. to_coco(image_id, [1, 2, 3]) for three classes"
        )
    return [int(v) for v in category_ids]


BACKGROUND_NAMES = frozenset({"__background__"})
"""Class names of a background entry (torchvision's COCO category 0, which RetinaNet's head can score)."""


def background_ids(class_names: Sequence[str]) -> list[int]:
    """The class ids whose name marks a background entry (:data:`BACKGROUND_NAMES`)."""
    return [i for i, name in enumerate(class_names) if name in BACKGROUND_NAMES]


def foreground(result: Detections) -> Detections:
    """``result`` without background detections: ``detect`` and ``serve`` never draw, list or return a background
    label (``eval`` keeps them, as the reference evaluation does)."""
    background = background_ids(result.class_names)
    if not background or not len(result):
        return result
    return result[np.flatnonzero(~np.isin(result.class_ids, background))]
