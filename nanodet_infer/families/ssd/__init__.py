"""The ``ssd`` family: torchvision's SSD300-VGG16 and SSDLite320-MobileNetV3 (default boxes, softmax with
background label 0, box coder weights (10, 10, 5, 5))."""
