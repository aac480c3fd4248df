"""Safe reading of upstream YOLOv7 training checkpoints: the restricted unpickler and hostile pickles."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _yolov7 import FIXTURES, save_upstream_checkpoint, seeded, small_yaml
from nanodet_models.yolov7 import YOLOv7, is_yolov7_checkpoint, load_yolov7_weights, read_yolov7_checkpoint
from nanodet_models.yolov7.checkpoint import RESTRICTED_PICKLE

from nanodet_infer.errors import CheckpointError, ModelLoadError, UnsafeCheckpointError


@pytest.fixture(scope="module")
def pair() -> tuple[YOLOv7, YOLOv7]:
    """A small training model and a different 'EMA' copy of it."""
    return seeded(YOLOv7(small_yaml()), 0), seeded(YOLOv7(small_yaml()), 1)


@pytest.mark.parametrize("name", FIXTURES)
def test_reads_upstream_checkpoints(shared_fixtures: Path, name: str) -> None:
    path = shared_fixtures / name / f"{name}.pt"
    ckpt = read_yolov7_checkpoint(path)
    assert ckpt.used_ema  # upstream attempt_load takes 'ema' when present
    assert ckpt.names[:2] == ("person", "bicycle") and len(ckpt.names) == ckpt.yaml["nc"] == 80
    assert all(t.dtype != torch.float16 for t in ckpt.state_dict.values())
    assert is_yolov7_checkpoint(path)
    model = YOLOv7(ckpt.yaml)
    load_yolov7_weights(model, ckpt)
    assert ckpt.module_types[f"model.{len(model.model) - 1}"] == type(model.head).__name__


def test_takes_ema_else_model(tmp_path: Path, pair: tuple[YOLOv7, YOLOv7]) -> None:
    model, ema = pair
    for stored_ema, want in ((ema, ema), (None, model)):
        path = tmp_path / "c.pt"
        save_upstream_checkpoint(path, model, stored_ema)
        ckpt = read_yolov7_checkpoint(path)
        assert ckpt.used_ema == (stored_ema is not None)
        assert ckpt.names == ("class0", "class1", "class2")
        for key, value in want.state_dict().items():
            expected = value.half().float() if value.is_floating_point() else value
            assert torch.equal(ckpt.state_dict[key], expected), key


class _System:
    """Unpickling this runs ``os.system(command)`` — a real code-execution payload."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_os_system_payload_is_refused_and_never_runs(tmp_path: Path, pair: tuple[YOLOv7, YOLOv7]) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    save_upstream_checkpoint(path, *pair, wandb_id=_System(f"touch {marker}"))
    assert is_yolov7_checkpoint(path)  # looks like a genuine checkpoint
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os|nt)\.system"):
        read_yolov7_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [("builtins", "eval"), ("models.common", "Evil"), ("torch.nn.modules.module", "Module"), ("numpy", "load")],
)
def test_classes_outside_the_allow_list_are_named(module: str, name: str) -> None:
    payload = f"c{module}\n{name}\n)R.".encode()  # GLOBAL + empty-tuple REDUCE
    with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}.*nothing was executed"):
        RESTRICTED_PICKLE.load(io.BytesIO(payload))


def test_unsupported_upstream_module_is_named() -> None:
    payload = b"cmodels.common\nRepConv_OREPA\n)R."
    with pytest.raises(UnsafeCheckpointError, match="upstream module models.common.RepConv_OREPA, which this exporter"):
        RESTRICTED_PICKLE.load(io.BytesIO(payload))


def test_not_a_yolov7_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    assert not is_yolov7_checkpoint(path)
    with pytest.raises(CheckpointError, match="no pickled models.yolo.Model"):
        read_yolov7_checkpoint(path)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"model": 1}))
    assert not is_yolov7_checkpoint(legacy)
    with pytest.raises(CheckpointError, match="not a torch zip checkpoint"):
        read_yolov7_checkpoint(legacy)
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_yolov7_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_not_matching_its_yaml(tmp_path: Path, pair: tuple[YOLOv7, YOLOv7]) -> None:
    path = tmp_path / "c.pt"
    save_upstream_checkpoint(path, *pair)
    ckpt = read_yolov7_checkpoint(path)
    with pytest.raises(CheckpointError, match="module model.0 of the checkpoint is Conv but its YAML builds ReOrg"):
        load_yolov7_weights(YOLOv7(small_yaml("yolov7-w6")), ckpt)
    silu = small_yaml()
    silu["backbone"][0][3][-1] = "nn.SiLU()"  # yolov7-tiny's first Conv trained with LeakyReLU(0.1)
    with pytest.raises(
        CheckpointError, match="module model.0.act of the checkpoint is LeakyReLU but its YAML builds SiLU"
    ):
        load_yolov7_weights(YOLOv7(silu), ckpt)
    wider = YOLOv7(small_yaml(width=0.125))
    with pytest.raises(CheckpointError, match="of another shape"):
        load_yolov7_weights(wider, ckpt)
    assert np.isfinite(ckpt.state_dict["model.0.conv.weight"].numpy()).all()


def test_hostile_archive_is_refused_before_torch_reads_it(tmp_path: Path, pair: tuple[YOLOv7, YOLOv7]) -> None:
    good = tmp_path / "good.pt"
    save_upstream_checkpoint(good, *pair)
    path = tmp_path / "odd.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("../escape.txt", b"x")  # a member name outside the archive's folder
    assert not is_yolov7_checkpoint(path)  # recognition never inflates a refused archive
    with pytest.raises(CheckpointError, match=r"\.\."):
        read_yolov7_checkpoint(path)
