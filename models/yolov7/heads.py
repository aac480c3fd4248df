"""YOLOv7 detection heads with upstream's names (``models/yolo.py``): Detect, IDetect, IAuxDetect.

In eval mode each head returns ``(pred, raw)``: ``pred`` ``[B, N, 5 + C]`` = per row
``[cx, cy, w, h, obj, cls_0 .. cls_{C-1}]`` with xywh in input-canvas pixels and obj/cls sigmoided;
rows level by level (stride order), then anchor, then y, then x. ``raw`` is the list of per-level
``[B, na, ny, nx, 5 + C]`` logits. In train mode only ``raw`` is returned.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import ImplicitA, ImplicitM


class Detect(nn.Module):
    """Deploy head: one 1x1 conv per level, decoded with upstream's eager (non-ONNX) formula
    ``xy = (2σ - 0.5 + grid) * stride``, ``wh = (2σ)² * anchor_grid``."""

    def __init__(self, nc: int = 80, anchors: list | tuple = (), ch: list | tuple = ()) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        a = torch.tensor(anchors).float().view(self.nl, -1, 2)
        self.register_buffer("anchors", a)  # (nl, na, 2), divided by the stride once it is known
        self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, -1, 1, 1, 2))  # pixels
        self.stride = torch.ones(self.nl)
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch[: self.nl])

    def _level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """The lead conv of level ``i`` (subclasses wrap it with their implicit layers)."""
        return self.m[i](x)

    def _decode(self, i: int, raw: torch.Tensor) -> torch.Tensor:
        bs, _, ny, nx, _ = raw.shape
        y = raw.sigmoid()
        yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float()
        xy = (y[..., 0:2] * 2.0 - 0.5 + grid) * self.stride[i]
        wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
        return torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, self.no)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        raw = []
        for i in range(self.nl):
            level = self._level(i, x[i])
            bs, _, ny, nx = level.shape
            raw.append(level.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        return torch.cat([self._decode(i, r) for i, r in enumerate(raw)], 1), raw


class IDetect(Detect):
    """Training head: ``im * conv(x + ia)`` per level (YOLOR implicit knowledge)."""

    def __init__(self, nc: int = 80, anchors: list | tuple = (), ch: list | tuple = ()) -> None:
        super().__init__(nc, anchors, ch)
        self.ia = nn.ModuleList(ImplicitA(x) for x in ch[: self.nl])
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch[: self.nl])

    def _level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.im[i](self.m[i](self.ia[i](x)))

    @torch.no_grad()
    def lead_convs_folded(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(weight, bias)`` of each lead conv with ``ia``/``im`` folded in, as upstream's
        reparameterization notebook computes them: ``W' = W * im``, ``b' = (b + Σ_c W[:, c] ia[c]) * im``."""
        folded = []
        for conv, ia, im in zip(self.m, self.ia, self.im, strict=True):
            scale = im.implicit.reshape(-1)
            weight = conv.weight * scale.view(-1, 1, 1, 1)
            bias = (conv.bias + conv.weight.mul(ia.implicit).sum(1).squeeze()) * scale
            folded.append((weight, bias))
        return folded


class IAuxDetect(IDetect):
    """Training head with the auxiliary branch: ``ch`` holds ``nl`` lead then ``nl`` aux inputs.
    The aux convs ``m2`` only train; eval decodes the lead levels alone."""

    def __init__(self, nc: int = 80, anchors: list | tuple = (), ch: list | tuple = ()) -> None:
        super().__init__(nc, anchors, ch)
        self.m2 = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch[self.nl :])

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        lead = super().forward(x[: self.nl])
        if not self.training:
            return lead
        aux = []
        for i, conv in enumerate(self.m2):
            level = conv(x[self.nl + i])
            bs, _, ny, nx = level.shape
            aux.append(level.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return lead + aux


HEADS = (Detect, IDetect, IAuxDetect)
