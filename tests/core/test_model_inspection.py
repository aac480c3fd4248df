"""The torch-free model inspector (``nanodet_infer.backends.inspection``) against ``onnx``'s own parser, and
the hazards it refuses before an engine reads the file: control flow, duplicate metadata keys, hostile XML."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from xml.etree import ElementTree

import _hostile_models as hostile
import numpy as np
import onnx
import pytest
from _tiny_models import conv_model, fake_detector
from conftest import SHAPES
from hypothesis import given, settings
from hypothesis import strategies as st

from nanodet_infer import Detector
from nanodet_infer.backends import create_backend, inspect_model
from nanodet_infer.backends import inspection as inspection_module
from nanodet_infer.errors import InvalidArgumentError, MetadataError, ModelLoadError, UnsafeModelError

ENGINES = ("onnxruntime", "openvino")


# ---------------------------------------------------------------------------------------------- reference
def _nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Nodes of the main graph, of every subgraph of a node attribute (recursively) and of local functions."""
    stack = [model.graph.node, *(f.node for f in model.functions)]
    while stack:
        for node in stack.pop():
            yield node
            for attr in node.attribute:
                stack.extend([attr.g.node] if attr.HasField("g") else [])
                stack.extend(g.node for g in attr.graphs)


def reference_op_types(model: onnx.ModelProto) -> set[tuple[str, str]]:
    ops = {(_text(n.domain), _text(n.op_type)) for n in _nodes(model)}
    return {("" if domain == "ai.onnx" else domain, op) for domain, op in ops}


