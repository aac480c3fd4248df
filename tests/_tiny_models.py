"""Tiny ONNX graphs built with ``onnx.helper`` for backend and model-verification tests (test-only; needs onnx)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_model(path: Path, *, dynamic: bool = True, metadata: dict[str, str] | None = None) -> Path:
    """``x [B,3,H,W]`` → 1x1 conv (weights ``arange``) → ``y [B,2,H,W]``; B, H, W symbolic when ``dynamic``."""
    dims = ["batch", 3, "height", "width"] if dynamic else [1, 3, 8, 8]
    out_dims = ["batch", 2, "height", "width"] if dynamic else [1, 2, 8, 8]
    weight = numpy_helper.from_array(conv_weight(), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
        initializer=[weight],
    )
    return _save(graph, path, metadata)


def conv_weight() -> np.ndarray:
    return (np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1) - 2.5) / 4


def fake_detector(
    path: Path,
    *,
    size: tuple[int, int] = (64, 64),
    num_priors: int = 85,
    channels: tuple[int, ...] = (3, 32),
    output_names: tuple[str, ...] = ("scores", "boxes"),
    input_name: str = "images",
    metadata: dict[str, str] | None = None,
) -> Path:
    """A graph shaped like a detector: input ``[1,3,H,W]``, outputs ``[1, num_priors, c]`` per ``channels``.

    Every output is ``mean(x) * 0`` broadcast to its shape (all zeros), so nothing is detected. 85 priors is
    a 64x64 input at strides 8/16/32/64.
    """
    width, height = size
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
    ]
    initializers = [numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")]
    outputs = []
    for name, c in zip(output_names, channels, strict=True):
        initializers.append(numpy_helper.from_array(np.zeros((1, num_priors, c), np.float32), f"{name}_zero"))
        nodes.append(helper.make_node("Mul", ["m3", f"{name}_zero"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, num_priors, c]))
    graph = helper.make_graph(
        nodes,
        "fake_detector",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, height, width])],
        outputs,
        initializer=initializers,
    )
    return _save(graph, path, metadata)


def tiny_yolov7(
    path: Path,
    *,
    num_classes: int = 3,
    strides: tuple[int, ...] = (8, 16, 32),
    anchors_per_level: int = 3,
    size: tuple[int, int] | None = None,
    metadata: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """A graph shaped like YOLOv7's deploy model: ``images [B,3,H,W]`` → ``output [B, N, 5 + C]``.

    Per stride ``s``: ``AveragePool(s)`` → seeded 1x1 conv to ``na * (5 + C)`` channels → rows ordered anchor,
    then y, then x (upstream's order); the levels concatenated, sigmoided, and the box columns scaled to pixels
    (x 256), so boxes, obj and class probabilities are plausible. H, W and N are symbolic unless ``size`` (W, H).
    """
    rng = np.random.default_rng(seed)
    columns = 5 + num_classes
    width, height = size if size is not None else ("width", "height")
    rows = "rows" if size is None else anchors_per_level * sum(-(-size[0] // s) * -(-size[1] // s) for s in strides)
    nodes, initializers, levels = [], [], []
    initializers.append(numpy_helper.from_array(np.array([0, anchors_per_level, columns, -1], np.int64), "split"))
    initializers.append(numpy_helper.from_array(np.array([0, -1, columns], np.int64), "rows"))
    for s in strides:
        weight = rng.normal(0, 2, (anchors_per_level * columns, 3, 1, 1)).astype(np.float32)
        bias = rng.normal(-1, 1, anchors_per_level * columns).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{s}"), numpy_helper.from_array(bias, f"b{s}")]
        nodes += [
            helper.make_node("AveragePool", ["images"], [f"p{s}"], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("Conv", [f"p{s}", f"w{s}", f"b{s}"], [f"c{s}"]),
            helper.make_node("Reshape", [f"c{s}", "split"], [f"r{s}"]),  # [B, na, no, ny*nx]
            helper.make_node("Transpose", [f"r{s}"], [f"t{s}"], perm=[0, 1, 3, 2]),  # [B, na, ny*nx, no]
            helper.make_node("Reshape", [f"t{s}", "rows"], [f"l{s}"]),  # [B, na*ny*nx, no]
        ]
        levels.append(f"l{s}")
    scale = np.ones(columns, np.float32)
    scale[:4] = 256
    initializers.append(numpy_helper.from_array(scale, "scale"))
    nodes += [
        helper.make_node("Concat", levels, ["joined"], axis=1),
        helper.make_node("Sigmoid", ["joined"], ["probabilities"]),
        helper.make_node("Mul", ["probabilities", "scale"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_yolov7",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", rows, columns])],
        initializer=initializers,
    )
    return _save(graph, path, metadata)


def stored_head(
    path: Path,
    *,
    size: tuple[int, int],
    outputs: dict[str, tuple[tuple[int, ...], float, np.ndarray, np.ndarray]],
    input_name: str = "images",
    dynamic_hw: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A graph that returns stored head outputs: input ``[1, 3, H, W]`` of ``size`` ``(W, H)`` (H and W
    symbolic when ``dynamic_hw``; the outputs keep their shapes whatever the input), and per output
    ``name: (shape, fill, flat_index, values)`` an array of ``shape`` filled with ``fill`` except
    ``values`` (float32) at the flat positions ``flat_index`` (int64), plus ``mean(x) * 0`` so that the
    output depends on the input. Compact enough for RetinaNet's 16 M logits stored sparsely.
    """
    nodes = [helper.make_node("ReduceMean", [input_name], ["m"], axes=[0, 1, 2, 3], keepdims=0)]
    initializers = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    nodes.append(helper.make_node("Mul", ["m", "zero"], ["m0"]))
    graph_outputs = []
    for name, (shape, fill, flat_index, values) in outputs.items():
        initializers += [
            numpy_helper.from_array(np.array([int(np.prod(shape))], np.int64), f"{name}_numel"),
            numpy_helper.from_array(np.asarray(flat_index, np.int64), f"{name}_index"),
            numpy_helper.from_array(np.asarray(values, np.float32), f"{name}_values"),
            numpy_helper.from_array(np.array(shape, np.int64), f"{name}_shape"),
        ]
        fill_value = helper.make_tensor("value", TensorProto.FLOAT, [1], [fill])
        nodes += [
            helper.make_node("ConstantOfShape", [f"{name}_numel"], [f"{name}_fill"], value=fill_value),
            helper.make_node(
                "ScatterElements", [f"{name}_fill", f"{name}_index", f"{name}_values"], [f"{name}_flat"], axis=0
            ),
            helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [f"{name}_dense"]),
            helper.make_node("Add", [f"{name}_dense", "m0"], [name]),
        ]
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
    graph = helper.make_graph(
        nodes,
        "stored_head",
        [
            helper.make_tensor_value_info(
                input_name, TensorProto.FLOAT, [1, 3, *(("h", "w") if dynamic_hw else size[::-1])]
            )
        ],
        graph_outputs,
        initializer=initializers,
    )
    return _save(graph, path, metadata)


