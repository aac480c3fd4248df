"""Built-in YOLOv7 training YAMLs (upstream ``cfg/training/*.yaml``, COCO's 80 classes).

Their deploy counterparts (upstream ``cfg/deploy/*.yaml``) are derived by :func:`~.deploy.deploy_yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nanodet_infer.errors import InvalidArgumentError

PRESET_DIR = Path(__file__).with_name("presets")
PRESETS = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))


def preset(name: str) -> dict[str, Any]:
    """The YAML dict of the built-in training config ``name`` (e.g. ``"yolov7-tiny"``)."""
    if name not in PRESETS:
        raise InvalidArgumentError(f"unknown YOLOv7 preset {name!r}; choose one of {', '.join(PRESETS)}")
    return yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