def _text(value: str | bytes) -> str:
    """protobuf gives a string field that is not UTF-8 as bytes; the inspector keeps them as surrogates."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _assert_matches_onnx(path: Path) -> None:
    model = onnx.load(str(path), load_external_data=False)
    report = inspect_model(path)
    assert report.op_types == reference_op_types(model)
    assert report.metadata_keys == tuple(p.key for p in model.metadata_props)


HOSTILE: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    # case: (make the file, control-flow ops reported)
    "Loop, huge trip count": (hostile.loop_model, ("Loop",)),
    "Loop, condition only": (lambda p: hostile.loop_model(p, None), ("Loop",)),
    "If hiding a Loop in a branch": (lambda p: hostile.if_model(p, hide_loop=True), ("Loop",)),
    "Loop in a model-local function": (hostile.function_model, ("Loop",)),
    "Scan": (hostile.scan_model, ("Scan",)),
    "contrib op with a subgraph": (hostile.custom_subgraph_model, ("com.microsoft.BeamSearch",)),
}


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda path: SHAPES / "upstream_export.onnx", id="upstream export"),
        pytest.param(lambda path: conv_model(path, metadata={"k": "v", "nanodet.x": "1"}), id="conv"),
        pytest.param(lambda path: fake_detector(path, metadata={"nanodet.num_classes": "3"}), id="detector"),
        pytest.param(lambda path: hostile.if_model(path, hide_loop=False), id="If"),
        pytest.param(hostile.duplicate_key_model, id="duplicate key"),
        *(pytest.param(make, id=case) for case, (make, _) in HOSTILE.items()),
    ],
)
def test_report_matches_onnx(make, tmp_path):
    _assert_matches_onnx(make(tmp_path / "m.onnx"))


@pytest.mark.parametrize("ir", ["metadata_ir", "loop_ir"])
def test_ir_report_matches_element_tree(ir, request):
    """Layer types at every depth (Loop bodies too) and rt_info keys, as ElementTree reads the .xml."""
    _assert_matches_element_tree(request.getfixturevalue(ir))


def _assert_matches_element_tree(xml: Path) -> None:
    root = ElementTree.parse(xml).getroot()
    keys = [
        f"{section.tag}/{entry.get('name') if entry.tag == 'info' else entry.tag}"
        for section in root.find("rt_info")
        for entry in section
    ]
    report = inspect_model(xml)
    assert report.op_types == {("", layer.get("type")) for layer in root.iter("layer")}
    assert [k for k in report.metadata_keys if "/" in k] == keys


@pytest.fixture(scope="module")
def exported(shared_fixtures, tmp_path_factory, one_torch_thread) -> dict[str, Path]:
    """The shapes checkpoint exported by nanodet-export: ONNX and IR, both carrying our metadata."""
    from nanodet_export import export_checkpoint

    checkpoint = shared_fixtures / "shapes-m-256" / "nanodet_model_best.pth"
    out = tmp_path_factory.mktemp("exported")
    return {
        fmt: export_checkpoint(checkpoint, out / f"m{suffix}", config=SHAPES / "config.yml", fmt=fmt).path
        for fmt, suffix in (("onnx", ".onnx"), ("openvino", ".xml"))
    }


@pytest.mark.shared
@pytest.mark.slow
def test_exported_models_read_like_onnx_and_element_tree(exported):
    _assert_matches_onnx(exported["onnx"])
    assert "nanodet.num_classes" in inspect_model(exported["onnx"]).metadata_keys
    _assert_matches_element_tree(exported["openvino"])
    assert "model_info/nanodet.num_classes" in inspect_model(exported["openvino"]).metadata_keys


def test_every_truncation_is_refused_or_read_like_onnx(tmp_path):
    """Cut a small model at every byte: the inspector agrees with protobuf (a prefix that parses gives the same
    report; one that does not is a one-line ModelLoadError), and never raises anything else."""
    data = hostile.if_model(tmp_path / "if.onnx", hide_loop=True).read_bytes()
    cut = tmp_path / "cut.onnx"
    for size in range(1, len(data)):
        cut.write_bytes(data[:size])
        try:
            model = onnx.ModelProto.FromString(data[:size])
        except Exception:  # protobuf's DecodeError
            with pytest.raises(ModelLoadError, match="cannot load") as info:
                inspect_model(cut)
            assert "\n" not in str(info.value)
            continue
        report = inspect_model(cut)
        assert report.op_types == reference_op_types(model), size


@settings(max_examples=300, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4))
def test_corrupted_bytes_are_refused_or_read_like_onnx(flips, tmp_path_factory):
    """Random byte changes: a ModelLoadError, or (when protobuf also parses the bytes) onnx's own op types."""
    folder = tmp_path_factory.mktemp("flip")
    data = bytearray(hostile.function_model(folder / "m.onnx").read_bytes())
    for at, xor in flips:
        data[at % len(data)] ^= xor
    path = folder / "flipped.onnx"
    path.write_bytes(bytes(data))
    try:
        report = inspect_model(path)
    except ModelLoadError as exc:
        assert "\n" not in str(exc)
        return
    try:
        model = onnx.ModelProto.FromString(bytes(data))
    except Exception:  # protobuf refuses what we read: e.g. invalid UTF-8 in a string field
        return
    assert report.op_types == reference_op_types(model)
    assert report.metadata_keys == tuple(_text(p.key) for p in model.metadata_props)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"\x08", "truncated"),  # a tag without its value
        (b"\x3a\x05abc", "truncated"),  # graph declared 5 bytes, 3 present
        (b"\x0b\x00", "wire type 3"),  # a protobuf group: never in ONNX
        (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x00\x01 definitely not a protobuf", "field number 0"),
    ],
)
def test_malformed_protobuf_is_a_model_load_error(data, fragment, tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match=fragment):
        inspect_model(path)


def test_deep_nesting_is_refused_without_recursion_error(tmp_path):
    """Subgraphs nested 200 deep (hand-encoded: onnx refuses to build them) are refused, not a RecursionError."""

    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    graph = field(1, field(4, b"Relu"))  # graph { node { op_type: "Relu" } }
    for _ in range(200):  # graph { node { op_type: "If", attribute { g: graph } } }
        graph = field(1, field(4, b"If") + field(5, field(6, graph)))
    path = tmp_path / "deep.onnx"
    path.write_bytes(field(7, graph))
    with pytest.raises(ModelLoadError, match="nested deeper than 64"):
        inspect_model(path)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


