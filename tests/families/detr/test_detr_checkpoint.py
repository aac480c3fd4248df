"""DETR checkpoints: both layouts read without executing code, architecture from the tensors, refusals."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from nanodet_models.detr import read_detr_checkpoint
from nanodet_models.detr.checkpoint import infer_config
from nanodet_models.detr.model import DetrArchitecture, build_detr

from nanodet_infer.errors import CheckpointError, UnsafeCheckpointError

SMALL = DetrArchitecture(
    backbone="resnet18",
    hidden_dim=32,
    nheads=4,
    enc_layers=1,
    dec_layers=2,
    dim_feedforward=64,
    num_queries=10,
    num_classes=5,
)


def _state(arch: DetrArchitecture) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_detr(arch).state_dict()


@pytest.mark.parametrize(
    "arch",
    [
        SMALL,
        DetrArchitecture(
            backbone="resnet34",
            hidden_dim=16,
            nheads=2,
            enc_layers=0,
            dec_layers=1,
            dim_feedforward=8,
            num_queries=3,
            num_classes=2,
            pre_norm=True,
        ),
        DetrArchitecture(
            backbone="resnet50",
            hidden_dim=16,
            nheads=2,
            enc_layers=1,
            dec_layers=1,
            dim_feedforward=8,
            num_queries=3,
            num_classes=2,
        ),
    ],
)
def test_architecture_read_from_tensors(arch):
    config = infer_config(_state(arch), {"nheads": arch.nheads}, Path("x.pth"))
    assert config.arch == arch


def test_dc5_and_resnet101_from_args(tmp_path):
    arch = DetrArchitecture(
        backbone="resnet101",
        dilation=True,
        hidden_dim=16,
        nheads=2,
        enc_layers=1,
        dec_layers=1,
        dim_feedforward=8,
        num_queries=3,
        num_classes=2,
    )
    args = argparse.Namespace(backbone="resnet101", dilation=True, nheads=2, masks=False)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": _state(arch), "optimizer": {}, "lr_scheduler": {}, "epoch": 3, "args": args}, path)
    checkpoint = read_detr_checkpoint(path)
    assert checkpoint.config.arch == arch and checkpoint.source_format == "main.py"
    assert checkpoint.args["backbone"] == "resnet101" and checkpoint.config.assumed == ()
    model = checkpoint.build()
    with torch.no_grad():
        logits, boxes = model(torch.zeros(1, 3, 64, 96))
    assert logits.shape == (1, 3, 3) and boxes.shape == (1, 3, 4)


def test_hub_layout_fp16_and_training_layout_give_the_same_weights(tmp_path):
    state = _state(SMALL)
    hub, train = tmp_path / "hub.pth", tmp_path / "checkpoint.pth"
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in state.items()}}, hub)
    args = argparse.Namespace(backbone="resnet18", hidden_dim=32, nheads=4, dilation=False, masks=False)
    torch.save({"model": state, "optimizer": {"state": {}}, "lr_scheduler": {}, "epoch": 0, "args": args}, train)
    with pytest.raises(Exception, match="argparse.Namespace"):
        torch.load(train, weights_only=True)  # what official main.py --resume hits on torch >= 2.6
    a, b = read_detr_checkpoint(hub), read_detr_checkpoint(train)
    assert a.source_format == "hub" and a.stored_dtype == "float16" and b.source_format == "main.py"
    assert a.config.assumed == ("dilation=False (DETR's default)", "nheads=8 (DETR's default)")
    assert b.config.arch == SMALL and b.config.assumed == ()
    for key, value in b.state_dict.items():
        assert torch.allclose(a.state_dict[key], value, atol=2e-3, rtol=1e-3), key


class _Payload:
    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_payload_in_args_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    payload = _Payload()
    payload.target = marker
    args = argparse.Namespace(backbone="resnet18", evil=payload)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": _state(SMALL), "args": args}, path)
    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint"):
        read_detr_checkpoint(path)
    assert not marker.exists()


def _saved(tmp_path: Path, obj) -> Path:
    path = tmp_path / "other.pth"
    torch.save(obj, path)
    return path


def test_refusals_name_what_was_found_and_what_is_supported(tmp_path):
    state = _state(SMALL)
    cases = {
        "segmentation": {"model": {**{f"detr.{k}": v for k, v in state.items()}, "bbox_attention.k": torch.zeros(1)}},
        "Deformable DETR": {"model": {**state, "transformer.level_embed": torch.zeros(4, 32)}},
        "Conditional DETR": {"model": {**state, "transformer.decoder.ref_point_head.layers.0.weight": torch.zeros(1)}},
        "mmdetection": {"state_dict": state, "meta": {"mmdet_version": "2.25"}},
    }
    for found, obj in cases.items():
        with pytest.raises(CheckpointError, match=found) as info:
            read_detr_checkpoint(_saved(tmp_path, obj))
        message = str(info.value)
        assert "\n" not in message and "ResNet-18/34/50/101" in message
    args = argparse.Namespace(masks=True)
    with pytest.raises(CheckpointError, match="segmentation"):
        read_detr_checkpoint(_saved(tmp_path, {"model": state, "args": args}))


def test_inconsistent_args_are_refused(tmp_path):
    args = argparse.Namespace(hidden_dim=256)
    with pytest.raises(CheckpointError, match="hidden_dim"):
        read_detr_checkpoint(_saved(tmp_path, {"model": _state(SMALL), "args": args}))
