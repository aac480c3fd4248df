"""YOLOv7's metadata section: its own ``nanodet.*`` keys, their defaults and ranges.

==========================  ==========================  ==============================================
key                         example                     meaning
==========================  ==========================  ==============================================
``predictions_output``      ``output``                  output ``[B, N, 5 + C]``, float32 (see below)
``strides``                 ``[8, 16, 32]``             JSON list, one per level, strictly ascending
                                                        (1..MAX_INPUT_SIDE, at most 16 levels)
``anchors``                 ``[[12, 16, 19, 36, ...]]``  JSON, per level ``2 * na`` numbers (w, h pairs)
                                                        in input pixels, ``na`` equal on every level
``letterbox_color``         ``114``                     letterbox padding value, 0..255
==========================  ==========================  ==============================================

Output layout: exactly what upstream's deploy ``Detect`` returns in eval mode — rows level by level (stride
order), then anchor, then y, then x (``ceil(H / s) * ceil(W / s) * na`` rows per level), columns
``[cx, cy, w, h, obj, cls_0 .. cls_{C-1}]`` with the box decoded in network-input pixels and obj/cls
sigmoided. Common keys default to detect.py's input: ``input_size=[640, 640]``, RGB, mean 0, std 255 (a true
``/ 255``), ``input_name=images``, ``dynamic_hw=true`` (detect.py's minimal-rectangle letterbox gives every
image its own canvas, a multiple of the largest stride; a static export runs the square letterbox).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import MetadataError
from ...metadata_section import MetadataSection, check_int_list, check_strides

MAX_ANCHOR = 1e6  # pixels; finite, positive and below this
LETTERBOX_COLOR = 114
"""Upstream ``letterbox``'s padding value (each channel)."""

UPSTREAM_ANCHORS: dict[int, tuple[tuple[float, ...], ...]] = {
    3: ((12, 16, 19, 36, 40, 28), (36, 75, 76, 55, 72, 146), (142, 110, 192, 243, 459, 401)),
    4: (
        (19, 27, 44, 40, 38, 94),
        (96, 68, 86, 152, 180, 137),
        (140, 301, 303, 264, 238, 542),
        (436, 615, 739, 380, 925, 792),
    ),
}
"""Upstream's default anchors (pixels) by level count: ``cfg/*/yolov7.yaml`` (P3-P5), ``yolov7-w6.yaml`` (P3-P6)."""


@dataclass(frozen=True)
class YoloV7Section(MetadataSection):
    """YOLOv7's keys (see the module docstring)."""

    FAMILY: ClassVar[str] = "yolov7"
    KINDS: ClassVar[dict[str, str]] = {
        "predictions_output": "str",
        "strides": "int_list",
        "anchors": "float_lists",
        "letterbox_color": "int",
    }
    REQUIRED: ClassVar[tuple[str, ...]] = ("strides", "anchors")
    COMMON_DEFAULTS: ClassVar[dict[str, Any]] = {
        "input_size": (640, 640),
        "mean": (0.0, 0.0, 0.0),
        "std": (255.0, 255.0, 255.0),
        "channel_order": "RGB",
        "input_name": "images",
        "dynamic_hw": True,
    }

    predictions_output: str = "output"
    strides: tuple[int, ...] = (8, 16, 32)
    anchors: tuple[tuple[float, ...], ...] = UPSTREAM_ANCHORS[3]
    letterbox_color: int = LETTERBOX_COLOR

    def validate(self) -> None:
        """Raise :class:`MetadataError` naming the first field outside its range."""
        check_strides(self.strides)
        levels = self.anchors if isinstance(self.anchors, tuple) else ()
        sizes = {len(level) if isinstance(level, tuple) else -1 for level in levels}
        if len(levels) != len(self.strides) or len(sizes) != 1 or min(sizes) < 2 or min(sizes) % 2:
            raise MetadataError(
                f"anchors must hold one list of 2 * na numbers per stride ({len(self.strides)} levels, the same na "
                f"on each), got {self.anchors!r}"
            )
        values = [v for level in levels for v in level]
        numbers = all(isinstance(v, float | int) and not isinstance(v, bool) for v in values)
        if not numbers or not all(math.isfinite(v) and 0 < v < MAX_ANCHOR for v in values):
            raise MetadataError(f"anchors must be finite positive pixel sizes below {MAX_ANCHOR:g}")
        check_int_list("letterbox_color", (self.letterbox_color,), 0, 255, what="an integer")

    @property
    def anchors_per_level(self) -> int:
        """``na``: anchors (output rows) per grid cell and level."""
        return len(self.anchors[0]) // 2

    @property
    def max_stride(self) -> int:
        """The largest stride: the minimal-rectangle letterbox pads to a multiple of it."""
        return self.strides[-1]


SECTION = YoloV7Section
