"""The base of a family's metadata section and the range checks every section uses.

The families' ``section.py`` modules import only this module (and :mod:`.errors`), never :mod:`.metadata`, which
imports the family registry: the dependency goes one way, metadata → families → sections → this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from .errors import MetadataError

# Sanity bounds on untrusted values: a larger side would make the runtime allocate a huge canvas; a smaller
# std would overflow float32 when normalising 0..255 pixels.
MAX_INPUT_SIDE = 8192
MIN_ABS_STD = 1e-6
MAX_ABS_NORMALISATION = 1e6  # |mean| and |std| bound
MAX_NUM_CLASSES = 100_000
MAX_VALUE_CHARS = 4_000_000  # one metadata value; 100 000 class names of ~40 characters fit
MAX_JSON_DEPTH = 32
PRECISIONS = ("f32", "f16", "int8")
"""Values of the ``precision`` key."""


class MetadataSection:
    """Base of a family's metadata section: a frozen dataclass whose fields are the family's own keys.

    Subclasses set :attr:`FAMILY` (the ``model_family`` string), :attr:`KINDS` (field → one of ``int``,
    ``float``, ``bool``, ``str``, ``dict``, ``int_list``, ``float_list``, ``str_list``, ``int_lists``,
    ``float_lists``),
    :attr:`REQUIRED` (fields a file must carry), :attr:`COMMON_DEFAULTS` (this family's defaults of the
    optional common keys) and :attr:`OMITTED_AT_DEFAULT` (keys added after files existed, left out of a file
    at their default so that a file written before them reads back unchanged), and implement
    :meth:`validate`, raising :class:`MetadataError` naming the first bad field and its range.
    """

    FAMILY: ClassVar[str] = ""
    KINDS: ClassVar[Mapping[str, str]] = {}
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    COMMON_DEFAULTS: ClassVar[Mapping[str, Any]] = {}
    OMITTED_AT_DEFAULT: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`MetadataError` unless every field is within its documented range."""


def check_int(name: str, value: Any, low: int, high: int) -> None:
    """Raise :class:`MetadataError` unless ``value`` is an int (not a bool) in ``low..high``."""
    if not _is_int(value) or not low <= value <= high:
        raise MetadataError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def check_int_list(
    name: str, values: Any, low: int, high: int, *, length: int | None = None, what: str = "integers"
) -> None:
    """Raise :class:`MetadataError` unless ``values`` is a non-empty sequence of ints in ``low..high``."""
    ok = isinstance(values, (tuple, list)) and len(values) > 0 and (length is None or len(values) == length)
    if not ok or not all(_is_int(v) and low <= v <= high for v in values):
        raise MetadataError(f"{name} must be {what} in {low}..{high}, got {_thaw(values)!r}")


MAX_LEVELS = 16
"""At most this many pyramid levels in any family's metadata."""


def check_strides(strides: Any) -> None:
    """Raise :class:`MetadataError` unless ``strides`` are 1..16 strictly ascending integers in
    ``1..MAX_INPUT_SIDE`` (one per pyramid level)."""
    check_int_list("strides", strides, 1, MAX_INPUT_SIDE, what="positive integers")
    if len(strides) > MAX_LEVELS or list(strides) != sorted(set(strides)):
        raise MetadataError(f"strides must be strictly ascending, at most {MAX_LEVELS} levels, got {list(strides)!r}")


def check_number(name: str, value: Any, low: float, high: float) -> None:
    """Raise :class:`MetadataError` unless ``value`` is a finite real number in ``[low, high]``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not low <= value <= high:
        raise MetadataError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _thaw(value: Any) -> Any:
    """Tuples as lists, recursively, for JSON."""
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value
