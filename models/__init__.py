"""PyTorch model definitions of the supported detector families, one sub-package each, with their
upstream's checkpoint layouts.

- :mod:`.nanodet_plus` — NanoDet-Plus (its public names are re-exported here, as before families);
- :mod:`.yolov7` — YOLOv7 (WongKinYiu/yolov7), including the restricted unpickler for its checkpoints;
- :mod:`.torchvision_ssd`, :mod:`.torchvision_retinanet` — torchvision's SSD300-VGG16 / SSDLite320 and
  RetinaNet-ResNet50-FPN in torchvision's key layout; :mod:`.torchvision_checkpoint` reads, recognises
  and strictly loads their checkpoints (:func:`~.torchvision_checkpoint.build_torchvision_model`).

:mod:`.checkpoint` holds what every family's checkpoint reader shares (archive bounds, the weights-only load,
the strict-fit check); :mod:`.nanodet_plus.checkpoint` reads NanoDet-Plus's ``.ckpt``/``.pth``.

Typical use (NanoDet-Plus)::

    ckpt = read_checkpoint("model_best.ckpt")               # safe: weights_only, EMA preferred
    cfg = load_config("config.yml")                         # or config_from_state_dict(ckpt.state_dict)
    model = build_model(cfg)
    load_weights(model, ckpt.state_dict)                    # strict
    deployed = model.deploy()                               # (scores, boxes), no aux modules
"""

from .nanodet_plus import (
    ACTIVATIONS,
    PRESETS,
    REGISTRIES,
    Component,
    DeployedNanoDetPlus,
    ModelConfig,
    NanoDetPlus,
    build_model,
    config_from_state_dict,
    load_config,
    preset,
)
from .nanodet_plus.checkpoint import Checkpoint, load_weights, read_checkpoint

__all__ = [
    "ACTIVATIONS",
    "PRESETS",
    "REGISTRIES",
    "Checkpoint",
    "Component",
    "DeployedNanoDetPlus",
    "ModelConfig",
    "NanoDetPlus",
    "build_model",
    "config_from_state_dict",
    "load_config",
    "load_weights",
    "preset",
    "read_checkpoint",
]