# ---------------------------------------------------------------------------------------------- control flow
@pytest.mark.parametrize("case", list(HOSTILE))
def test_control_flow_is_refused_before_the_engine_reads_it(case, tmp_path, monkeypatch):
    make, ops = HOSTILE[case]
    path = make(tmp_path / "m.onnx")
    assert path.stat().st_size < 1024
    assert inspect_model(path).control_flow == ops
    _engines_must_not_load(monkeypatch)
    for engine in ENGINES:
        with pytest.raises(UnsafeModelError, match=f"contains '{ops[0]}' .*allow_control_flow=True") as info:
            Detector(path, backend=engine)
        assert "\n" not in str(info.value)


def _engines_must_not_load(monkeypatch) -> None:
    import onnxruntime
    import openvino

    def refuse(*args, **kwargs):
        raise AssertionError("the engine was given the file")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    monkeypatch.setattr(openvino, "Core", refuse)


def test_if_without_a_loop_is_accepted(tmp_path):
    path = hostile.if_model(tmp_path / "if.onnx", hide_loop=False)
    assert inspect_model(path).control_flow == ()
    for engine in ENGINES:
        backend = create_backend(path, engine)
        np.testing.assert_array_equal(backend.run(np.zeros((1, 3, 8, 8), np.float32))[0], 0.0)  # cond: then-branch


@pytest.mark.parametrize("engine", ENGINES)
def test_allow_control_flow_runs_a_bounded_loop(engine, tmp_path):
    """The opt-in for trusted foreign models: a Loop of 3 iterations loads and runs (x + 3)."""
    path = hostile.loop_model(tmp_path / "loop3.onnx", trip_count=3)
    backend = create_backend(path, engine, allow_control_flow=True)
    np.testing.assert_array_equal(backend.run(np.ones((1, 3, 8, 8), np.float32))[0], 4.0)


def test_allow_control_flow_must_be_a_bool(tmp_path):
    path = hostile.loop_model(tmp_path / "loop3.onnx", trip_count=3)
    for value in ("yes", 1, None):
        with pytest.raises(InvalidArgumentError, match="allow_control_flow"):
            create_backend(path, "onnxruntime", allow_control_flow=value)


@pytest.fixture(scope="module")
def loop_ir(tmp_path_factory) -> Path:
    """A bounded Loop (3 iterations) as an OpenVINO IR (OpenVINO keeps it as a Loop layer)."""
    import openvino as ov

    folder = tmp_path_factory.mktemp("ir")
    xml = folder / "loop.xml"
    ov.save_model(ov.convert_model(str(hostile.loop_model(folder / "loop.onnx", 3))), str(xml))
    return xml


def test_ir_control_flow_is_refused_unless_allowed(loop_ir):
    assert inspect_model(loop_ir).control_flow == ("Loop",)
    with pytest.raises(UnsafeModelError, match="contains 'Loop'"):
        create_backend(loop_ir, "openvino")
    backend = create_backend(loop_ir, "openvino", allow_control_flow=True)
    np.testing.assert_array_equal(backend.run(np.zeros((1, 3, 8, 8), np.float32))[0], 3.0)


def test_tensor_iterator_layer_is_refused(loop_ir, tmp_path):
    xml = _rewrite_ir(loop_ir, tmp_path / "ti.xml", 'type="Loop"', 'type="TensorIterator"')
    with pytest.raises(UnsafeModelError, match="contains 'TensorIterator'"):
        create_backend(xml, "openvino")


