"""NanoDet-Plus's metadata section: its own ``nanodet.*`` keys, their defaults and ranges.

==========================  ====================  ==============================================
key                         example               meaning
==========================  ====================  ==============================================
``reg_max``                 ``7``                 box distribution has ``reg_max + 1`` bins per side (1..255)
``strides``                 ``[8, 16, 32, 64]``   JSON list, one per pyramid level, strictly ascending
                                                  (1..MAX_INPUT_SIDE, at most 16 levels)
``keep_ratio``              ``false``             training resize: stretch (false) or keep ratio
``resize_arithmetic``       ``opencv-5.0``        the OpenCV warp arithmetic the model was trained with
                                                  (``opencv-5.0`` or ``opencv-4``; see ``warp.py``)
``prior_offset``            ``0.0``               prior centre = ``(index + offset) * stride``, in [0, 1]
``scores_output``           ``scores``            output ``[B, N, C]``, float32
``boxes_output``            ``boxes``             output ``[B, N, 4 * (reg_max + 1)]``, float32
``scores_activation``       ``sigmoid``           ``sigmoid``: scores are probabilities already; ``none``: logits
``box_side_order``          ``ltrb``              the 4 bin groups: left, top, right, bottom
==========================  ====================  ==============================================

Output layout: N priors ordered level by level (stride 8 first), row-major (y outer, x inner)
within a level, with ``ceil(H / stride) * ceil(W / stride)`` priors per level. Common keys default to
upstream's BGR mean/std, ``channel_order=BGR``, ``input_name=images``, ``input_size=[320, 320]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import MetadataError
from ...metadata_section import MetadataSection, check_int, check_number, check_strides
from .warp import ARITHMETICS, DEFAULT_ARITHMETIC

UPSTREAM_MEAN_BGR = (103.53, 116.28, 123.675)
UPSTREAM_STD_BGR = (57.375, 57.12, 58.395)
MAX_REG_MAX = 255


@dataclass(frozen=True)
class NanoDetPlusSection(MetadataSection):
    """NanoDet-Plus's keys (see the module docstring)."""

    FAMILY: ClassVar[str] = "nanodet-plus"
    KINDS: ClassVar[dict[str, str]] = {
        "reg_max": "int",
        "strides": "int_list",
        "keep_ratio": "bool",
        "resize_arithmetic": "str",
        "prior_offset": "float",
        "scores_output": "str",
        "boxes_output": "str",
        "scores_activation": "str",
        "box_side_order": "str",
    }
    REQUIRED: ClassVar[tuple[str, ...]] = ("reg_max", "strides")
    OMITTED_AT_DEFAULT: ClassVar[tuple[str, ...]] = ("resize_arithmetic",)
    COMMON_DEFAULTS: ClassVar[dict[str, Any]] = {
        "input_size": (320, 320),
        "mean": UPSTREAM_MEAN_BGR,
        "std": UPSTREAM_STD_BGR,
        "channel_order": "BGR",
        "input_name": "images",
    }

    reg_max: int = 7
    strides: tuple[int, ...] = (8, 16, 32, 64)
    keep_ratio: bool = False
    resize_arithmetic: str = DEFAULT_ARITHMETIC
    prior_offset: float = 0.0
    scores_output: str = "scores"
    boxes_output: str = "boxes"
    scores_activation: str = "sigmoid"
    box_side_order: str = "ltrb"

    def validate(self) -> None:
        """Raise :class:`MetadataError` naming the first field outside its range."""
        check_int("reg_max", self.reg_max, 1, MAX_REG_MAX)
        check_strides(self.strides)
        if not isinstance(self.keep_ratio, bool):
            raise MetadataError(f"keep_ratio must be true or false, got {self.keep_ratio!r}")
        if self.resize_arithmetic not in ARITHMETICS:
            raise MetadataError(
                f"resize_arithmetic must be one of {', '.join(ARITHMETICS)}, got {self.resize_arithmetic!r}"
            )
        check_number("prior_offset", self.prior_offset, 0.0, 1.0)
        if self.scores_activation not in ("sigmoid", "none"):
            raise MetadataError(f"scores_activation must be 'sigmoid' or 'none', got {self.scores_activation!r}")
        if self.box_side_order != "ltrb":
            raise MetadataError(f"box_side_order must be 'ltrb', got {self.box_side_order!r}")

    @property
    def num_box_channels(self) -> int:
        """Channels of the box output: ``4 * (reg_max + 1)``."""
        return 4 * (self.reg_max + 1)


SECTION = NanoDetPlusSection
