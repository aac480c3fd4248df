"""The ``detr`` family's metadata section: facebookresearch/detr detection models.

======================  ===================  ==================================================================
key                     example (official)   meaning
======================  ===================  ==================================================================
``logits_output``       ``pred_logits``      output ``[B, Q, C + 1]``: class logits, the last is no-object
``boxes_output``        ``pred_boxes``       output ``[B, Q, 4]``: sigmoid (cx, cy, w, h), relative to the image
``min_size``            ``800``              eval resize: the short side (``T.RandomResize([800])``)
``max_size``            ``1333``             eval resize: the long side's bound (``max_size=1333``)
``no_object_index``     ``91``               index of the no-object logit (must be ``C``, the last)
``num_queries``         ``100``              ``Q``, the object queries (eval keeps them all)
``clip_boxes``          ``true``             clip boxes to the image (a separate step; official PostProcess does not)
======================  ===================  ==================================================================

The common ``num_classes`` is ``C`` (91 for COCO checkpoints: COCO's category ids 0..90, "N/A" where COCO has
no category), so class ids *are* COCO category ids. ``mean``/``std`` are ImageNet's on the 0-255 scale, RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import MetadataError
from ...metadata_section import MAX_INPUT_SIDE, MetadataSection, check_int_list

IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)
MAX_QUERIES = 100_000


@dataclass(frozen=True)
class DetrSection(MetadataSection):
    """The ``detr`` family's keys (see the module docstring)."""

    FAMILY: ClassVar[str] = "detr"
    KINDS: ClassVar[dict[str, str]] = {
        "logits_output": "str",
        "boxes_output": "str",
        "min_size": "int",
        "max_size": "int",
        "no_object_index": "int",
        "num_queries": "int",
        "clip_boxes": "bool",
    }
    REQUIRED: ClassVar[tuple[str, ...]] = ("no_object_index", "num_queries")
    COMMON_DEFAULTS: ClassVar[dict[str, Any]] = {
        "mean": IMAGENET_MEAN_255,
        "std": IMAGENET_STD_255,
        "channel_order": "RGB",
        "input_name": "images",
        "input_size": (1333, 800),
    }

    logits_output: str = "pred_logits"
    boxes_output: str = "pred_boxes"
    min_size: int = 800
    max_size: int = 1333
    no_object_index: int = 91
    num_queries: int = 100
    clip_boxes: bool = True

    def validate(self) -> None:
        """Raise :class:`MetadataError` naming the first field outside its range."""
        for name in ("min_size", "max_size"):
            check_int_list(name, (getattr(self, name),), 1, MAX_INPUT_SIDE, what="an integer")
        check_int_list("num_queries", (self.num_queries,), 1, MAX_QUERIES, what="an integer")
        check_int_list("no_object_index", (self.no_object_index,), 1, MAX_QUERIES, what="an integer")
        if not isinstance(self.clip_boxes, bool):
            raise MetadataError(f"clip_boxes must be true or false, got {self.clip_boxes!r}")


SECTION = DetrSection
