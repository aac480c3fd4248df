"""Helpers for the YOLOv7 tests: small models from the presets, and upstream-format checkpoints.

:func:`save_upstream_checkpoint` writes what upstream's ``train.py`` writes — a dict holding pickled
``models.yolo.Model`` objects in fp16 — by pickling our modules under upstream's module/class names
(registered as fake ``models.common`` / ``models.yolo`` modules for the duration of the save).
"""

from __future__ import annotations

import copy
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from nanodet_models.yolov7 import YOLOv7, common, heads, preset

FIXTURES = ("yolov7-s", "yolov7-tiny-s", "yolov7-w6-aux-s")  # folders of ../shared/fixtures
STEMS = ("val_00000", "val_00001", "val_00002")


def fixture_input(folder: Path, stem: str) -> np.ndarray:
    """The float32 model input upstream built: the stored tensor, or the letterboxed PNG → RGB / 255."""
    stored = folder / f"{stem}_input.npz"
    if stored.is_file():
        return np.load(stored)["x"]
    image = cv2.imread(str(folder / f"{stem}_letterbox.png"), cv2.IMREAD_UNCHANGED)
    return (np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32) / np.float32(255))[None]


UPSTREAM_CLASSES = {
    "models.common": [getattr(common, n) for n in ("Conv", "RepConv", "MP", "SP", "SPPCSPC", "ReOrg", "DownC")]
    + [getattr(common, n) for n in ("Concat", "Shortcut", "ImplicitA", "ImplicitM")],
    "models.yolo": [heads.Detect, heads.IDetect, heads.IAuxDetect, YOLOv7],
}


def small_yaml(name: str = "yolov7-tiny", width: float = 0.0625, nc: int = 3) -> dict[str, Any]:
    """A preset at reduced width with ``nc`` classes (fast to build and run)."""
    d = preset(name)
    d["width_multiple"], d["nc"] = width, nc
    return d


def seeded(model: YOLOv7, seed: int = 0) -> YOLOv7:
    """``model`` with seeded non-trivial BN statistics and implicit values (so folding matters)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1 + 0.2 * torch.rand(m.running_var.shape, generator=gen))
            elif isinstance(m, common.ImplicitA):
                m.implicit.copy_(0.3 * torch.randn(m.implicit.shape, generator=gen))
            elif isinstance(m, common.ImplicitM):
                m.implicit.copy_(1 + 0.15 * torch.randn(m.implicit.shape, generator=gen))
    return model.eval()


@contextmanager
def _upstream_names():
    saved = []
    fakes = {"models": types.ModuleType("models")}
    for module_name, classes in UPSTREAM_CLASSES.items():
        fake = fakes[module_name] = types.ModuleType(module_name)
        for cls in classes:
            name = "Model" if cls is YOLOv7 else cls.__name__
            saved.append((cls, cls.__module__, cls.__qualname__))
            cls.__module__, cls.__qualname__ = module_name, name
            setattr(fake, name, cls)
    before = {k: sys.modules.get(k) for k in fakes}
    sys.modules.update(fakes)
    try:
        yield
    finally:
        for cls, module, qualname in saved:
            cls.__module__, cls.__qualname__ = module, qualname
        for k, v in before.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def save_upstream_checkpoint(path: Path, model: YOLOv7, ema: YOLOv7 | None, **extra: Any) -> None:
    """Write ``{'model': model.half(), 'ema': ema.half(), 'epoch': 2, ...}`` as upstream's train.py does."""
    content = {
        "epoch": 2,
        "best_fitness": 0.0,
        "model": copy.deepcopy(model).half(),
        "ema": copy.deepcopy(ema).half() if ema is not None else None,
        "updates": 3000,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
        "wandb_id": None,
        **extra,
    }
    for stored in (content["model"], content["ema"]):
        if stored is not None:  # train.py attaches them; ema.update_attr copies them to the EMA
            stored.names = [f"class{i}" for i in range(model.head.nc)]
    with _upstream_names():
        torch.save(content, path)
