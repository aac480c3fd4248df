"""The ``retinanet`` family: torchvision's RetinaNet-ResNet50-FPN (FPN anchors, sigmoid, per-level top-k,
box coder weights (1, 1, 1, 1))."""
