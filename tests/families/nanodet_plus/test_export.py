"""nanodet-export against upstream's own outputs: ONNX / OpenVINO IR, static / dynamic, every preset.

Exports are slow-ish (about 1 s each), so each distinct export runs once per session and the tests
read its files. Tolerances: 5e-5 against upstream PyTorch on the trained shapes model (upstream's own
ONNX differs by 1.5e-5), 1e-4 on the untrained plus-m-320 (larger activations; upstream's own ONNX
differs by 6.7e-5).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import DATA, PLUS320, SHAPES
from nanodet_export import PRODUCER, ExportReport, export_checkpoint, export_model
from nanodet_export.cli import main
from nanodet_export.onnx_export import folded_parameter_count
from nanodet_export.openvino_export import read_properties
from nanodet_export.parity import FP16_RELATIVE_TOLERANCE, FP32_TOLERANCE
from nanodet_models import build_model, load_config, load_weights, preset, read_checkpoint

from nanodet_infer.metadata import ModelMetadata

SHAPES_YAML = SHAPES / "config.yml"
PLUS320_YAML = PLUS320 / "config.yml"
GHOSTNET_YAML = DATA / "layouts" / "ghostnet-plus-320.yml"
RAW_INPUTS = sorted((SHAPES / "raw").glob("*_input.npy"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes_pth(shared_fixtures: Path) -> Path:
    return shared_fixtures / "shapes-m-256" / "nanodet_model_best.pth"


@pytest.fixture(scope="module")
def plus320_ckpt(shared_fixtures: Path) -> Path:
    return shared_fixtures / "plus-m-320" / "model_best.ckpt"


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def shapes_yaml_onnx(shapes_pth: Path, out_dir: Path) -> ExportReport:
    return export_checkpoint(shapes_pth, out_dir / "shapes_yaml.onnx", config=SHAPES_YAML)


@pytest.fixture(scope="module")
def shapes_inferred_onnx(shapes_pth: Path, out_dir: Path) -> Path:
    """Through the CLI, architecture inferred from the tensors (no config)."""
    out = out_dir / "shapes_inferred.onnx"
    assert main(["--ckpt", str(shapes_pth), "--out", str(out), "--input-size", "256,256"]) == 0
    return out


@pytest.fixture(scope="module")
def shapes_dynamic(shapes_pth: Path, out_dir: Path) -> ExportReport:
    return export_checkpoint(shapes_pth, out_dir / "shapes_dynamic.onnx", config=SHAPES_YAML, dynamic=True)


@pytest.fixture(scope="module")
def shapes_ir(shapes_pth: Path, out_dir: Path) -> ExportReport:
    return export_checkpoint(shapes_pth, out_dir / "shapes.xml", config=SHAPES_YAML, fmt="openvino")


def _ort(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _metadata(path: Path) -> ModelMetadata:
    return ModelMetadata.from_properties({p.key: p.value for p in onnx.load(str(path)).metadata_props})


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _assert_matches_upstream_raw(run, tolerance: float = 5e-5) -> None:
    """``run(x) -> (scores, boxes)`` reproduces upstream PyTorch on every stored input."""
    assert RAW_INPUTS
    for path in RAW_INPUTS:
        raw = np.load(str(path).replace("_input.npy", "_torch_raw_output.npy"))
        scores, boxes = run(np.load(path))
        assert scores.shape == (1, 1360, 3) and boxes.shape == (1, 1360, 32)
        assert np.abs(scores - _sigmoid(raw[..., :3])).max() < tolerance, path.name
        assert np.abs(boxes - raw[..., 3:]).max() < tolerance, path.name


# ---------------------------------------------------------------- shapes-m-256 (trained, .pth)
@pytest.mark.shared
@pytest.mark.parametrize("variant", ["yaml", "inferred"])
def test_shapes_onnx_matches_upstream_pytorch(variant, shapes_yaml_onnx, shapes_inferred_onnx):
    path = shapes_yaml_onnx.path if variant == "yaml" else shapes_inferred_onnx
    session = _ort(path)
    _assert_matches_upstream_raw(lambda x: session.run(["scores", "boxes"], {"images": x}))


@pytest.mark.shared
def test_shapes_graph_interface_and_metadata(shapes_yaml_onnx, shapes_inferred_onnx, shapes_pth):
    report = shapes_yaml_onnx
    graph = onnx.load(str(report.path))
    values = (*graph.graph.input, *graph.graph.output)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
    assert dims == {"images": [1, 3, 256, 256], "scores": [1, 1360, 3], "boxes": [1, 1360, 32]}
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert report.output_shapes == {"scores": [1, 1360, 3], "boxes": [1, 1360, 32]}

    meta = _metadata(report.path)
    assert meta == report.metadata
    assert meta.class_names == ("circle", "rectangle", "triangle")
    assert (meta.input_size, meta.dynamic_batch, meta.dynamic_hw, meta.keep_ratio) == ((256, 256), False, False, False)
    assert meta.producer == PRODUCER and PRODUCER.startswith("nanodet-export ")
    assert meta.source_sha256 == hashlib.sha256(shapes_pth.read_bytes()).hexdigest()
    assert meta.architecture["backbone"]["name"] == "ShuffleNetV2"
    assert "aux_head" not in meta.architecture
    assert meta.architecture["inferred"] is False and "assumed" not in meta.architecture
    # Inferred architecture: same facts, placeholder class names, and the assumptions recorded.
    inferred = _metadata(shapes_inferred_onnx)
    arch = dict(inferred.architecture)
    assert arch.pop("inferred") is True
    assert arch.pop("assumed") == [
        "activation LeakyReLU", "keep_ratio false", "normalisation upstream default", "upsampling bilinear"
    ]  # --input-size was given: not assumed
    assert inferred.replace(class_names=meta.class_names, architecture={**arch, "inferred": False}) == meta


@pytest.mark.shared
def test_shapes_export_has_no_aux_weights(shapes_yaml_onnx, shapes_pth):
    graph = onnx.load(str(shapes_yaml_onnx.path))
    assert not [i.name for i in graph.graph.initializer if i.name.startswith(("aux_fpn", "aux_head"))]
    stored = sum(int(np.prod(i.dims)) for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
    model = build_model(load_config(SHAPES_YAML))
    load_weights(model, read_checkpoint(shapes_pth).state_dict)
    deploy = model.deploy()
    assert shapes_yaml_onnx.num_params == folded_parameter_count(deploy)
    aux = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("aux_fpn", "aux_head")))
    assert shapes_yaml_onnx.aux_params_dropped == aux > 1_000_000
    assert stored <= folded_parameter_count(deploy) + 100  # + the few non-weight constants
    assert shapes_yaml_onnx.max_abs_diff["boxes"] < FP32_TOLERANCE


# ---------------------------------------------------------------- dynamic and non-square
@pytest.mark.shared
def test_dynamic_export_runs_any_batch_and_size(shapes_dynamic, shapes_pth):
    assert [c.input_shape for c in shapes_dynamic.parity_cases] == [(1, 3, 256, 256), (2, 3, 224, 320)]
    meta = _metadata(shapes_dynamic.path)
    assert meta.dynamic_batch and meta.dynamic_hw and meta.input_size == (256, 256)
    assert shapes_dynamic.output_shapes == {"scores": ["batch", "priors", 3], "boxes": ["batch", "priors", 32]}
    session = _ort(shapes_dynamic.path)
    _assert_matches_upstream_raw(lambda x: session.run(["scores", "boxes"], {"images": x}))

    model = build_model(load_config(SHAPES_YAML))
    load_weights(model, read_checkpoint(shapes_pth).state_dict)
    x = np.random.default_rng(1).standard_normal((2, 3, 192, 320), dtype=np.float32)
    scores, boxes = session.run(["scores", "boxes"], {"images": x})
    assert scores.shape == (2, 40 * 24 + 20 * 12 + 10 * 6 + 5 * 3, 3)
    with torch.no_grad():
        want_scores, want_boxes = model.deploy()(torch.from_numpy(x))
    assert np.abs(scores - want_scores.numpy()).max() < FP32_TOLERANCE
    assert np.abs(boxes - want_boxes.numpy()).max() < FP32_TOLERANCE


@pytest.mark.shared
def test_non_square_static_export_is_h_by_w(shapes_pth, out_dir):
    report = export_checkpoint(shapes_pth, out_dir / "wide.onnx", config=SHAPES_YAML, input_size=(320, 192))
    graph = onnx.load(str(report.path))
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 192, 320]
    assert report.output_shapes["scores"] == [1, 1275, 3]
    assert _metadata(report.path).input_size == (320, 192)
    assert report.parity_cases[0].input_shape == (1, 3, 192, 320)


# ---------------------------------------------------------------- OpenVINO IR
@pytest.mark.shared
def test_openvino_ir_loads_with_metadata_and_matches(shapes_ir):
    import openvino as ov

    xml, binary = shapes_ir.paths
    assert xml.suffix == ".xml" and binary == xml.with_suffix(".bin") and binary.is_file()
    assert ModelMetadata.from_properties(read_properties(xml)) == shapes_ir.metadata
    assert shapes_ir.max_abs_diff["scores"] < FP32_TOLERANCE
    core = ov.Core()
    model = core.read_model(str(xml))
    weights = [op for op in model.get_ops() if op.get_type_name() == "Constant"]
    assert all(op.get_output_element_type(0) != ov.Type.f16 for op in weights)  # FP32 by default
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"})

    def run(x):
        result = compiled({"images": x})
        return result[compiled.output("scores")], result[compiled.output("boxes")]

    _assert_matches_upstream_raw(run)
    assert not list(xml.parent.glob(".*partial*"))


@pytest.mark.shared
def test_openvino_fp16_ir_is_opt_in_with_looser_tolerance(shapes_pth, out_dir, shapes_ir):
    report = export_checkpoint(shapes_pth, out_dir / "shapes16.xml", config=SHAPES_YAML, fmt="openvino", fp16=True)
    assert report.paths[1].stat().st_size < 0.6 * shapes_ir.paths[1].stat().st_size
    for name, tolerance in report.tolerance.items():
        scale = max(1.0, report.parity_cases[0].max_abs_reference[name])
        assert tolerance == pytest.approx(FP16_RELATIVE_TOLERANCE * scale)
        assert report.max_abs_diff[name] <= tolerance


# ---------------------------------------------------------------- plus-m-320 (Lightning .ckpt, EMA)
@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("config", [PLUS320_YAML, None], ids=["yaml", "inferred"])
def test_plus320_ckpt_matches_upstream_pytorch(plus320_ckpt, out_dir, config):
    out = out_dir / f"plus320_{'yaml' if config else 'inferred'}.onnx"
    report = export_checkpoint(plus320_ckpt, out, config=config)
    assert report.used_ema and report.source_format == "lightning"
    assert report.metadata.num_classes == 80 and report.metadata.class_names[0] == "person"
    scores, boxes = _ort(out).run(["scores", "boxes"], {"images": np.load(PLUS320 / "input_seed0.npy")})
    want = np.load(PLUS320 / "torch_output_sigmoid_seed0.npy")
    assert np.abs(scores - want[..., :80]).max() < 1e-4
    assert np.abs(boxes - want[..., 80:]).max() < 1e-4


# ---------------------------------------------------------------- other architectures, seeded weights
def _seeded_checkpoint(cfg, path: Path) -> Path:
    """A seeded upstream-layout ``.pth`` with non-trivial BatchNorm statistics (so folding matters)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    torch.save({"state_dict": model.state_dict()}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "source",
    ["nanodet-plus-m_416", "nanodet-plus-m-1.5x_320", "nanodet-plus-m-1.5x_416", GHOSTNET_YAML],
    ids=["m_416", "m-1.5x_320", "m-1.5x_416", "ghostnet-320"],
)
def test_other_architectures_export_with_parity(source, tmp_path):
    is_preset = isinstance(source, str)
    cfg = preset(source) if is_preset else load_config(source)
    ckpt = _seeded_checkpoint(cfg, tmp_path / "seeded.pth")
    arch = {"preset": source} if is_preset else {"config": source}
    report = export_checkpoint(ckpt, tmp_path / "model.onnx", **arch)
    width, height = cfg.input_size
    assert [c.input_shape for c in report.parity_cases] == [(1, 3, height, width)]
    assert max(report.max_abs_diff.values()) < FP32_TOLERANCE
    assert report.output_shapes == {"scores": [1, cfg.num_priors(), 80], "boxes": [1, cfg.num_priors(), 32]}
    meta = _metadata(report.path)
    assert meta.input_size == cfg.input_size and meta.architecture["backbone"] == cfg.backbone.to_dict()


def test_export_model_in_memory(tmp_path):
    cfg = load_config(SHAPES_YAML)
    torch.manual_seed(3)
    model = build_model(cfg)
    report = export_model(
        model, cfg, tmp_path / "mem.onnx", source_sha256="ab" * 32, input_size=(192, 128), simplify=False, opset=13
    )
    assert report.used_ema is None and report.source_format == "in-memory"
    meta = _metadata(report.path)
    assert meta.source_sha256 == "ab" * 32 and meta.input_size == (192, 128)
    assert onnx.load(str(report.path)).opset_import[0].version == 13
    assert max(report.max_abs_diff.values()) < FP32_TOLERANCE and report.seconds > 0