def pooled_head(
    path: Path,
    *,
    strides: tuple[int, ...],
    num_classes: int,
    logit: float | tuple[float, ...],
    metadata: dict[str, str] | None = None,
) -> Path:
    """A RetinaNet-shaped graph for any input size: input ``images [B, 3, H, W]`` (B, H, W symbolic), one anchor
    per location on levels of ``ceil(H / s) x ceil(W / s)`` for each stride ``s`` (torchvision's feature sizes on
    a canvas that is a multiple of 32), outputs ``cls_logits [B, A, num_classes]`` (every anchor's entries
    ``logit``, one for all classes or one per class: a zero-weight 1x1 conv of the max-pooled input plus that bias)
    and ``bbox_regression [B, A, 4]`` (0: the anchors themselves)."""
    nodes, initializers, levels = [], [], {"cls_logits": [], "bbox_regression": []}
    for name, width, bias in (("cls_logits", num_classes, logit), ("bbox_regression", 4, 0.0)):
        initializers += [
            numpy_helper.from_array(np.zeros((width, 3, 1, 1), np.float32), f"{name}_w"),
            numpy_helper.from_array(np.full(width, bias, np.float32), f"{name}_b"),
            numpy_helper.from_array(np.array([0, -1, width], np.int64), f"{name}_shape"),
        ]
    for stride in strides:
        nodes.append(
            helper.make_node(
                "MaxPool", ["images"], [f"p{stride}"], kernel_shape=[stride] * 2, strides=[stride] * 2, ceil_mode=1
            )
        )
        for name in levels:
            level = f"{name}_{stride}"
            nodes += [
                helper.make_node("Conv", [f"p{stride}", f"{name}_w", f"{name}_b"], [f"{level}_map"]),
                helper.make_node("Transpose", [f"{level}_map"], [f"{level}_t"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"{level}_t", f"{name}_shape"], [level]),
            ]
            levels[name].append(level)
    outputs = []
    for name, parts in levels.items():
        nodes.append(helper.make_node("Concat", parts, [name], axis=1))
        width = num_classes if name == "cls_logits" else 4
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "anchors", width]))
    graph = helper.make_graph(
        nodes,
        "pooled_head",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        outputs,
        initializer=initializers,
    )
    return _save(graph, path, metadata)
