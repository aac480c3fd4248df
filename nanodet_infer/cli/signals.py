"""SIGTERM handled like Ctrl-C, for both command lines.

``timeout``, ``kill`` and container runtimes stop a process with SIGTERM, whose default action kills
it on the spot: no ``finally`` block runs, so temporary files stay and the rows found so far are lost.
Inside :func:`terminate_like_interrupt`, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``),
so it takes exactly the clean-up path of Ctrl-C; the command then exits with :func:`exit_status`
(128 + the signal number: 130 for SIGINT, 143 for SIGTERM), printing one line.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated`; the previous handler is restored after it.

    Does nothing outside the main thread (where Python cannot install signal handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(interrupt: KeyboardInterrupt) -> tuple[int, str]:
    """``(exit status, word)`` for an interrupt: ``(143, "terminated")`` or ``(130, "interrupted")``."""
    if isinstance(interrupt, Terminated):
        return 128 + signal.SIGTERM, "terminated"
    return 128 + signal.SIGINT, "interrupted"
