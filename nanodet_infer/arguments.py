"""The one place where public arguments are checked: each function returns the normalised value or raises
:class:`~nanodet_infer.errors.InvalidArgumentError` naming the argument and the fix.

numpy scalars are accepted where a Python number is (``np.int64(3)``, ``np.float32(0.5)``) and returned as
plain ``int`` / ``float``; ``bool`` is never taken for a number. Families build their foreign-model fact
checks from these helpers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

MAX_THREADS = 1024
"""Largest ``num_threads`` accepted: more threads than any CPU has is a mistake, not a request."""

PRECISIONS = ("f32", "bf16", "f16")
"""``precision`` values: ``"f32"`` (fp32 parity) or OpenVINO's reduced-precision hints."""


def check_positive_int(name: str, value: Any, maximum: int | None = None) -> int:
    """``value`` as an ``int``: any integer (numpy's too) >= 1 (and <= ``maximum``), not a bool."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1 or (maximum and value > maximum):
        limit = f" and <= {maximum}" if maximum else ""
        raise InvalidArgumentError(f"{name} must be an integer >= 1{limit}, got {_short(value)}")
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    """``value`` as a ``bool``: True / False (numpy's too), not 0/1 or strings."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentError(f"{name} must be True or False, got {_short(value)}")
    return bool(value)


def check_unit_interval(name: str, value: Any) -> float:
    """``value`` as a ``float``: any real number (numpy's too) in ``[0, 1]``, not a bool or NaN."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {_short(value)}")
    return float(value)


def check_items(name: str, value: Any, fix: str, length: int | None = None) -> tuple[Any, ...]:
    """``value`` (a list, tuple, array or other non-string iterable) as a non-empty tuple of ``length`` items."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"{name} must be a list, got {_short(value)}; {fix}")
    items = tuple(value)
    if not items or (length is not None and len(items) != length):
        raise InvalidArgumentError(f"{name} must have {length or 'at least one'} entries, got {_short(value)}; {fix}")
    return items


def check_numbers(name: str, value: Any, fix: str, length: int | None = None) -> tuple[float, ...]:
    """``value`` as a tuple of finite floats (see :func:`check_items`)."""
    numbers = check_items(name, value, fix, length)
    if any(isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) for v in numbers):
        count = f"{length} numbers" if length else "numbers"
        raise InvalidArgumentError(f"{name} must be {count}, all finite, got {_short(value)}; {fix}")
    return tuple(float(v) for v in numbers)


def check_names(name: str, value: Any) -> tuple[str, ...]:
    """``value`` as a non-empty tuple of strings (class names)."""
    fix = "pass a list of names, e.g. class_names=['cat', 'dog']"
    names = check_items(name, value, fix)
    if not all(isinstance(n, str) for n in names):
        raise InvalidArgumentError(f"{name} must be strings, got {_short(value)}; {fix}")
    return names


def check_model_path(value: Any) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as an absolute :class:`Path`; existence is the backend's check."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes) or not os.fspath(value):
        raise InvalidArgumentError(
            f"model must be the path of an .onnx or OpenVINO .xml file (str or pathlib.Path), got {_short(value)}"
        )
    path = os.fspath(value)
    if not isinstance(path, str) or "\0" in path:
        raise InvalidArgumentError(f"model must be a text path without NUL characters, got {_short(value)}")
    return Path(path).absolute()


def check_num_threads(value: Any) -> int | None:
    """``num_threads``: ``None`` (the engine's default) or an integer in ``1..MAX_THREADS``."""
    if value is None:
        return None
    return check_positive_int("num_threads", value, MAX_THREADS)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` when it is one of the strings ``choices``."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise InvalidArgumentError(f"unknown {name} {_short(value)}; choose one of {', '.join(options)}")
    return value


SETTING_CHECKS = {
    "score_threshold": check_unit_interval,
    "iou_threshold": check_unit_interval,
    "max_detections": check_positive_int,
    "keep_ratio": check_flag,
    "multi_label": check_flag,
}
"""The detector settings and their checks; ``None`` stands for the family's (or the model's) default."""


def check_setting(name: str, value: Any) -> Any:
    """One detector setting checked (see :data:`SETTING_CHECKS`); ``None`` passes as "the default"."""
    return None if value is None else SETTING_CHECKS[name](name, value)


def _short(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, so a huge argument never floods the message."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__, or an int beyond Python's int-string limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."
