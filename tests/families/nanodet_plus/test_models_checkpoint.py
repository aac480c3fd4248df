"""Checkpoint reading and strict loading: parity with upstream's own outputs, EMA choice, safety."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import nanodet_models as M
import numpy as np
import pytest
import torch
import yaml
from conftest import PLUS320, SHAPES
from nanodet_models.nanodet_plus.config import config_from_dict

from nanodet_infer.errors import CheckpointError, InvalidArgumentError, ModelLoadError, UnsafeCheckpointError

# Upstream's own ONNX is within 1.5e-5 of its PyTorch output on shapes-m-256; we demand 1e-5 (we measure 0.0).
SHAPES_TOL = 1e-5
PLUS320_TOL = 1e-4
RAW = ["val_00000", "val_00001", "val_00002", "val_00003", "seed0"]


@pytest.fixture(scope="module")
def shapes_ckpt(shared_fixtures: Path) -> M.Checkpoint:
    return M.read_checkpoint(shared_fixtures / "shapes-m-256" / "nanodet_model_best.pth")


@pytest.fixture(scope="module")
def plus320_path(shared_fixtures: Path) -> Path:
    return shared_fixtures / "plus-m-320" / "model_best.ckpt"


def _forward(model: torch.nn.Module, array: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(array)).numpy()


@pytest.mark.shared
@pytest.mark.parametrize("source", ["yaml", "inferred"])
def test_shapes_pth_matches_upstream_pytorch(shapes_ckpt: M.Checkpoint, source: str) -> None:
    assert shapes_ckpt.source_format == "pth" and not shapes_ckpt.used_ema and len(shapes_ckpt.sha256) == 64
    yaml_cfg = M.load_config(SHAPES / "config.yml")
    if source == "yaml":
        cfg = yaml_cfg
    else:
        cfg = M.config_from_state_dict(shapes_ckpt.state_dict, input_size=(256, 256), class_names=yaml_cfg.class_names)
        assert cfg == yaml_cfg
    model = M.build_model(cfg).eval()
    M.load_weights(model, shapes_ckpt.state_dict)
    deployed = model.deploy()
    for name in RAW:
        x = np.load(SHAPES / "raw" / f"{name}_input.npy")
        ref = np.load(SHAPES / "raw" / f"{name}_torch_raw_output.npy")
        out = _forward(model, x)
        assert out.shape == ref.shape == (1, 1360, 35)
        assert np.abs(out - ref).max() <= SHAPES_TOL, name
        with torch.no_grad():
            scores, boxes = deployed(torch.from_numpy(x))
        np.testing.assert_allclose(scores.numpy(), 1 / (1 + np.exp(-out[..., :3])), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(boxes.numpy(), out[..., 3:])


@pytest.mark.shared
def test_lightning_ckpt_prefers_ema(plus320_path: Path) -> None:
    ckpt = M.read_checkpoint(plus320_path)
    assert ckpt.source_format == "lightning" and ckpt.used_ema
    cfg = M.load_config(PLUS320 / "config.yml")
    assert M.config_from_state_dict(ckpt.state_dict) == cfg
    model = M.build_model(cfg).eval()
    M.load_weights(model, ckpt.state_dict)
    x = np.load(PLUS320 / "input_seed0.npy")
    ref = np.load(PLUS320 / "torch_output_sigmoid_seed0.npy")
    with torch.no_grad():
        scores, boxes = model.deploy()(torch.from_numpy(x))
    out = torch.cat([scores, boxes], dim=-1).numpy()
    assert out.shape == ref.shape == (1, 2125, 112)
    assert np.abs(out - ref).max() <= PLUS320_TOL

    # the non-EMA weights (model.*) give a visibly different output
    raw = torch.load(plus320_path, map_location="cpu", weights_only=True)["state_dict"]
    M.load_weights(model, {k.removeprefix("model."): v for k, v in raw.items() if k.startswith("model.")})
    with torch.no_grad():
        scores, boxes = model.deploy()(torch.from_numpy(x))
    assert np.abs(torch.cat([scores, boxes], dim=-1).numpy() - ref).max() > 0.1


def _small_state_dict() -> dict[str, torch.Tensor]:
    return {"backbone.conv1.0.weight": torch.zeros(2, 3), "head.gfl_cls.0.bias": torch.ones(4)}


@pytest.mark.parametrize(
    ("content", "fmt", "ema"),
    [
        ({"state_dict": {f"model.{k}": v for k, v in _small_state_dict().items()}}, "lightning", False),
        ({"state_dict": {f"module.{k}": v for k, v in _small_state_dict().items()}}, "pth", False),
        (_small_state_dict(), "state_dict", False),
    ],
)
def test_formats_and_prefixes(tmp_path: Path, content: dict, fmt: str, ema: bool) -> None:
    path = tmp_path / "c.pth"
    torch.save(content, path)
    ckpt = M.read_checkpoint(path)
    assert (ckpt.source_format, ckpt.used_ema) == (fmt, ema)
    assert set(ckpt.state_dict) == set(_small_state_dict())


class _Payload:
    """Unpickling this creates the directory ``marker`` (stands in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_trust(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    content = {"state_dict": _small_state_dict(), "extra": _Payload(marker)}
    if writer == "torch.save":
        torch.save(content, path)
    else:
        with path.open("wb") as f:
            pickle.dump(content, f)
    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint"):
        M.read_checkpoint(path)
    assert not marker.exists()


def test_trust_opts_into_full_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "custom.pth"
    torch.save({"state_dict": _small_state_dict(), "extra": _Payload(marker)}, path)
    ckpt = M.read_checkpoint(path, trust=True)
    assert marker.exists()  # the code did run: that is what trust means
    assert set(ckpt.state_dict) == set(_small_state_dict())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        M.read_checkpoint(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "random", "not_a_state_dict"])
def test_bad_files_raise_checkpoint_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.pth"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("model:\n  arch: NanoDetPlus\n")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        torch.save({"state_dict": _small_state_dict()} if kind == "truncated" else [1, 2, 3], path)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError) as info:
        M.read_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "\n" not in str(info.value)


def test_truncated_real_checkpoint(tmp_path: Path, shared_fixtures: Path) -> None:
    path = tmp_path / "trunc.pth"
    with (shared_fixtures / "shapes-m-256" / "nanodet_model_best.pth").open("rb") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.truncate(5_000_000)
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        M.read_checkpoint(path)


@pytest.fixture(scope="module")
def shapes_model() -> M.NanoDetPlus:
    return M.build_model(M.load_config(SHAPES / "config.yml"))


def test_load_weights_roundtrip_and_aux_optional(shapes_model: M.NanoDetPlus) -> None:
    sd = {k: v.clone() for k, v in shapes_model.state_dict().items()}
    M.load_weights(shapes_model, sd)
    M.load_weights(shapes_model, {k: v for k, v in sd.items() if not k.startswith(("aux_fpn.", "aux_head."))})
    partial_aux = {k: v for k, v in sd.items() if not k.startswith("aux_head.")}
    with pytest.raises(CheckpointError, match=r"missing \d+ key\(s\): aux_head"):
        M.load_weights(shapes_model, partial_aux)


def test_load_weights_reports_keys_and_cause(shapes_model: M.NanoDetPlus) -> None:
    sd = dict(shapes_model.state_dict())
    wrong_classes = {**sd, "head.gfl_cls.0.weight": torch.zeros(112, 96, 1, 1)}
    with pytest.raises(CheckpointError, match=r"shape mismatch in 1 key.*head\.gfl_cls\.0\.weight.*number of classes"):
        M.load_weights(shapes_model, wrong_classes)
    missing = {k: v for k, v in sd.items() if not k.startswith("backbone.stage2.")}
    with pytest.raises(CheckpointError, match=r"missing \d+ key\(s\): backbone\.stage2.*, \.\.\..*--config"):
        M.load_weights(shapes_model, missing)
    with pytest.raises(CheckpointError, match=r"unexpected 1 key\(s\): extra\.weight"):
        M.load_weights(shapes_model, {**sd, "extra.weight": torch.zeros(1)})


def test_other_architectures_are_rejected(shapes_model: M.NanoDetPlus) -> None:
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}
    with pytest.raises(CheckpointError, match="not a NanoDet-Plus checkpoint"):
        M.config_from_state_dict(resnet)
    v1 = {
        "backbone.conv1.0.weight": torch.zeros(24, 3, 3, 3),
        "fpn.lateral_convs.0.conv.weight": torch.zeros(96, 116, 1, 1),
        "head.gfl_cls.0.weight": torch.zeros(112, 96, 1, 1),
    }
    with pytest.raises(CheckpointError, match="NanoDet \\(v1"):
        M.config_from_state_dict(v1)
    sd = dict(shapes_model.state_dict())
    with pytest.raises(CheckpointError, match="do not fit the inferred architecture"):
        M.config_from_state_dict({**sd, "head.extra.weight": torch.zeros(1)})
    with pytest.raises(InvalidArgumentError, match="2 class names given but the checkpoint has 3"):
        M.config_from_state_dict(sd, class_names=["a", "b"])


