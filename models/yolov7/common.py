"""YOLOv7 building blocks with upstream's module and attribute names (``models/common.py``).

Every class keeps upstream's constructor signature and sub-module names, so a state_dict of an
upstream ``models.yolo.Model`` loads into ours key for key. Tensors are NCHW float32.
"""

from __future__ import annotations

import torch
from torch import nn


def autopad(k: int | list[int], p: int | list[int] | None = None) -> int | list[int]:
    """Upstream's 'same' padding: ``k // 2`` unless ``p`` is given."""
    if p is None:
        return k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


def _activation(act: bool | nn.Module) -> nn.Module:
    """``True`` → SiLU (upstream's default), a module → itself, anything else → Identity."""
    if act is True:
        return nn.SiLU(inplace=True)
    return act if isinstance(act, nn.Module) else nn.Identity()


def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv with bias equal to ``bn(conv(x))`` in eval mode (upstream ``utils.torch_utils``).

    ``w = diag(gamma / sqrt(var + eps)) @ W``, ``b = diag(...) @ b_conv + beta - gamma*mean/sqrt(var + eps)``,
    computed with upstream's operations so the rounding is the same.
    """
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        groups=conv.groups,
        bias=True,
    ).requires_grad_(False)
    w_conv = conv.weight.detach().clone().view(conv.out_channels, -1)
    w_bn = torch.diag(bn.weight.detach().div(torch.sqrt(bn.eps + bn.running_var)))
    fused.weight.copy_(torch.mm(w_bn, w_conv).view(fused.weight.shape))
    b_conv = torch.zeros(conv.weight.size(0)) if conv.bias is None else conv.bias.detach()
    b_bn = bn.bias.detach() - bn.weight.detach().mul(bn.running_mean).div(torch.sqrt(bn.running_var + bn.eps))
    fused.bias.copy_(torch.mm(w_bn, b_conv.reshape(-1, 1)).reshape(-1) + b_bn)
    return fused


class Conv(nn.Module):
    """``act(bn(conv(x)))``: conv without bias, BatchNorm, activation (SiLU unless ``act`` says)."""

    def __init__(
        self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, act: bool | nn.Module = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "bn"):  # fused: the BatchNorm lives in conv's weights
            return self.act(self.conv(x))
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Fold the BatchNorm into the conv (upstream ``Model.fuse``)."""
        if hasattr(self, "bn"):
            self.conv = fuse_conv_and_bn(self.conv, self.bn)
            del self.bn


