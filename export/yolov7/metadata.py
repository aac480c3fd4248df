"""The YOLOv7 family's metadata as written into the model file (schema version 2).

All keys are strings prefixed ``nanodet.``. Common keys (every family): ``schema_version`` (2),
``model_family`` (``yolov7``), ``producer``, ``num_classes``, ``class_names``, ``input_size``
(``[W, H]``), ``dynamic_batch``, ``dynamic_hw``, ``mean`` ``[0, 0, 0]``, ``std`` ``[255, 255, 255]``
(per channel, 0-255 scale: the input is RGB / 255), ``channel_order`` (``RGB``), ``input_name``,
``source_sha256``, ``architecture`` (JSON, for humans). YOLOv7 keys:

========================  ====================  ================================================
key                       example               meaning
========================  ====================  ================================================
``predictions_output``    ``output``            ``[B, N, 5 + C]``: ``cx, cy, w, h`` (input-canvas
                                                pixels), obj, C class probabilities (sigmoided)
``strides``               ``[8, 16, 32]``       one per level, ascending
``anchors``               ``[[12, 16, ...]]``   pixels, one list of ``2 * na`` numbers per level
``letterbox_color``       ``114``               padding value of upstream's ``letterbox``
========================  ====================  ================================================

Rows: level by level, then anchor, then y, then x (``N = na * Σ (H/s)(W/s)``). The runtime reader is
the runtime's ``yolov7`` family; :meth:`YOLOv7Metadata.from_properties` here only verifies the round
trip at export.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from nanodet_infer.errors import MetadataError
from nanodet_infer.metadata import KEY_PREFIX

SCHEMA_VERSION = 2
MODEL_FAMILY = "yolov7"
LETTERBOX_COLOR = 114


@dataclass(frozen=True)
class YOLOv7Metadata:
    """The facts a YOLOv7 export embeds (see the module docstring)."""

    num_classes: int
    class_names: tuple[str, ...]
    strides: tuple[int, ...]
    anchors: tuple[tuple[float, ...], ...]
    input_size: tuple[int, int]  # (W, H)
    dynamic_batch: bool
    dynamic_hw: bool
    input_name: str
    predictions_output: str
    producer: str
    source_sha256: str
    architecture: Mapping[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    channel_order: str = "RGB"
    letterbox_color: int = LETTERBOX_COLOR
    schema_version: int = SCHEMA_VERSION
    model_family: str = MODEL_FAMILY

    def to_properties(self) -> dict[str, str]:
        """The string map written into ONNX ``metadata_props`` / OpenVINO ``rt_info``."""
        return {
            KEY_PREFIX + name: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            for name, value in asdict(self).items()
        }

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> YOLOv7Metadata:
        """Parse :meth:`to_properties`' map back (raises :class:`MetadataError` when it is not one)."""
        ours = {k[len(KEY_PREFIX) :]: v for k, v in props.items() if k.startswith(KEY_PREFIX)}
        if ours.get("model_family") != MODEL_FAMILY:
            raise MetadataError(f"model_family is {ours.get('model_family')!r}, not {MODEL_FAMILY!r}")
        try:
            values = {
                name: text if isinstance(getattr(_EXAMPLE, name), str) else json.loads(text)
                for name, text in ours.items()
                if name in _FIELDS
            }
            return cls(**{name: _frozen(value) for name, value in values.items()})
        except (TypeError, ValueError) as exc:
            raise MetadataError(f"YOLOv7 metadata is malformed: {exc}") from exc


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


_EXAMPLE = YOLOv7Metadata(0, (), (), (), (0, 0), False, False, "", "", "", "")
_FIELDS = frozenset(asdict(_EXAMPLE))