def test_inferred_defaults(shapes_model: M.NanoDetPlus) -> None:
    sd = {k: v for k, v in shapes_model.state_dict().items() if not k.startswith(("aux_", "head.distribution"))}
    cfg = M.config_from_state_dict(sd)  # no aux, no project buffer: reg_max assumed 7
    assert cfg.input_size == (320, 320) and cfg.reg_max == 7
    assert cfg.class_names == ("class0", "class1", "class2")
    assert cfg.aux_head == M.load_config(SHAPES / "config.yml").aux_head



def _with_activation(name: str) -> M.ModelConfig:
    """The shapes config with every part's activation set to ``name``."""
    data = yaml.safe_load((SHAPES / "config.yml").read_text())
    for part in ("backbone", "fpn", "head", "aux_head"):
        data["model"]["arch"][part]["activation"] = name
    return config_from_dict(data)


def test_inferred_config_lists_its_assumptions(shapes_model: M.NanoDetPlus) -> None:
    sd = shapes_model.state_dict()
    cfg = M.config_from_state_dict(sd)
    assert cfg.inferred is True and cfg.backbone["activation"] == "LeakyReLU"
    assert cfg.assumed == (
        "activation LeakyReLU", "keep_ratio false", "normalisation upstream default", "input size 320x320",
        "upsampling bilinear",
    )
    assert cfg.architecture()["inferred"] is True and cfg.architecture()["assumed"] == list(cfg.assumed)
    stated = M.config_from_state_dict(sd, activation="ReLU6", input_size=(256, 192))
    assert {getattr(stated, p)["activation"] for p in ("backbone", "fpn", "head", "aux_head")} == {"ReLU6"}
    assert stated.assumed == ("keep_ratio false", "normalisation upstream default", "upsampling bilinear")
    loaded = M.load_config(SHAPES / "config.yml")
    assert loaded.inferred is False and loaded.architecture()["inferred"] is False
    with pytest.raises(InvalidArgumentError, match="unknown activation 'Swish'"):
        M.config_from_state_dict(sd, activation="Swish")


def test_prelu_is_read_from_the_weights() -> None:
    torch.manual_seed(0)
    sd = M.build_model(_with_activation("PReLU")).state_dict()
    assert "backbone.conv1.2.weight" in sd and "head.cls_convs.0.0.act.weight" in sd
    cfg = M.config_from_state_dict(sd)
    assert cfg.backbone["activation"] == cfg.head["activation"] == "PReLU"
    assert not any(fact.startswith("activation") for fact in cfg.assumed)
    M.load_weights(M.build_model(cfg), sd)
    with pytest.raises(CheckpointError, match="--activation ReLU does not fit.*holds PReLU"):
        M.config_from_state_dict(sd, activation="ReLU")
    plain = M.build_model(_with_activation("ReLU")).state_dict()
    with pytest.raises(CheckpointError, match="--activation PReLU does not fit.*no PReLU"):
        M.config_from_state_dict(plain, activation="PReLU")
    mixed = {k: v for k, v in sd.items() if k != "head.cls_convs.0.0.act.weight"}
    with pytest.raises(CheckpointError, match="mixed activations"):
        M.config_from_state_dict(mixed)
