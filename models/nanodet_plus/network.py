"""The NanoDet-Plus network: training-time :class:`NanoDetPlus` and its deployable form."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .config import ModelConfig
from .registry import build


class NanoDetPlus(nn.Module):
    """Backbone -> GhostPAN -> NanoDetPlusHead, plus the training-only Assign Guidance Module.

    Submodules (= checkpoint key prefixes): ``backbone``, ``fpn``, ``head``, ``aux_fpn`` (a copy of the
    fpn's architecture), ``aux_head`` (SimpleConvHead).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build("backbone", cfg.backbone)
        self.fpn = build("fpn", cfg.fpn)
        self.head = build("head", cfg.head)
        self.aux_fpn = copy.deepcopy(self.fpn)
        self.aux_head = build("aux_head", cfg.aux_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised BGR -> ``[B, N, C + 4 * (reg_max + 1)]``, class part as logits.

        Same as upstream ``OneStageDetector.forward`` (backbone, fpn, head; the aux branch is not run).
        """
        return self.head(self.fpn(self.backbone(x)))

    def forward_aux(self, x: torch.Tensor) -> torch.Tensor:
        """The Assign Guidance Module's prediction ``[B, N, C + 4 * (reg_max + 1)]`` (training only).

        ``aux_head`` sees the concatenation of the main and auxiliary PAN outputs per level.
        """
        feats = self.backbone(x)
        dual = [torch.cat([f, a], dim=1) for f, a in zip(self.fpn(feats), self.aux_fpn(feats), strict=True)]
        return self.aux_head(dual)

    def deploy(self) -> DeployedNanoDetPlus:
        """An eval-mode copy without the aux modules, returning ``(scores, boxes)``; see
        :class:`DeployedNanoDetPlus`. This model is left unchanged."""
        return DeployedNanoDetPlus(self).eval()


class DeployedNanoDetPlus(nn.Module):
    """Inference form: ``forward(x [B, 3, H, W]) -> (scores [B, N, C], boxes [B, N, 4 * (reg_max + 1)])``.

    ``scores`` are sigmoid probabilities; ``boxes`` the raw box-distribution logits (sides l, t, r, b,
    ``reg_max + 1`` bins each; softmax not applied). Rows are ordered level by level (stride 8 first),
    row-major within a level. Holds copies of ``backbone``, ``fpn`` and ``head`` only; traces with
    symbolic batch, height and width.
    """

    def __init__(self, model: NanoDetPlus) -> None:
        super().__init__()
        self.num_classes = model.cfg.num_classes
        self.backbone = copy.deepcopy(model.backbone)
        self.fpn = copy.deepcopy(model.fpn)
        self.head = copy.deepcopy(model.head)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.fpn(self.backbone(x)))
        return out[..., : self.num_classes].sigmoid(), out[..., self.num_classes :]


def build_model(cfg: ModelConfig) -> NanoDetPlus:
    """The training-time network (aux modules included) for ``cfg``, freshly initialised, train mode."""
    return NanoDetPlus(cfg)