class RepConv(nn.Module):
    """RepVGG block: ``act(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))`` (the identity branch only when
    ``c1 == c2`` and ``s == 1``); :meth:`fuse_repvgg_block` turns it into one 3x3 conv with bias
    (``rbr_reparam``), as upstream's deploy conversion does."""

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 3,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        act: bool | nn.Module = True,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if k != 3 or autopad(k, p) != 1:
            raise ValueError(f"RepConv needs a 3x3 kernel with padding 1; got k={k}, p={p}")
        self.deploy = deploy
        self.groups = g
        self.in_channels = c1
        self.out_channels = c2
        self.act = _activation(act)
        if deploy:
            self.rbr_reparam = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=True)
        else:
            self.rbr_identity = nn.BatchNorm2d(num_features=c1) if c2 == c1 and s == 1 else None
            self.rbr_dense = nn.Sequential(
                nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False), nn.BatchNorm2d(num_features=c2)
            )
            self.rbr_1x1 = nn.Sequential(
                nn.Conv2d(c1, c2, 1, s, 0, groups=g, bias=False), nn.BatchNorm2d(num_features=c2)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "rbr_reparam"):
            return self.act(self.rbr_reparam(x))
        identity = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x) + identity)

    @staticmethod
    def _fold(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
        std = (bn.running_var + bn.eps).sqrt()
        bias = bn.bias - bn.running_mean * bn.weight / std
        return weight * (bn.weight / std).reshape(-1, 1, 1, 1), bias

    @torch.no_grad()
    def fuse_repvgg_block(self) -> None:
        """Replace the branches by ``rbr_reparam`` (upstream ``RepConv.fuse_repvgg_block``): each branch
        Conv+BN-folded, the 1x1 (and identity) kernels zero-padded to 3x3 and added."""
        if hasattr(self, "rbr_reparam"):
            return
        w_dense, b_dense = self._fold(self.rbr_dense[0].weight, self.rbr_dense[1])
        w_1x1, b_1x1 = self._fold(self.rbr_1x1[0].weight, self.rbr_1x1[1])
        weight = w_dense + nn.functional.pad(w_1x1, [1, 1, 1, 1])
        bias = b_dense + b_1x1
        if self.rbr_identity is not None:
            eye = torch.zeros(self.out_channels, self.in_channels // self.groups, 1, 1)
            for i in range(self.out_channels):
                eye[i, i % (self.in_channels // self.groups)] = 1.0
            w_id, b_id = self._fold(eye, self.rbr_identity)
            weight = weight + nn.functional.pad(w_id, [1, 1, 1, 1])
            bias = bias + b_id
        dense = self.rbr_dense[0]
        self.rbr_reparam = nn.Conv2d(
            self.in_channels, self.out_channels, 3, dense.stride, dense.padding, groups=self.groups, bias=True
        ).requires_grad_(False)
        self.rbr_reparam.weight.copy_(weight)
        self.rbr_reparam.bias.copy_(bias)
        self.deploy = True
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity


class MP(nn.Module):
    """``k x k`` max-pool with stride ``k``."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class SP(nn.Module):
    """``k x k`` max-pool with stride ``s`` and padding ``k // 2`` (yolov7-tiny's SPP branches)."""

    def __init__(self, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class ReOrg(nn.Module):
    """Space to depth: ``[B, C, H, W]`` → ``[B, 4C, H/2, W/2]`` in upstream's slice order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension``."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class Shortcut(nn.Module):
    """Sum of the first two inputs (yolov7-e6e)."""

    def __init__(self, dimension: int = 0) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return x[0] + x[1]


class DownC(nn.Module):
    """Stride-``k`` downsampling: ``cat(cv2(cv1(x)), cv3(maxpool_k(x)))``, ``c2 / 2`` channels each."""

    def __init__(self, c1: int, c2: int, n: int = 1, k: int = 2) -> None:
        super().__init__()
        c_ = int(c1)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2 // 2, 3, k)
        self.cv3 = Conv(c1, c2 // 2, 1, 1)
        self.mp = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), dim=1)


class SPPCSPC(nn.Module):
    """CSP spatial pyramid pooling (max-pools ``k`` with stride 1) of yolov7's neck."""

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5, k: tuple = (5, 9, 13)
    ) -> None:
        super().__init__()
        c_ = int(2 * c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(c_, c_, 3, 1)
        self.cv4 = Conv(c_, c_, 1, 1)
        self.m = nn.ModuleList([nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k])
        self.cv5 = Conv(4 * c_, c_, 1, 1)
        self.cv6 = Conv(c_, c_, 3, 1)
        self.cv7 = Conv(2 * c_, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        y2 = self.cv2(x)
        return self.cv7(torch.cat((y1, y2), dim=1))


class ImplicitA(nn.Module):
    """YOLOR implicit addition: ``x + implicit`` (``[1, C, 1, 1]``)."""

    def __init__(self, channel: int, mean: float = 0.0, std: float = 0.02) -> None:
        super().__init__()
        self.channel, self.mean, self.std = channel, mean, std
        self.implicit = nn.Parameter(torch.zeros(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """YOLOR implicit multiplication: ``x * implicit`` (``[1, C, 1, 1]``)."""

    def __init__(self, channel: int, mean: float = 1.0, std: float = 0.02) -> None:
        super().__init__()
        self.channel, self.mean, self.std = channel, mean, std
        self.implicit = nn.Parameter(torch.ones(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit * x
