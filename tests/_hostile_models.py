"""Hostile model files built with ``onnx.helper``: control flow, duplicate metadata keys (test-only; needs onnx).

Every graph maps ``x [1, 3, 8, 8]`` to ``y [1, 3, 8, 8]``; none is a detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from _tiny_models import OPSET
from onnx import TensorProto, helper, numpy_helper

SHAPE = [1, 3, 8, 8]
INT64_MAX = 2**63 - 1


def loop_body() -> onnx.GraphProto:
    """A ``Loop`` body: ``v += 1``, the condition passed through (so it stays true)."""
    return helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, SHAPE),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, SHAPE),
        ],
        initializer=[numpy_helper.from_array(np.float32(1), "one")],
    )


def loop_node(trip_count: str, output: str = "y") -> onnx.NodeProto:
    """``Loop(trip_count, cond=true, x)``: ``x + (number of iterations)``; ``trip_count=""`` loops on the condition."""
    return helper.make_node("Loop", [trip_count, "cond", "x"], [output], body=loop_body())


def save(path: Path, nodes: list[onnx.NodeProto], *, trip_count: int | None = None, metadata=(), **model_kw) -> Path:
    """Save ``nodes`` (``x`` → ``y``) with the initializers ``cond`` (true) and ``M`` (``trip_count``) and the
    metadata ``(key, value)`` pairs in order (repeats kept)."""
    inits = [numpy_helper.from_array(np.array(True), "cond")]
    if trip_count is not None:
        inits.append(numpy_helper.from_array(np.array(trip_count, np.int64), "M"))
    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", OPSET), *model_kw.pop("extra_opsets", [])]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8, **model_kw)
    for key, value in metadata:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def loop_model(path: Path, trip_count: int | None = INT64_MAX) -> Path:
    """``x + trip_count`` by a ``Loop``; the default trip count (and ``None``, a condition-only loop) never ends."""
    return save(path, [loop_node("" if trip_count is None else "M")], trip_count=trip_count)


def if_model(path: Path, *, hide_loop: bool) -> Path:
    """``If(cond)``: then ``x``, else ``x + 1`` (``hide_loop``: by a never-ending ``Loop``)."""
    out = helper.make_tensor_value_info("t", TensorProto.FLOAT, SHAPE)
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [out])
    other = [loop_node("M", "e")] if hide_loop else [helper.make_node("Add", ["x", "one"], ["e"])]
    orelse = helper.make_graph(
        other,
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, SHAPE)],
        initializer=[] if hide_loop else [numpy_helper.from_array(np.float32(1), "one")],
    )
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=orelse)
    return save(path, [node], trip_count=INT64_MAX)


def function_model(path: Path) -> Path:
    """The graph calls a model-local function ``local.Hidden`` whose body is a never-ending ``Loop``."""
    function = helper.make_function(
        "local",
        "Hidden",
        ["fx", "M", "cond"],
        ["fy"],
        [helper.make_node("Loop", ["M", "cond", "fx"], ["fy"], body=loop_body())],
        [helper.make_opsetid("", OPSET)],
    )
    node = helper.make_node("Hidden", ["x", "M", "cond"], ["y"], domain="local")
    return save(
        path, [node], trip_count=INT64_MAX, functions=[function], extra_opsets=[helper.make_opsetid("local", 1)]
    )


def scan_model(path: Path) -> Path:
    """A ``Scan`` over ``x``'s first axis (its body is the ``Loop`` body's ``Add``)."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "one"], ["s_out"])],
        "scan_body",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, SHAPE[1:])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, SHAPE[1:])],
        initializer=[numpy_helper.from_array(np.float32(1), "one")],
    )
    node = helper.make_node("Scan", ["x"], ["y"], body=body, num_scan_inputs=1)
    return save(path, [node])


def custom_subgraph_model(path: Path) -> Path:
    """A contrib op carrying a subgraph (as ``com.microsoft.BeamSearch`` does): control flow inside an engine."""
    node = helper.make_node("BeamSearch", ["x"], ["y"], domain="com.microsoft", decoder=loop_body())
    return save(path, [node], extra_opsets=[helper.make_opsetid("com.microsoft", 1)])


def duplicate_key_model(path: Path, key: str = "nanodet.num_classes") -> Path:
    """``y = x`` whose metadata holds ``key`` twice: ``"3"`` then ``"80"``."""
    return save(path, [helper.make_node("Identity", ["x"], ["y"])], metadata=[(key, "3"), ("other", "x"), (key, "80")])
