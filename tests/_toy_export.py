"""A toy export adapter for tests: proves ``nanodet-export`` exports a family it knows nothing about.

The mirror of ``_toy_family.py`` on the training side. Checkpoint: ``torch.save({"toy_conv.weight": [2, 3, 1, 1]})``.
Deploy module: that 1x1 conv, times the declared option ``gain``: ``images [1, 3, 16, 32]`` → ``y [1, 2, 16, 32]``
(static), metadata of the runtime's ``toy`` family (``_toy_family.py``: one detection per image, score
``sigmoid(mean(y[0]))``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nanodet_export.adapter import CommonArgs, ExportAdapter, Option, Prepared
from nanodet_export.writer import PRODUCER
from nanodet_models.sniff import pickle_names
from torch import nn

from nanodet_infer.metadata import ModelMetadata

KEY = "toy_conv.weight"
SIZE_WH = (32, 16)


class ToyNet(nn.Module):
    def __init__(self, weight: torch.Tensor, gain: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(weight * gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def save_checkpoint(path: Path, weight: np.ndarray) -> Path:
    torch.save({KEY: torch.from_numpy(weight)}, path)
    return path


def recognise(path: Path) -> bool:
    return KEY in pickle_names(path).strings


def prepare(ckpt: Path, common: CommonArgs, *, gain: float = 1.0) -> Prepared:
    weight = torch.load(ckpt, weights_only=True)[KEY]
    net = ToyNet(weight, gain).eval()
    metadata = ModelMetadata(
        model_family="toy",
        num_classes=1,
        class_names=tuple(common.class_names or ("thing",)),
        input_size=SIZE_WH,
        dynamic_batch=False,
        dynamic_hw=False,
        input_name="images",
        output="y",
        producer=PRODUCER,
        architecture={"summary": f"toy 1x1 conv, gain {gain}"},
    )
    rng = np.random.default_rng(0)
    return Prepared(
        deploy=net,
        metadata=metadata,
        output_names=("y",),
        channels=(SIZE_WH[1],),
        trace_size=SIZE_WH,
        samples=[rng.random((1, 3, SIZE_WH[1], SIZE_WH[0]), dtype=np.float32)],
        input_shape=[1, 3, SIZE_WH[1], SIZE_WH[0]],
        dynamic=False,
        dynamic_hw=False,
        source_format="toy",
    )


ADAPTER = ExportAdapter(
    name="toy",
    description="the tests' toy family: one 1x1 conv",
    recognise=recognise,
    prepare=prepare,
    options=(Option("gain", float, "multiply the conv's weights by this", metavar="G"),),
)
