"""Building blocks shared by the torchvision-layout detectors (SSD, SSDLite, RetinaNet), without torchvision.

Each block reproduces torchvision's module *and* its ``state_dict`` key layout, so that checkpoints
written by torchvision load strictly: :func:`conv_norm_act` is ``torchvision.ops.Conv2dNormActivation``
(an ``nn.Sequential`` of conv, norm, activation: keys ``0.weight``, ``1.weight``, ...),
:class:`FrozenBatchNorm2d` is ``torchvision.ops.FrozenBatchNorm2d`` and :func:`flatten_level` is the
head output reshape of ``SSDScoringHead`` / ``RetinaNet*Head``.

A checkpoint does not store which normalisation layer its model was built with, nor the eps:
:class:`NormChoice` states it (see :func:`models.torchvision_checkpoint.norm_choice`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

#: torchvision's 91 COCO category names (index = label; 0 is the background, "N/A" are unused ids).
COCO_V91_NAMES: tuple[str, ...] = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


class FrozenBatchNorm2d(nn.Module):
    """torchvision's ``FrozenBatchNorm2d``: fixed statistics and affine, buffers only (no
    ``num_batches_tracked``). Computes ``x * scale + (bias - running_mean * scale)`` with
    ``scale = weight * rsqrt(running_var + eps)``, in torchvision's order of operations."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        bias = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + bias

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


@dataclass(frozen=True)
class NormChoice:
    """The normalisation layer a torchvision backbone was built with, which a checkpoint only half tells.

    ``kind``: ``'batchnorm'`` (``nn.BatchNorm2d``: the checkpoint has ``num_batches_tracked`` keys) or
    ``'frozen'`` (``FrozenBatchNorm2d``: it has none; torchvision's choice for a pretrained backbone).
    ``eps``: not stored in any checkpoint. ``eps_given``: stated by the user rather than assumed.
    In eval mode both kinds compute the same affine map; only ``eps`` changes the numbers.
    """

    kind: Literal["batchnorm", "frozen"]
    eps: float
    eps_given: bool = False

    def layer(self) -> Callable[[int], nn.Module]:
        """A factory ``channels -> module`` for this choice."""
        if self.kind == "frozen":
            return lambda channels: FrozenBatchNorm2d(channels, eps=self.eps)
        return lambda channels: nn.BatchNorm2d(channels, eps=self.eps)

    def describe(self, *, provenance: bool = True) -> str:
        """E.g. ``BatchNorm2d eps 0.001 (assumed)``; without ``provenance`` the part in parentheses is left out."""
        name = "FrozenBatchNorm2d" if self.kind == "frozen" else "BatchNorm2d"
        text = f"{name} eps {self.eps:g}"
        return f"{text} ({'given' if self.eps_given else 'assumed'})" if provenance else text


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    norm: Callable[[int], nn.Module] | None,
    activation: Callable[[], nn.Module] | None,
) -> nn.Sequential:
    """``torchvision.ops.Conv2dNormActivation``: conv (padding ``(k - 1) // 2 * dilation``, bias only
    without a norm), then the norm, then the activation, as ``nn.Sequential`` items ``0``, ``1``, ``2``."""
    padding = (kernel_size - 1) // 2 * dilation
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=norm is None,
        )
    ]
    if norm is not None:
        layers.append(norm(out_channels))
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


def flatten_level(x: torch.Tensor, columns: int) -> torch.Tensor:
    """Head output of one level ``[N, A * K, H, W]`` → ``[N, H * W * A, K]`` (``K = columns``).

    Rows run over y, then x, then the A anchors of a location, as torchvision's
    ``view(N, A, K, H, W).permute(0, 3, 4, 1, 2).reshape(N, -1, K)``.
    """
    n, _, h, w = x.shape
    return x.view(n, -1, columns, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, columns)
