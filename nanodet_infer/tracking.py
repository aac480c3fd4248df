"""Multi-object tracking on :class:`~nanodet_infer.results.Detections`: ids that follow objects across frames.

The tracker itself is Roboflow's ``trackers`` package (``ByteTrackTracker``, the successor of supervision's
``sv.ByteTrack``); nothing here tracks. It is an optional extra: ``pip install "nanodet-infer[track]"`` and then
``pip install --no-deps trackers`` (its wheel asks for ``opencv-python``, which would clash with the
``opencv-python-headless`` this package uses; the ``track`` extra installs the rest of what it needs).

:func:`as_tracker` accepts a :class:`ByteTrack`, or any tracker object of ``trackers`` (``update(sv.Detections)``)
or of older supervision (``update_with_detections(sv.Detections)``), so a user can pass their own configured one.
Each update returns the same detections in the same order, with ``tracker_ids`` (``-1``: not in a confirmed
track, e.g. a low-score box or an object seen for one frame only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import BackendUnavailableError, InvalidArgumentError
from .results import Detections

INSTALL_HINT = 'pip install "nanodet-infer[track]" && pip install --no-deps "trackers>=2.6,<3"'


class ByteTrack:
    """ByteTrack (``trackers.ByteTrackTracker``) on :class:`Detections`.

    ``frame_rate``: frames per second of the source (the lost-track buffer is ``lost_track_buffer`` frames at
    30 fps, scaled to it). Other keywords go to ``ByteTrackTracker`` (e.g. ``track_activation_threshold``,
    ``minimum_consecutive_frames``, ``minimum_iou_threshold``). Raises :class:`BackendUnavailableError` naming the
    install command when ``trackers`` is missing.
    """

    def __init__(self, frame_rate: float = 30.0, **options: Any) -> None:
        try:
            from trackers import ByteTrackTracker
        except ImportError as exc:
            raise BackendUnavailableError(f"tracking needs the 'trackers' package: {INSTALL_HINT}") from exc
        if not (isinstance(frame_rate, (int, float)) and frame_rate > 0):
            raise InvalidArgumentError(f"frame_rate must be > 0 frames per second, got {frame_rate!r}")
        self._update = _supervision_update(ByteTrackTracker(frame_rate=float(frame_rate), **options).update)

    def update(self, detections: Detections) -> Detections:
        """The next frame's detections, with their ``tracker_ids``."""
        return self._update(detections)


def as_tracker(tracker: Any) -> Callable[[Detections], Detections]:
    """``Detections -> Detections`` with tracker ids, from a :class:`ByteTrack` or a ``trackers`` / supervision
    tracker object; :class:`InvalidArgumentError` for anything else."""
    if isinstance(tracker, ByteTrack):
        return tracker.update
    for method in ("update_with_detections", "update"):
        if callable(getattr(tracker, method, None)):
            return _supervision_update(getattr(tracker, method))
    raise InvalidArgumentError(
        f"tracker must be a nanodet_infer.tracking.ByteTrack or a trackers/supervision tracker (with update() or "
        f"update_with_detections()), got {type(tracker).__name__}"
    )


def _supervision_update(update: Callable[[Any], Any]) -> Callable[[Detections], Detections]:
    """Wrap a tracker's ``update(sv.Detections) -> sv.Detections`` (which may reorder or leave out detections)
    so that it keeps our order: each detection is tagged with its row and its id read back by that tag."""

    def track(detections: Detections) -> Detections:
        tagged = detections.to_supervision()
        tagged.data["nanodet_row"] = np.arange(len(detections))
        tracked = update(tagged)
        ids = np.full(len(detections), -1, np.int64)
        if len(tracked) and tracked.tracker_id is not None:
            ids[np.asarray(tracked.data["nanodet_row"], np.int64)] = np.asarray(tracked.tracker_id, np.int64)
        return detections.with_tracker_ids(ids)

    return track
