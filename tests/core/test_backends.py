"""Backends: loading, metadata, shapes, dynamic axes, precision, error mapping (ONNX Runtime and OpenVINO).

Tolerances: ONNX Runtime vs upstream's own ONNX Runtime output: 1e-6 (same engine); OpenVINO f32: 5e-5
(upstream's ONNX differs from its PyTorch model by 1.5e-5); OpenVINO bf16: 5e-2 (opt-in reduced precision).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from _tiny_models import conv_model, conv_weight
from conftest import SHAPES

from nanodet_infer.backends import create_backend
from nanodet_infer.errors import BackendUnavailableError, InvalidArgumentError, ModelLoadError

UPSTREAM = SHAPES / "upstream_export.onnx"
ENGINES = ("onnxruntime", "openvino")
TOLERANCE = {"onnxruntime": 1e-6, "openvino": 5e-5}


@pytest.fixture(scope="module", params=ENGINES)
def upstream(request):
    return create_backend(UPSTREAM, request.param, num_threads=1)


def test_upstream_model_interface(upstream):
    assert upstream.name in ENGINES
    assert upstream.input_name == "data"
    assert upstream.input_shape == (1, 3, 256, 256)
    assert upstream.output_names == ("output",)
    assert upstream.output_shapes == ((1, 1360, 35),)
    props = upstream.properties
    assert props["onnxsim.constant_folding"] == "true"  # upstream's file carries onnxsim's metadata_props
    assert not any(key.startswith("nanodet.") for key in props)
    props.clear()
    assert upstream.properties, "properties must be a copy"


@pytest.mark.parametrize("stem", ["val_00000", "val_00003", "seed0"])
def test_upstream_model_reproduces_upstream_onnx_output(upstream, stem):
    tensor = np.load(SHAPES / "raw" / f"{stem}_input.npy")
    expected = np.load(SHAPES / "raw" / f"{stem}_onnx_output.npy")
    (output,) = upstream.run(tensor)
    assert output.dtype == np.float32 and output.shape == (1, 1360, 35)
    np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCE[upstream.name])


def test_run_accepts_non_contiguous_and_returns_owned_arrays(upstream):
    first, second = (np.load(SHAPES / "raw" / f"{s}_input.npy") for s in ("val_00000", "val_00001"))
    (out_first,) = upstream.run(np.asfortranarray(first))
    kept = out_first.copy()
    upstream.run(second)
    np.testing.assert_array_equal(out_first, kept)  # not a view of a reused buffer


@pytest.mark.parametrize(
    "tensor",
    [
        np.zeros((1, 3, 256, 256), np.float64),
        np.zeros((1, 3, 128, 256), np.float32),
        np.zeros((3, 256, 256), np.float32),
    ],
    ids=["float64", "wrong-size", "rank-3"],
)
def test_run_rejects_tensors_that_do_not_fit(upstream, tensor):
    with pytest.raises(InvalidArgumentError):
        upstream.run(tensor)


@pytest.mark.parametrize("engine", ENGINES)
def test_dynamic_batch_and_hw(tmp_path, engine):
    backend = create_backend(conv_model(tmp_path / "conv.onnx"), engine, num_threads=1)
    assert backend.input_shape == (None, 3, None, None)
    assert backend.output_shapes == ((None, 2, None, None),)
    rng = np.random.default_rng(1)
    for shape in [(1, 3, 32, 32), (3, 3, 64, 96), (2, 3, 40, 24)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        (y,) = backend.run(x)
        expected = np.einsum("oc,bchw->bohw", conv_weight()[:, :, 0, 0], x)
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_onnx_metadata_props_reach_properties(tmp_path, engine):
    path = conv_model(tmp_path / "meta.onnx", metadata={"nanodet.num_classes": "3", "other": "x"})
    props = create_backend(path, engine).properties
    assert props["nanodet.num_classes"] == "3" and props["other"] == "x"


def test_openvino_ir_reads_model_info_rt_info(tmp_path):
    ov = pytest.importorskip("openvino")
    model = ov.Core().read_model(str(conv_model(tmp_path / "c.onnx")))
    model.set_rt_info("7", ["model_info", "nanodet.reg_max"])
    ov.save_model(model, str(tmp_path / "c.xml"), compress_to_fp16=False)
    backend = create_backend(tmp_path / "c.xml", "openvino", num_threads=1)
    assert backend.properties["nanodet.reg_max"] == "7"
    x = np.ones((2, 3, 8, 8), np.float32)
    np.testing.assert_allclose(backend.run(x)[0], create_backend(tmp_path / "c.onnx", "onnxruntime").run(x)[0])


@pytest.mark.parametrize("precision", ["bf16", "f16"])
def test_openvino_precision_hint(precision):
    """f32 is requested explicitly; bf16/f16 run (on bf16 CPUs: scores within 0.06, box logits within 0.6)."""
    tensor = np.load(SHAPES / "raw" / "val_00000_input.npy")
    expected = np.load(SHAPES / "raw" / "val_00000_onnx_output.npy")
    f32 = create_backend(UPSTREAM, "openvino", num_threads=1)
    assert f32._compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    (reduced,) = create_backend(UPSTREAM, "openvino", num_threads=1, precision=precision).run(tensor)
    np.testing.assert_allclose(reduced[..., :3], expected[..., :3], rtol=0, atol=0.06)
    np.testing.assert_allclose(reduced[..., 3:], expected[..., 3:], rtol=0, atol=0.6)


@pytest.mark.parametrize("options", [{"num_threads": 1}, {}, {"num_threads": 1, "streams": 2}])
def test_openvino_threads_are_not_pinned(options):
    # pinned, two 1-thread detectors in two processes both took the first core (half speed each)
    backend = create_backend(UPSTREAM, "openvino", **options)
    assert backend._compiled.get_property("ENABLE_CPU_PINNING") is False


def test_auto_prefers_openvino():
    assert create_backend(UPSTREAM).name == "openvino"


def test_auto_falls_back_to_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    assert create_backend(UPSTREAM).name == "onnxruntime"


@pytest.mark.parametrize(("engine", "package"), [("onnxruntime", "onnxruntime"), ("openvino", "openvino")])
def test_missing_package_names_the_install(monkeypatch, engine, package):
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(BackendUnavailableError, match=f"pip install {package}"):
        create_backend(UPSTREAM, engine)


def test_auto_without_any_engine(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailableError, match="pip install"):
        create_backend(UPSTREAM)
    with pytest.raises(ImportError, match="OpenVINO IR"):  # BackendUnavailableError is an ImportError
        create_backend(UPSTREAM.with_suffix(".xml"))


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_garbage_and_wrong_files(tmp_path, engine):
    with pytest.raises(ModelLoadError, match="does not exist"):
        create_backend(tmp_path / "missing.onnx", engine)
    with pytest.raises(ModelLoadError, match="is a directory"):
        create_backend(tmp_path, engine)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 definitely not a protobuf \xff" * 50)
    with pytest.raises(ModelLoadError, match="cannot load") as info:
        create_backend(garbage, engine)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError):
        create_backend(empty, engine)
    text = tmp_path / "model.txt"
    text.write_text("x")
    with pytest.raises(ModelLoadError, match="expected a"):
        create_backend(text, engine)


def test_ir_errors(tmp_path):
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    with pytest.raises(ModelLoadError, match="backend='openvino'"):
        create_backend(xml, "onnxruntime")
    with pytest.raises(ModelLoadError, match=r"m\.bin"):
        create_backend(xml, "openvino")
    (tmp_path / "m.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="cannot load"):
        create_backend(xml, "openvino")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"backend": "tensorrt"}, "unknown backend"),
        ({"backend": "onnxruntime", "precision": "bf16"}, "precision"),
        ({"backend": "openvino", "precision": "int8"}, "precision"),
        ({"num_threads": 0}, "num_threads"),
        ({"num_threads": 1.5}, "num_threads"),
        ({"num_threads": True}, "num_threads"),
        ({"num_threads": 2**31}, "num_threads"),
        ({"path": None}, "model must be the path"),
        ({"path": 123}, "model must be the path"),
    ],
)
def test_bad_options(kwargs, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        create_backend(**({"path": UPSTREAM} | kwargs))


def test_one_shape_formatter_for_error_messages(upstream):
    from nanodet_infer import model_spec
    from nanodet_infer.backends import base

    assert base.format_shape((None, 3, 256, 256)) == "[?, 3, 256, 256]"
    assert model_spec.format_shape is base.format_shape and not hasattr(model_spec, "_fmt")
    assert upstream.describe_outputs() == "output [1, 1360, 35]"
    assert repr(upstream).endswith("data [1, 3, 256, 256] -> output [1, 1360, 35]>")