def _rewrite_ir(source: Path, target: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    target.with_suffix(".bin").write_bytes(source.with_suffix(".bin").read_bytes())
    return target


# ---------------------------------------------------------------------------------------------- duplicate keys
def test_duplicate_metadata_key_is_refused_on_both_engines(tmp_path, monkeypatch):
    """The hazard: ONNX Runtime reads the last value ("80"), OpenVINO the first ("3"); both are refused."""
    import onnxruntime as ort
    import openvino as ov

    path = hostile.duplicate_key_model(tmp_path / "dup.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["nanodet.num_classes"] == "80"
    assert ov.Core().read_model(str(path)).get_rt_info(["framework", "nanodet.num_classes"]).value == "3"
    assert inspect_model(path).duplicate_keys == ("nanodet.num_classes",)
    _engines_must_not_load(monkeypatch)
    for engine in ENGINES:
        with pytest.raises(MetadataError, match="'nanodet.num_classes' 2 times"):
            Detector(path, backend=engine, allow_control_flow=True)  # the opt-in does not cover duplicates


@pytest.fixture(scope="module")
def metadata_ir(tmp_path_factory) -> Path:
    """The shapes model as an IR with two model_info keys."""
    import openvino as ov

    model = ov.convert_model(str(SHAPES / "upstream_export.onnx"))
    model.set_rt_info("3", ["model_info", "nanodet.num_classes"])
    model.set_rt_info("v", ["model_info", "a key with spaces"])
    xml = tmp_path_factory.mktemp("ir") / "m.xml"
    ov.save_model(model, str(xml))
    return xml


def test_ir_metadata_keys(metadata_ir):
    keys = inspect_model(metadata_ir).metadata_keys
    assert {"model_info/nanodet.num_classes", "model_info/a key with spaces"} <= set(keys)
    assert inspect_model(metadata_ir).duplicate_keys == ()


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        (
            '<nanodet.num_classes value="3" />',
            '<nanodet.num_classes value="3" /><nanodet.num_classes value="80" />',
            "model_info/nanodet.num_classes",
        ),
        (
            '<info name="a key with spaces" value="v" />',
            '<info name="a key with spaces" value="v" /><info name="a key with spaces" value="w" />',
            "model_info/a key with spaces",
        ),
        ("<model_info>", "<model_info></model_info><model_info>", "model_info"),
    ],
    ids=["tag key", "info name key", "section"],
)
def test_ir_duplicate_rt_info_key_is_refused(old, new, key, metadata_ir, tmp_path):
    xml = _rewrite_ir(metadata_ir, tmp_path / "dup.xml", old, new)
    with pytest.raises(MetadataError, match=f"{key!r} 2 times"):
        create_backend(xml, "openvino")


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE net [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><net><rt_info><c value="&c;" /></rt_info></net>'
)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (BILLION_LAUGHS, "DOCTYPE"),
        ('<?xml version="1.0"?><!DOCTYPE net SYSTEM "file:///etc/passwd"><net/>', "DOCTYPE"),
        ("<net>" + "<a>" * 100 + "</a>" * 100 + "</net>", "nested deeper than 64"),
        ("<net><layers><layer type='Parameter'", "not well-formed"),
    ],
    ids=["entity expansion", "external DOCTYPE", "deep nesting", "truncated"],
)
def test_hostile_ir_xml_is_refused(text, fragment, tmp_path):
    xml = tmp_path / "m.xml"
    xml.write_text(text)
    xml.with_suffix(".bin").write_bytes(b"\0" * 8)
    with pytest.raises(ModelLoadError, match=fragment) as info:
        create_backend(xml, "openvino")
    assert "\n" not in str(info.value)


def test_oversized_ir_xml_is_refused(metadata_ir, monkeypatch):
    monkeypatch.setattr(inspection_module, "MAX_IR_XML_BYTES", metadata_ir.stat().st_size - 1)
    with pytest.raises(ModelLoadError, match="MiB an IR graph description needs"):
        create_backend(metadata_ir, "openvino")
