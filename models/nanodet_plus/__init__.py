"""NanoDet-Plus (RangiLyu/nanodet) in PyTorch with upstream's checkpoint layout: configs, presets,
architecture inference from a checkpoint's tensors."""

from .architecture import config_from_state_dict
from .config import PRESETS, ModelConfig, load_config, preset
from .layers import ACTIVATIONS
from .network import DeployedNanoDetPlus, NanoDetPlus, build_model
from .registry import REGISTRIES, Component

__all__ = [
    "ACTIVATIONS",
    "PRESETS",
    "REGISTRIES",
    "Component",
    "DeployedNanoDetPlus",
    "ModelConfig",
    "NanoDetPlus",
    "build_model",
    "config_from_state_dict",
    "load_config",
    "preset",
]
