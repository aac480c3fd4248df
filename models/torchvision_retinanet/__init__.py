"""torchvision's RetinaNet-ResNet50-FPN v1 (runtime family ``retinanet``), without torchvision."""

from .retinanet import RetinaNet

__all__ = ["RetinaNet"]
