"""Configs: upstream YAML as users have it, presets, and the errors for bad configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nanodet_models as M
import pytest
import torch
import yaml
from conftest import DATA, PLUS320, SHAPES

from nanodet_infer.errors import InvalidArgumentError
from nanodet_infer.families.nanodet_plus.decode import num_priors


def test_upstream_yaml_shapes() -> None:
    cfg = M.load_config(SHAPES / "config.yml")
    assert cfg.input_size == (256, 256) and cfg.keep_ratio is False
    assert cfg.class_names == ("circle", "rectangle", "triangle") and cfg.num_classes == 3
    assert cfg.reg_max == 7 and cfg.strides == (8, 16, 32, 64)
    assert cfg.mean == (103.53, 116.28, 123.675) and cfg.std == (57.375, 57.12, 58.395)
    assert cfg.backbone.name == "ShuffleNetV2" and cfg.backbone["activation"] == "LeakyReLU"
    assert cfg.fpn["upsample_cfg"] == {"scale_factor": 2, "mode": "bilinear"}  # upstream's code default
    assert cfg.aux_head["norm_cfg"] == {"type": "GN", "num_groups": 32}
    assert "loss" not in cfg.head.options and "pretrain" not in cfg.backbone.options
    assert cfg.num_priors() == 1360


def test_upstream_yaml_plus_m_320_and_ghostnet() -> None:
    cfg = M.load_config(PLUS320 / "config.yml")
    assert cfg == M.preset("nanodet-plus-m_320")
    assert hash(cfg.head) == hash(M.preset("nanodet-plus-m_320").head)
    ghost = M.load_config(DATA / "layouts" / "ghostnet-plus-320.yml")
    assert ghost.backbone.to_dict() == {
        "name": "GhostNet", "width_mult": 1.0, "out_stages": [4, 6, 9], "activation": "LeakyReLU"
    }
    assert ghost.architecture()["fpn"]["in_channels"] == [40, 112, 960]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _shapes() -> dict:
    return yaml.safe_load((SHAPES / "config.yml").read_text())


def test_input_size_is_w_h_not_swapped(tmp_path: Path) -> None:
    data = _shapes()
    data["data"]["val"]["input_size"] = [320, 192]
    data["data"]["val"]["keep_ratio"] = True
    cfg = M.load_config(_write(tmp_path, data))
    assert cfg.input_size == (320, 192) and cfg.keep_ratio is True
    assert cfg.num_priors() == 40 * 24 + 20 * 12 + 10 * 6 + 5 * 3


def test_defaults_when_optional_sections_absent(tmp_path: Path) -> None:
    data = _shapes()
    del data["class_names"], data["data"]["val"]["pipeline"]
    cfg = M.load_config(_write(tmp_path, data))
    assert cfg.class_names == ("class0", "class1", "class2")
    assert cfg.std == (57.375, 57.12, 58.395)


def _edit(path: list[str], value: object) -> dict:
    data = _shapes()
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_edit(["model", "arch", "backbone", "name"], "ResNet"), "unsupported backbone 'ResNet'"),
        (_edit(["model", "arch", "fpn", "name"], "PAN"), "unsupported fpn 'PAN'"),
        (_edit(["model", "arch", "name"], "OneStageDetector"), "only NanoDetPlus"),
        (_edit(["model", "arch", "aux_head"], None), "aux_head is missing"),
        (_edit(["class_names"], ["a", "b"]), "2 class_names but head.num_classes is 3"),
        (_edit(["model", "arch", "backbone", "model_size"], "3.0x"), "model_size '3.0x'"),
        (_edit(["model", "arch", "backbone", "depth"], 3), "backbone ShuffleNetV2: .*depth"),
        (_edit(["model", "arch", "head", "num_classes"], None), "head NanoDetPlusHead: .*num_classes"),
        (_edit(["model", "arch", "head", "strides"], [8, 16, 32]), "head.strides"),
        (_edit(["model", "arch", "aux_head", "num_classes"], 4), "aux_head .* disagrees"),
        (_edit(["model", "arch", "backbone", "activation"], "Swish"), "unknown activation 'Swish'"),
        (_edit(["data", "val", "input_size"], [0, 256]), "input_size"),
        # field types (a scalar where a list belongs used to escape as a TypeError)
        (_edit(["model", "arch", "head", "strides"], 8), "head.strides must be a non-empty list of positive integers"),
        (_edit(["model", "arch", "head", "strides"], [8, 16, 32, "64"]), "head.strides must be a positive integer"),
        (_edit(["model", "arch", "head", "strides"], [8, 16, 0, 64]), "head.strides must be a positive integer"),
        (_edit(["model", "arch", "head", "strides"], [16, 8, 32, 64]), "head.strides must be strictly ascending"),
        (_edit(["model", "arch", "aux_head", "strides"], 8), "aux_head.strides must be"),
        (_edit(["model", "arch", "head", "num_classes"], "3"), "head.num_classes must be a positive integer"),
        (_edit(["model", "arch", "head", "reg_max"], 0), "head.reg_max must be a positive integer"),
        (_edit(["model", "arch", "head", "reg_max"], 7.0), "head.reg_max must be a positive integer"),
        (_edit(["model", "arch", "fpn", "in_channels"], 116), "fpn.in_channels must be"),
        (_edit(["model", "arch", "fpn", "num_extra_level"], "1"), "fpn.num_extra_level must be"),
        (_edit(["data", "val", "input_size"], 320), "input_size must be a list of 2"),
        (_edit(["data", "val", "input_size"], [320, 320, 3]), "input_size must be a list of 2"),
        (_edit(["data", "val", "keep_ratio"], "yes"), "keep_ratio must be true or false"),
        (_edit(["data", "val", "pipeline"], [1, 2]), "data.val.pipeline must be a mapping"),
        (_edit(["data", "val", "pipeline", "normalize"], [1, 2]), "normalize mean must be 3 numbers"),
        (_edit(["data", "val"], [1, 2]), "data.val must be a mapping"),
        ({"model": {"name": "x"}}, "model.arch is missing"),
        ([1, 2], "model is missing"),
    ],
)
def test_bad_configs(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InvalidArgumentError, match=message):
        M.build_model(M.load_config(path))


def test_unreadable_configs(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot read config"):
        M.load_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("model:\n  arch: [unclosed\n")
    with pytest.raises(InvalidArgumentError, match="not valid YAML at line"):
        M.load_config(bad)
    with pytest.raises(InvalidArgumentError, match="unknown preset"):
        M.preset("nanodet-plus-x_999")


def test_num_priors_is_the_runtimes() -> None:
    cfg = M.load_config(SHAPES / "config.yml")
    for size in ((256, 256), (320, 192), (416, 416), (100, 36)):
        assert cfg.num_priors(*size) == num_priors(size, cfg.strides)


def test_config_type_errors_are_invalid_argument_at_construction() -> None:
    cfg = M.load_config(SHAPES / "config.yml")
    scalar_strides = M.Component("NanoDetPlusHead", {**cfg.head.options, "strides": 8})
    with pytest.raises(InvalidArgumentError, match="head.strides"):
        dataclasses.replace(cfg, head=scalar_strides)
    with pytest.raises(InvalidArgumentError, match="input_size"):
        dataclasses.replace(cfg, input_size=320)
    with pytest.raises(InvalidArgumentError, match="normalize std"):
        dataclasses.replace(cfg, std=57.0)


# ---------------------------------------------------------------- activations (upstream act_layers)
UPSTREAM_ACTIVATIONS = {"ReLU", "LeakyReLU", "ReLU6", "SELU", "ELU", "GELU", "PReLU", "SiLU", "HardSwish", "Hardswish"}


def test_activation_names_and_arguments_are_upstreams() -> None:
    from nanodet_models.nanodet_plus.layers import activation_layer

    assert set(M.ACTIVATIONS) == UPSTREAM_ACTIVATIONS
    assert activation_layer("LeakyReLU").negative_slope == 0.1
    prelu = activation_layer("PReLU")
    assert isinstance(prelu, torch.nn.PReLU) and prelu.weight.tolist() == [0.25]
    assert isinstance(activation_layer("HardSwish"), torch.nn.Hardswish)
    assert isinstance(activation_layer("Hardswish"), torch.nn.Hardswish)
    assert isinstance(activation_layer(None), torch.nn.Identity)


@pytest.mark.parametrize("name", sorted(UPSTREAM_ACTIVATIONS))
def test_every_activation_builds_and_runs(tmp_path: Path, name: str) -> None:
    data = _shapes()
    for part in ("backbone", "fpn", "head", "aux_head"):
        data["model"]["arch"][part]["activation"] = name
    cfg = M.load_config(_write(tmp_path, data))
    model = M.build_model(cfg).deploy()
    with torch.no_grad():
        scores, boxes = model(torch.zeros(1, 3, 64, 64))
    assert scores.shape == (1, cfg.num_priors(64, 64), 3) and boxes.shape[-1] == 32
    prelu_keys = [k for k in model.state_dict() if k.endswith(("act.weight", "act1.weight", "conv1.2.weight"))]
    assert bool(prelu_keys) == (name == "PReLU")


def test_ghostnet_deprecated_act_key_is_accepted(tmp_path: Path) -> None:
    data = yaml.safe_load((DATA / "layouts" / "ghostnet-plus-320.yml").read_text())
    backbone = data["model"]["arch"]["backbone"]
    del backbone["activation"]
    backbone["act"] = "ReLU6"
    cfg = M.load_config(_write(tmp_path, data))
    expected = {"name": "GhostNet", "width_mult": 1.0, "out_stages": [4, 6, 9], "activation": "ReLU6"}
    assert cfg.backbone.to_dict() == expected
    backbone["activation"] = "LeakyReLU"  # as upstream: a non-None act wins over activation
    assert M.load_config(_write(tmp_path, data)).backbone["activation"] == "ReLU6"
    assert isinstance(M.build_model(cfg).backbone.act1, torch.nn.ReLU6)
