"""torchvision's SSD300-VGG16 and SSDLite320-MobileNetV3-Large (runtime family ``ssd``), without torchvision."""

from .ssd import SSD, ssd300_vgg16, ssdlite320_mobilenet_v3_large

__all__ = ["SSD", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large"]
