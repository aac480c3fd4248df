"""Architecture of nanodet_models: upstream key layouts, presets, output layout, deploy form, tracing."""

from __future__ import annotations

import io
from pathlib import Path

import nanodet_models as M
import numpy as np
import pytest
import torch
from conftest import DATA, SHAPES

LAYOUTS = DATA / "layouts"


def _layout(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    layout = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, dtype, shape = line.split("\t")
            layout[key] = (dtype, () if shape == "scalar" else tuple(int(v) for v in shape.split("x")))
    return layout


@pytest.fixture(scope="module")
def shapes_model() -> M.NanoDetPlus:
    """The 3-class 256x256 architecture with seeded random weights (eval mode)."""
    torch.manual_seed(0)
    return M.build_model(M.load_config(SHAPES / "config.yml")).eval()


@pytest.mark.parametrize("name", ["ghostnet-plus-320", "plus-m-1.5x-320"])
def test_state_dict_layout_matches_upstream(name: str) -> None:
    cfg = M.load_config(LAYOUTS / f"{name}.yml")
    got = {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in M.build_model(cfg).state_dict().items()}
    expected = _layout(LAYOUTS / f"{name}.keys.txt")
    assert set(got) == set(expected)
    assert {k: v for k, v in got.items() if expected[k] != v} == {}
    # the architecture is also recovered from the key layout alone
    inferred = M.config_from_state_dict({k: torch.zeros(shape) for k, (_, shape) in expected.items()})
    assert inferred == cfg


def test_ghostnet_layout_forward_shapes() -> None:
    cfg = M.load_config(LAYOUTS / "ghostnet-plus-320.yml")
    assert cfg.backbone["out_stages"] == (4, 6, 9)
    with torch.no_grad():
        out = M.build_model(cfg).eval()(torch.randn(1, 3, 320, 320))
    assert out.shape == (1, 2125, 80 + 32)


@pytest.mark.parametrize("name", M.PRESETS)
def test_presets(name: str) -> None:
    cfg = M.preset(name)
    size = 416 if name.endswith("416") else 320
    assert cfg.input_size == (size, size)
    assert cfg.num_classes == 80 and cfg.class_names[0] == "person" and cfg.class_names[-1] == "toothbrush"
    assert cfg.reg_max == 7 and cfg.strides == (8, 16, 32, 64) and not cfg.keep_ratio
    assert cfg.backbone["model_size"] == ("1.5x" if "1.5x" in name else "1.0x")
    assert cfg.num_priors() == {320: 2125, 416: 3598}[size]


def test_preset_416_output_rows() -> None:
    model = M.build_model(M.preset("nanodet-plus-m_416")).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 416, 416))
    assert out.shape == (1, 3598, 112)


def test_non_square_input_and_row_order(shapes_model: M.NanoDetPlus) -> None:
    x = torch.randn(2, 3, 192, 320)  # H != W
    with torch.no_grad():
        out = shapes_model(x)
        feats = shapes_model.fpn(shapes_model.backbone(x))
        head = shapes_model.head
        per_level = []
        for feat, convs, gfl in zip(feats, head.cls_convs, head.gfl_cls, strict=True):
            for conv in convs:
                feat = conv(feat)
            per_level.append(gfl(feat))
    sizes = [(-(-192 // s), -(-320 // s)) for s in (8, 16, 32, 64)]
    assert [tuple(p.shape[2:]) for p in per_level] == sizes
    assert out.shape == (2, sum(h * w for h, w in sizes), 35) == (2, shapes_model.cfg.num_priors(320, 192), 35)
    # level by level, row-major (y outer, x inner) within a level
    start = 0
    for level in per_level:
        h, w = level.shape[2:]
        y, x_ = h - 1, 1
        torch.testing.assert_close(out[:, start + y * w + x_], level[:, :, y, x_], rtol=0, atol=0)
        start += h * w


def test_deploy_is_sigmoid_split_of_forward(shapes_model: M.NanoDetPlus) -> None:
    deployed = shapes_model.deploy()
    assert not deployed.training
    assert not any(k.startswith(("aux_fpn", "aux_head")) for k in deployed.state_dict())
    assert {n for n, _ in deployed.named_children()} == {"backbone", "fpn", "head"}
    x = torch.from_numpy(np.load(SHAPES / "raw" / "seed0_input.npy"))
    with torch.no_grad():
        raw = shapes_model(x)
        scores, boxes = deployed(x)
    assert scores.shape == (1, 1360, 3) and boxes.shape == (1, 1360, 32)
    torch.testing.assert_close(scores, raw[..., :3].sigmoid(), rtol=0, atol=1e-7)
    torch.testing.assert_close(boxes, raw[..., 3:], rtol=0, atol=0)


def test_training_model_keeps_aux_and_runs_it(shapes_model: M.NanoDetPlus) -> None:
    assert {n for n, _ in shapes_model.named_children()} == {"backbone", "fpn", "head", "aux_fpn", "aux_head"}
    with torch.no_grad():
        aux = shapes_model.forward_aux(torch.randn(1, 3, 128, 128))
    assert aux.shape == (1, shapes_model.cfg.num_priors(128, 128), 3 + 32)


def test_integral_is_expected_bin() -> None:
    head = M.build_model(M.load_config(SHAPES / "config.yml")).head
    logits = torch.full((1, 32), -1e4)
    logits[0, [3, 8 + 7, 16 + 0, 24 + 5]] = 0.0  # one-hot bins per side
    torch.testing.assert_close(head.distribution_project(logits), torch.tensor([[3.0, 7.0, 0.0, 5.0]]))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_deploy_traces_with_dynamic_batch_and_hw(shapes_model: M.NanoDetPlus) -> None:
    ort = pytest.importorskip("onnxruntime")
    buffer = io.BytesIO()
    deployed = shapes_model.deploy()
    torch.onnx.export(
        deployed, torch.zeros(1, 3, 128, 128), buffer, dynamo=False, opset_version=13,
        input_names=["images"], output_names=["scores", "boxes"],
        dynamic_axes={"images": {0: "b", 2: "h", 3: "w"}, "scores": {0: "b", 1: "n"}, "boxes": {0: "b", 1: "n"}},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 192, 128)
    scores, boxes = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_scores, ref_boxes = deployed(x)
    assert scores.shape == (2, 510, 3)
    np.testing.assert_allclose(scores, ref_scores.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), rtol=0, atol=1e-4)
