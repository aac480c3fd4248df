"""The ``detr`` family: facebookresearch/detr (set prediction: softmax over C + 1, no-object last, no NMS)."""
