"""NanoDet-Plus in PyTorch with upstream's checkpoint layout: configs, presets, checkpoint reading.

Typical use::

    ckpt = read_checkpoint("model_best.ckpt")               # safe: weights_only, EMA preferred
    cfg = load_config("config.yml")                         # or config_from_state_dict(ckpt.state_dict)
    model = build_model(cfg)
    load_weights(model, ckpt.state_dict)                    # strict
    deployed = model.deploy()                               # (scores, boxes), no aux modules
"""

from .checkpoint import Checkpoint, load_weights, read_checkpoint
from .config import PRESETS, ModelConfig, load_config, preset
from .detector import DeployedNanoDetPlus, NanoDetPlus, build_model
from .infer import config_from_state_dict
from .layers import ACTIVATIONS
from .registry import REGISTRIES, Component

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
