"""YOLOv7 (WongKinYiu/yolov7) in PyTorch with upstream's module names and state_dict layout.

Typical use::

    ckpt = read_yolov7_checkpoint("best.pt")      # restricted unpickler; EMA weights as attempt_load
    model = YOLOv7(ckpt.yaml)                     # the training model, built from its YAML dict
    load_yolov7_weights(model, ckpt)              # strict
    deploy = to_deploy(model)                     # Detect head, implicit layers folded, fused
"""

from .checkpoint import YOLOv7Checkpoint, is_yolov7_checkpoint, load_yolov7_weights, read_yolov7_checkpoint
from .deploy import deploy_yaml, to_deploy
from .model import MODULES, YOLOv7, parse_model
from .presets import PRESETS, preset

__all__ = [
    "MODULES",
    "PRESETS",
    "YOLOv7",
    "YOLOv7Checkpoint",
    "deploy_yaml",
    "is_yolov7_checkpoint",
    "load_yolov7_weights",
    "parse_model",
    "preset",
    "read_yolov7_checkpoint",
    "to_deploy",
]
