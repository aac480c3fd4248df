"""torchvision's RetinaNet-ResNet50-FPN v1 (runtime family ``retinanet``), without torchvision."""

from .retinanet import RETINANET_FACTS, RetinaNet

__all__ = ["RETINANET_FACTS", "RetinaNet"]
