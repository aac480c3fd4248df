"""Reliability round 3, checkpoints: declared sizes are never trusted. Tensor views are checked against their
storage before any cast, YOLOv7 YAML numbers against bounds and the stored weights before any build, pickled
module trees are walked once per object with a depth bound, and every malformed structure is a CheckpointError."""

from __future__ import annotations

import copy
import sys
import time
import types
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from _yolov7 import save_upstream_checkpoint, seeded, small_yaml
from nanodet_models.nanodet_plus.checkpoint import read_checkpoint
from nanodet_models.tensor_bounds import check_tensors
from nanodet_models.torchvision_checkpoint import read_torchvision_checkpoint
from nanodet_models.yolov7 import YOLOv7, read_yolov7_checkpoint

from nanodet_infer.errors import CheckpointError


def _bomb() -> torch.Tensor:
    """One fp16 element declared as [32768, 32768] (stride 0): 4 GiB once cast to float32."""
    return torch.zeros(1, dtype=torch.float16).expand(32768, 32768)


def test_check_tensors_refuses_stride_0_and_overlapping_views() -> None:
    with pytest.raises(CheckpointError, match=r"declares shape \[32768, 32768\].*stride-0"):
        check_tensors({"w": _bomb()}, "x.pth")
    overlapping = torch.zeros(100).as_strided((50, 50), (1, 1))  # 2500 elements over 100 stored
    with pytest.raises(CheckpointError, match="overlapping"):
        check_tensors({"w": overlapping}, "x.pth")
    shared = torch.zeros(10, 10)
    check_tensors({"a": shared[:5], "b": shared[5:], "c": shared.t()}, "x.pth")  # ordinary views pass


def test_whole_model_budget(monkeypatch) -> None:
    import nanodet_models.tensor_bounds as bounds

    monkeypatch.setattr(bounds, "MAX_WEIGHT_BYTES", 1000)
    with pytest.raises(CheckpointError, match="memory budget"):
        bounds.check_tensors({"a": torch.zeros(200, dtype=torch.float16), "b": torch.zeros(100)}, "x.pth")


@pytest.mark.parametrize("reader", [read_torchvision_checkpoint, read_checkpoint])
def test_stride_0_bomb_is_refused_before_the_cast(tmp_path: Path, reader, monkeypatch) -> None:
    path = tmp_path / "bomb.pth"
    key = "head.classification_head.cls_logits.weight"
    torch.save(OrderedDict({key: _bomb(), "other": torch.zeros(3)}), path)
    assert path.stat().st_size < 10_000
    monkeypatch.setattr(torch.Tensor, "float", lambda self: pytest.fail("a declared size was allocated"))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="stride-0"):
        reader(path)
    assert time.perf_counter() - start < 5


def test_detr_stride_0_bomb_is_refused_before_the_cast(tmp_path: Path, monkeypatch) -> None:
    from nanodet_models.detr.checkpoint import read_detr_checkpoint

    path = tmp_path / "detr_bomb.pth"
    torch.save({"model": OrderedDict({"class_embed.weight": _bomb(), "query_embed.weight": torch.zeros(3)})}, path)
    monkeypatch.setattr(torch.Tensor, "float", lambda self: pytest.fail("a declared size was allocated"))
    with pytest.raises(CheckpointError, match="stride-0"):
        read_detr_checkpoint(path)


def test_torchvision_head_declaring_200000_classes_is_refused_before_building(tmp_path: Path) -> None:
    path = tmp_path / "huge_head.pth"
    torch.save({"head.classification_head.cls_logits.weight": torch.zeros(1).expand(9 * 200_000, 256, 3, 3)}, path)
    with pytest.raises(CheckpointError, match="stride-0"):
        read_torchvision_checkpoint(path)


# ---------------------------------------------------------------------------------------------- YOLOv7
@pytest.fixture(scope="module")
def model() -> YOLOv7:
    return seeded(YOLOv7(small_yaml()))


def _with_yaml(tmp_path: Path, model: YOLOv7, change) -> Path:
    changed = copy.deepcopy(model)
    change(changed.yaml)
    path = tmp_path / "c.pt"
    save_upstream_checkpoint(path, changed, None)
    return path


def _set(key: str, value: Any):
    def change(yaml: dict[str, Any]) -> None:
        if value is ...:
            del yaml[key]
        else:
            yaml[key] = value
    return change


