"""The DETR detector (``models/detr.py`` ``DETR`` + ``Joiner``), official state-dict keys, eval only.

Keys: ``backbone.0.body.*`` (:mod:`~..torchvision_resnet`), ``input_proj``, ``transformer.*`` (:mod:`.transformer`),
``query_embed.weight [Q, D]``, ``class_embed`` (``Linear(D, C + 1)``, the last logit is no-object),
``bbox_embed.layers.{0,1,2}`` (MLP ``D → D → D → 4``, ReLU between). There is no key for the positional
encoding (sine, :func:`.transformer.sine_position_encoding`).

:meth:`DETR.forward` takes ``x [B, 3, H, W]`` (ImageNet-normalised RGB) and an optional padding
``mask [B, H, W]`` (True on padding, as ``nested_tensor_from_tensor_list`` makes it); without a mask every
pixel is valid, which is the official result for one unpadded image. It returns the last decoder layer's
``pred_logits [B, Q, C + 1]`` and ``pred_boxes [B, Q, 4]`` (sigmoid cxcywh, relative to the unpadded image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..torchvision_resnet import ResNetBody
from .transformer import Transformer, sine_position_encoding


@dataclass(frozen=True)
class DetrArchitecture:
    """The facts that shape a DETR: ``backbone`` (``resnet18|34|50|101``), ``dilation`` (DC5), ``hidden_dim``,
    ``nheads``, ``enc_layers``, ``dec_layers``, ``dim_feedforward``, ``pre_norm``, ``num_queries``,
    ``num_classes`` (logits = ``num_classes + 1``)."""

    backbone: str = "resnet50"
    dilation: bool = False
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    pre_norm: bool = False
    num_queries: int = 100
    num_classes: int = 91


class Backbone(nn.Module):
    """``backbone.0``: the ResNet ``body`` (:class:`~..torchvision_resnet.ResNetBody`; DETR uses its C5)."""

    def __init__(self, name: str, dilation: bool) -> None:
        super().__init__()
        self.body = ResNetBody(name, dilation)


class MLP(nn.Module):
    """DETR's ``MLP``: ``layers`` Linear, ReLU after all but the last."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n, k) for n, k in zip([input_dim, *dims], [*dims, output_dim], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if index < len(self.layers) - 1 else layer(x)
        return x


class DETR(nn.Module):
    """DETR for inference (see the module docstring)."""

    def __init__(self, arch: DetrArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = nn.ModuleList([Backbone(arch.backbone, arch.dilation)])
        channels = self.backbone[0].body.num_channels
        self.input_proj = nn.Conv2d(channels, arch.hidden_dim, kernel_size=1)
        self.transformer = Transformer(
            arch.hidden_dim, arch.nheads, arch.enc_layers, arch.dec_layers, arch.dim_feedforward, arch.pre_norm
        )
        self.query_embed = nn.Embedding(arch.num_queries, arch.hidden_dim)
        self.class_embed = nn.Linear(arch.hidden_dim, arch.num_classes + 1)
        self.bbox_embed = MLP(arch.hidden_dim, arch.hidden_dim, 4, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.all_layers(x, mask, last_only=True)
        return outputs[-1]

    def all_layers(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, last_only: bool = False
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(pred_logits, pred_boxes)`` of every decoder layer (``aux_outputs`` and the last), or only the last."""
        features = self.backbone[0].body(x)[-1]  # C5
        if mask is None:
            key_padding_mask = None
            not_mask = torch.ones_like(features[:, 0])
        else:
            feature_mask = F.interpolate(mask[None].float(), size=features.shape[-2:]).to(torch.bool)[0]
            key_padding_mask = feature_mask.flatten(1)
            not_mask = (~feature_mask).to(torch.float32)
        pos = sine_position_encoding(not_mask, self.arch.hidden_dim // 2)
        hs = self.transformer(self.input_proj(features), key_padding_mask, self.query_embed.weight, pos, last_only)
        return [(self.class_embed(h), self.bbox_embed(h).sigmoid()) for h in hs]


def build_detr(arch: DetrArchitecture) -> DETR:
    """A DETR of ``arch`` in eval mode (weights uninitialised until loaded)."""
    return DETR(arch).eval()
