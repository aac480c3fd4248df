"""Dynamic batching: concurrent requests to one model grouped into one :meth:`Detector.detect_batch` call.

One :class:`Batcher` per model owns its :class:`~nanodet_infer.Detector` and one worker thread. A request is a
:class:`Job` (an image and its settings) in a bounded queue; the worker takes the oldest job, then waits at
most ``max_wait_ms`` for more jobs *with the same settings* until ``max_batch`` are collected, sets those
settings on the detector and runs the batch. ``detect_batch`` groups by canvas size, so every result equals
a single-image call exactly. A full queue raises :class:`Overloaded` (the HTTP layer answers 503 with
``Retry-After``); after :meth:`Batcher.close` new jobs raise :class:`ShuttingDown`, while queued jobs still run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..results import Detections

SettingsKey = tuple[tuple[str, object], ...]
"""A request's detector settings as sorted ``(name, value)`` pairs (``None`` = the model's default)."""


class Overloaded(Exception):
    """The model's queue is full; retry later."""


class ShuttingDown(Exception):
    """The server is draining for shutdown and takes no new work."""


@dataclass(eq=False)  # identity: the queue removes this very job
class Job:
    """One image waiting for its batch; ``future`` receives its :class:`Detections` (or the exception)."""

    image: np.ndarray
    settings: SettingsKey
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchReport:
    """What one batch did, for the metrics: its size and the seconds each job waited in the queue."""

    size: int
    waits_s: tuple[float, ...]


class Batcher:
    """Serialises a detector's work into batches of at most ``max_batch`` jobs, waiting at most ``max_wait_ms``
    after the oldest job for others; at most ``max_queue`` jobs wait. ``on_batch`` is called after every batch.

    ``max_batch=1`` (or ``max_wait_ms=0`` with no backlog) is plain one-at-a-time serving."""

    def __init__(
        self,
        detector: object,
        *,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        self.detector = detector
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0
        self._thread = threading.Thread(target=self._loop, name="nanodet-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet in a running batch)."""
        return len(self._queue)

    @property
    def busy(self) -> int:
        """Jobs waiting or running."""
        with self._cond:
            return len(self._queue) + self._running

    def submit(self, image: np.ndarray, settings: SettingsKey) -> Future:
        """Queue one image; its future gives the :class:`Detections`. Raises :class:`Overloaded` or
        :class:`ShuttingDown` instead of queueing."""
        with self._cond:
            if self._closed:
                raise ShuttingDown()
            if len(self._queue) >= self.max_queue:
                raise Overloaded()
            job = Job(image, settings)
            self._queue.append(job)
            self._cond.notify()
            return job.future

    def close(self, timeout: float | None = None) -> None:
        """Take no new jobs, finish the queued ones, stop the worker (waits up to ``timeout`` seconds)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _take_batch(self) -> list[Job] | None:
        """The next batch (None when closed and drained): the oldest job plus same-settings jobs that arrive
        within ``max_wait_s`` of it being taken, up to ``max_batch``. Cancelled jobs are dropped."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch = [first]
            deadline = time.perf_counter() + self.max_wait_s
            while len(batch) < self.max_batch:
                matching = [job for job in self._queue if job.settings == first.settings]
                for job in matching[: self.max_batch - len(batch)]:
                    self._queue.remove(job)
                    batch.append(job)
                remaining = deadline - time.perf_counter()
                if len(batch) >= self.max_batch or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            self._running = len(batch)
            return batch

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            if batch:
                self._run(batch)
            with self._cond:
                self._running = 0

    def _run(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        detector = self.detector
        try:
            for name, value in batch[0].settings:
                setattr(detector, name, value)
            results: list[Detections] = detector.detect_batch([job.image for job in batch], max_batch=len(batch))
        except Exception as exc:  # noqa: BLE001 - the worker lives on; a lone job gets the error
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
            else:  # find the failing job(s): the others still get their answer
                for job in batch:
                    self._run([job])
                return
        else:
            for job, result in zip(batch, results, strict=True):
                job.future.set_result(result)
        if self._on_batch is not None:
            self._on_batch(BatchReport(len(batch), tuple(started - job.queued_at for job in batch)))
