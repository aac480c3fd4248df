"""facebookresearch/detr in the official state-dict layout: the model (:mod:`.model`) and its checkpoint reader
(:mod:`.checkpoint`: hub and ``main.py`` layouts, architecture read from the tensors)."""

from .checkpoint import DetrCheckpoint, DetrConfig, read_detr_checkpoint
from .model import DETR, build_detr

__all__ = ["DETR", "DetrCheckpoint", "DetrConfig", "build_detr", "read_detr_checkpoint"]
