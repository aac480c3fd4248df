"""The ``retinanet`` family's metadata section: torchvision RetinaNet-ResNet50-FPN (v1).

==========================  ==============================  =============================================
key                         example (torchvision default)   meaning
==========================  ==============================  =============================================
``scores_output``           ``cls_logits``                  output ``[B, A, C]``: raw class logits
``boxes_output``            ``bbox_regression``             output ``[B, A, 4]``: raw box-coder deltas
``min_size``                ``800``                         ``GeneralizedRCNNTransform.min_size``
``max_size``                ``1333``                        ``GeneralizedRCNNTransform.max_size``
``size_divisible``          ``32``                          the padded canvas is a multiple of this
``strides``                 ``[8, 16, 32, 64, 128]``        nominal stride of each pyramid level (P3..P7)
``anchor_sizes``            ``[[32, 40, 50], ...]``         ``AnchorGenerator.sizes``, per level
``anchor_aspect_ratios``    ``[[0.5, 1.0, 2.0], ...]``      ``AnchorGenerator.aspect_ratios``, per level
``box_coder_weights``       ``[1, 1, 1, 1]``                ``BoxCoder.weights``
``bbox_xform_clip``         ``4.135166556742356``           ``BoxCoder.bbox_xform_clip`` (``log(1000/16)``)
``score_thresh``            ``0.05``                        ``RetinaNet.score_thresh``: default ``score_threshold``
``nms_thresh``              ``0.5``                         ``RetinaNet.nms_thresh``: default ``iou_threshold``
``detections_per_img``      ``300``                         ``RetinaNet.detections_per_img``: default ``max_detections``
``topk_candidates``         ``1000``                        ``RetinaNet.topk_candidates`` (per level)
==========================  ==============================  =============================================

Every key defaults to ``retinanet_resnet50_fpn``'s value. The transform keeps the aspect ratio (short side to
``min_size`` unless the long side would pass ``max_size``), normalises with the common ``mean``/``std``
(0-255 scale, RGB; torchvision's values times 255) and pads to ``size_divisible``; the model should be
exported with dynamic H/W (a static input is used as a fixed canvas, see the family). Labels are the head's
class indices, ``0 .. C-1``; unlike SSD, class 0 is a real class (torchvision's COCO names call it
``__background__``, but RetinaNet scores it like any other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...errors import MetadataError
from ...metadata_section import MAX_INPUT_SIDE, check_int_list, check_strides
from ..torchvision_section import TorchvisionSection, check_float_lists

TORCHVISION_ANCHOR_SIZES = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in (32, 64, 128, 256, 512))
"""``retinanet_resnet50_fpn``'s anchor sizes: three octave scales per level, truncated to integers."""


@dataclass(frozen=True)
class RetinaNetSection(TorchvisionSection):
    """The ``retinanet`` family's keys (see the module docstring); the shared ones' defaults are RetinaNet's."""

    FAMILY: ClassVar[str] = "retinanet"
    KINDS: ClassVar[dict[str, str]] = {
        **TorchvisionSection.KINDS,
        "min_size": "int",
        "max_size": "int",
        "size_divisible": "int",
        "strides": "int_list",
        "anchor_sizes": "float_lists",
        "anchor_aspect_ratios": "float_lists",
    }

    min_size: int = 800
    max_size: int = 1333
    size_divisible: int = 32
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    anchor_sizes: tuple[tuple[float, ...], ...] = tuple(
        tuple(float(s) for s in level) for level in TORCHVISION_ANCHOR_SIZES
    )
    anchor_aspect_ratios: tuple[tuple[float, ...], ...] = ((0.5, 1.0, 2.0),) * 5

    def validate(self) -> None:
        """Raise :class:`MetadataError` naming the first field outside its range."""
        for name in ("min_size", "max_size", "size_divisible"):
            check_int_list(name, (getattr(self, name),), 1, MAX_INPUT_SIDE, what="an integer")
        levels = len(self.strides)
        check_strides(self.strides)
        for name in ("anchor_sizes", "anchor_aspect_ratios"):
            if len(getattr(self, name)) != levels:
                raise MetadataError(f"{name} must hold one list per level ({levels}), got {len(getattr(self, name))}")
        check_float_lists("anchor_sizes", self.anchor_sizes, 1e-3, 1e5)
        check_float_lists("anchor_aspect_ratios", self.anchor_aspect_ratios, 1e-6, 1e6)
        super().validate()


SECTION = RetinaNetSection
