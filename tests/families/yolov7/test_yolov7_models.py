"""YOLOv7 model definitions against upstream's own outputs (``../shared/fixtures/yolov7-*``).

Tolerance: the training model's rows (``train``) and the fused deploy model's rows (``deploy``) must be
within ``1e-4 x max(1, |reference|)`` of upstream's (measured: 0, bit-identical, on every fixture).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _yolov7 import FIXTURES, STEMS, fixture_input, seeded, small_yaml
from nanodet_models.yolov7 import PRESETS, YOLOv7, deploy_yaml, load_yolov7_weights, read_yolov7_checkpoint, to_deploy
from nanodet_models.yolov7.common import RepConv

from nanodet_infer.errors import CheckpointError

RELATIVE_TOLERANCE = 1e-4


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(want))))


@pytest.fixture(scope="module", params=FIXTURES)
def upstream(request: pytest.FixtureRequest, shared_fixtures: Path, one_torch_thread) -> tuple[Path, YOLOv7, YOLOv7]:
    """(fixture folder, training model with the checkpoint's EMA weights, deploy model)."""
    folder = shared_fixtures / request.param
    ckpt = read_yolov7_checkpoint(folder / f"{request.param}.pt")
    model = YOLOv7(ckpt.yaml)
    load_yolov7_weights(model, ckpt)
    return folder, model.eval(), to_deploy(model)


@pytest.mark.parametrize("stem", STEMS)
def test_training_and_deploy_models_match_upstream(upstream: tuple[Path, YOLOv7, YOLOv7], stem: str) -> None:
    folder, model, deploy = upstream
    ref = np.load(folder / f"{stem}_pred.npz")
    x = torch.from_numpy(fixture_input(folder, stem))
    with torch.no_grad():
        train_out, deploy_out = model(x)[0][0].numpy(), deploy(x)[0][0].numpy()
    assert list(deploy_out.shape) == list(ref["shape"][1:])
    assert relative_error(train_out[ref["sample_index"]], ref["train"]) <= RELATIVE_TOLERANCE
    assert relative_error(deploy_out[ref["index"]], ref["deploy"]) <= RELATIVE_TOLERANCE


def test_deploy_model_structure(upstream: tuple[Path, YOLOv7, YOLOv7]) -> None:
    folder, model, deploy = upstream
    official = yaml.safe_load((folder / "cfg" / "deploy.yaml").read_text())
    derived = deploy_yaml(model.yaml)
    derived.pop("ch")
    assert derived == official  # upstream's cfg/deploy/*.yaml, derived from the training YAML
    assert type(deploy.head).__name__ == "Detect"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deploy.modules())
    assert not any(hasattr(m, "rbr_dense") for m in deploy.modules())
    assert torch.equal(deploy.stride, model.stride)
    meta = json.loads((folder / "meta.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == meta["n_params_train"]
    assert sum(p.numel() for p in deploy.parameters()) == meta["n_params_deploy_fused"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_build_and_deploy_equals_training(name: str, one_torch_thread) -> None:
    model = seeded(YOLOv7(small_yaml(name)))
    strides = [8, 16, 32, 64] if "w6" in name else [8, 16, 32]
    assert model.stride.tolist() == strides
    x = torch.rand(2, 3, 128, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = model(x)[0], to_deploy(model)(x)[0]
    assert got.shape == (2, 3 * sum((128 // s) * (192 // s) for s in strides), 8)
    assert relative_error(got.numpy(), want.numpy()) <= RELATIVE_TOLERANCE


def test_repconv_with_identity_branch_fuses_exactly() -> None:
    torch.manual_seed(0)
    block = RepConv(8, 8)
    for bn in (block.rbr_dense[1], block.rbr_1x1[1], block.rbr_identity):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    block.eval()
    x = torch.randn(1, 8, 9, 11)
    with torch.no_grad():
        want = block(x)
        block.fuse_repvgg_block()
        got = block(x)
    assert not hasattr(block, "rbr_identity")
    assert torch.allclose(got, want, atol=1e-5)


def test_downc_shortcut_yaml() -> None:
    d = {
        "nc": 2,
        "depth_multiple": 1.0,
        "width_multiple": 1.0,
        "anchors": [[10, 13, 16, 30], [30, 61, 62, 45]],
        "backbone": [[-1, 1, "ReOrg", []], [-1, 1, "Conv", [16, 3, 1]], [-1, 1, "DownC", [32]]],
        "head": [
            [-1, 1, "Conv", [32, 1, 1]],
            [[-1, -2], 1, "Shortcut", [1]],
            [-1, 1, "DownC", [64]],
            [[4, 5], 1, "IDetect", ["nc", "anchors"]],
        ],
    }
    model = seeded(YOLOv7(d))
    assert model.stride.tolist() == [4, 8]
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert relative_error(to_deploy(model)(x)[0].numpy(), model(x)[0].numpy()) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize(
    "change, message",
    [
        ({"backbone": [[-1, 1, "Focus", [16]]]}, "layer 0 uses module 'Focus'"),
        ({"backbone": [[-1, 1, "Conv", [16, 3, 1, None, 1, "nn.GELU()"]]]}, "unsupported YAML argument 'nn.GELU"),
        ({"head": [[-1, 1, "Conv", [16, 1, 1]]]}, "not a detection head"),
    ],
)
def test_unsupported_yaml(change: dict, message: str) -> None:
    d = small_yaml()
    if "backbone" in change:  # the first layer replaced, the others kept (later layers read from them)
        change = {"backbone": change["backbone"] + d["backbone"][1:]}
    d.update(change)
    with pytest.raises(CheckpointError, match=message):
        YOLOv7(d)