def _bad_layer_index(yaml: dict[str, Any]) -> None:
    yaml["head"][3][0] = 500


YAML_CASES = {
    "width_multiple 400": (_set("width_multiple", 400), "width_multiple is 400"),
    "nc 10**10 without names": (_set("nc", 10**10), r"nc is 10000000000, not an integer in 1\.\.100000"),
    "nc a string": (_set("nc", "80"), "nc is '80'"),
    "no anchors": (_set("anchors", ...), "anchors are None"),
    "a bad layer index": (_bad_layer_index, "reads from 500, not earlier layers"),
    "nc not the stored names'": (_set("nc", 7), "names 3 classes but its yaml has nc=7"),
    "width larger than the stored weights": (_set("width_multiple", 2.0), "builds at least .* weights but the "
                                                                          "checkpoint stores"),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_malformed_yaml_in_a_checkpoint_is_refused_before_building(tmp_path: Path, model: YOLOv7, case: str,
                                                                    monkeypatch) -> None:
    change, message = YAML_CASES[case]
    path = _with_yaml(tmp_path, model, change)
    monkeypatch.setattr(YOLOv7, "__init__", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(CheckpointError, match=message):
        read_yolov7_checkpoint(path)


def test_yaml_bounds_hold_when_building_from_a_yaml_alone() -> None:
    for key, value, message in (("width_multiple", 400, "width_multiple"), ("nc", 0, "nc is 0"),
                                ("depth_multiple", float("nan"), "depth_multiple")):
        yaml = small_yaml()
        yaml[key] = value
        with pytest.raises(CheckpointError, match=message):
            YOLOv7(yaml)


# pickled models written without torch modules: plain objects under upstream's class names
@contextmanager
def _upstream_classes():
    classes = {}
    fakes = {name: types.ModuleType(name) for name in ("models", "models.yolo", "models.common")}
    for module, name in (("models.yolo", "Model"), ("models.common", "Conv")):
        cls = type(name, (), {"__module__": module, "__qualname__": name})
        setattr(fakes[module], name, cls)
        classes[name] = cls
    before = {k: sys.modules.get(k) for k in fakes}
    sys.modules.update(fakes)
    try:
        yield classes
    finally:
        for k, v in before.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _save_tree(path: Path, build) -> None:
    with _upstream_classes() as classes:
        root = classes["Model"]()
        root.__dict__.update({"yaml": small_yaml(), "_parameters": {}, "_buffers": {}, "_modules": {}})
        build(root, classes)
        torch.save({"model": root, "ema": None}, path)


def _shared_children(root: Any, classes: dict[str, type]) -> None:
    """60 levels, each module holding the next one twice: 2**60 paths, 60 objects."""
    node = root
    for _ in range(60):
        child = classes["Conv"]()
        child.__dict__.update({"_parameters": {}, "_buffers": {}, "_modules": {}})
        node._modules = {"a": child, "b": child}
        node = child


def _modules_a_list(root: Any, classes: dict[str, type]) -> None:
    root._modules = [1, 2, 3]


def _a_cycle(root: Any, classes: dict[str, type]) -> None:
    child = classes["Conv"]()
    child.__dict__.update({"_parameters": {}, "_buffers": {}, "_modules": {"up": root}})
    root._modules = {"0": child}


@pytest.mark.parametrize("build, message", [
    (_shared_children, "nest deeper than 32"),
    (_modules_a_list, "holds its sub-modules as a list"),
    (_a_cycle, "needs a head"),  # the cycle is walked once; then the (empty) tree does not fit its yaml
])
def test_hostile_module_trees_end_quickly_with_a_typed_error(tmp_path: Path, build, message: str) -> None:
    path = tmp_path / "tree.pt"
    _save_tree(path, build)
    assert path.stat().st_size < 100_000
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=message):
        read_yolov7_checkpoint(path)
    assert time.perf_counter() - start < 10


def test_export_cli_gives_exit_2_not_internal_error(tmp_path: Path, model: YOLOv7, capsys) -> None:
    from nanodet_export.cli import main

    path = _with_yaml(tmp_path, model, _set("nc", "80"))
    assert main(["--ckpt", str(path), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "nc is '80'" in err and "internal error" not in err and err.count("\n") == 1
