"""YOLOv7 network built from an upstream YAML dict exactly as upstream's ``parse_model`` does.

The YAML (``cfg/training/*.yaml`` or ``cfg/deploy/*.yaml``) lists layers ``[from, number, module,
args]``; channel counts are scaled by ``width_multiple`` and rounded up to a multiple of 8, repeats
by ``depth_multiple``. String arguments are read by a small literal parser (``nc``, ``anchors``,
``None``, numbers, ``nn.<Activation>(numbers)``), never by ``eval``. The result, :class:`YOLOv7`, has
upstream's state_dict layout: ``model.<i>.<submodule>...``.
"""

from __future__ import annotations

import ast
import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nanodet_infer.errors import CheckpointError

from .common import MP, SP, SPPCSPC, Concat, Conv, DownC, ReOrg, RepConv, Shortcut
from .heads import HEADS, Detect, IAuxDetect, IDetect

#: Upstream module names a YAML may use -> our class.
MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "RepConv": RepConv,
    "MP": MP,
    "SP": SP,
    "SPPCSPC": SPPCSPC,
    "ReOrg": ReOrg,
    "DownC": DownC,
    "Concat": Concat,
    "Shortcut": Shortcut,
    "Detect": Detect,
    "IDetect": IDetect,
    "IAuxDetect": IAuxDetect,
    "nn.Upsample": nn.Upsample,
}
_CONV_LIKE = (Conv, RepConv, DownC, SPPCSPC)  # first arg = output channels, scaled by width_multiple
_REPEATS_INSIDE = (DownC, SPPCSPC)  # take the repeat count as their third argument
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "nn.SiLU": nn.SiLU,
    "nn.LeakyReLU": nn.LeakyReLU,
    "nn.ReLU": nn.ReLU,
    "nn.Hardswish": nn.Hardswish,
    "nn.Identity": nn.Identity,
}
BN_EPS, BN_MOMENTUM = 1e-3, 0.03  # upstream initialize_weights
STRIDE_PROBE = 256  # upstream measures the strides on a 256 x 256 zero input


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of ``divisor`` >= ``x``."""
    return math.ceil(x / divisor) * divisor


def _argument(text: str, d: Mapping[str, Any]) -> Any:
    """An upstream YAML argument string as upstream's ``eval`` would read it, for the forms the
    official YAMLs use; any other string stays a string (as upstream's failed ``eval`` leaves it)."""
    if text in ("nc", "anchors"):
        return d[text]
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return text
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        name = f"{getattr(node.func.value, 'id', '')}.{node.func.attr}"
        if name in _ACTIVATIONS and not node.keywords and all(isinstance(a, ast.Constant) for a in node.args):
            module = _ACTIVATIONS[name](*(a.value for a in node.args))
            if hasattr(module, "inplace"):
                module.inplace = True  # upstream initialize_weights
            return module
        raise CheckpointError(f"unsupported YAML argument {text!r}; supported activations: {', '.join(_ACTIVATIONS)}")
    return text


def parse_model(d: Mapping[str, Any], ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    """Upstream ``parse_model``: the layers of ``d`` (backbone + head) and the indices whose outputs
    later layers read. Raises :class:`CheckpointError` naming an unsupported module."""
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    layers, save, c2 = [], [], ch[-1]
    for i, (f, n, name, args) in enumerate(d["backbone"] + d["head"]):
        if name not in MODULES:
            raise CheckpointError(
                f"layer {i} uses module {name!r}, which this exporter does not build; supported: {', '.join(MODULES)}"
            )
        m = MODULES[name]
        args = [_argument(a, d) if isinstance(a, str) else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m in _CONV_LIKE:
            c1, c2 = ch[f], args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if m in _REPEATS_INSIDE:
                args.insert(2, n)
                n = 1
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        elif m is Shortcut:
            c2 = ch[f[0]]
        elif m in HEADS:
            args.append([ch[x] for x in f])
            if isinstance(args[1], int):
                args[1] = [list(range(args[1] * 2))] * len(f)
        elif m is ReOrg:
            c2 = ch[f] * 4
        else:
            c2 = ch[f]
        module = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        module.i, module.f = i, f
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


class YOLOv7(nn.Module):
    """Upstream ``models.yolo.Model``: ``self.model`` (the layers) and ``self.yaml`` (the config dict).

    ``forward(x)`` takes ``[B, 3, H, W]`` RGB in [0, 1] (H, W multiples of the largest stride) and
    returns what the head returns (see :mod:`.heads`).
    """

    def __init__(self, cfg: Mapping[str, Any], ch: int = 3) -> None:
        super().__init__()
        self.yaml = copy.deepcopy(dict(cfg))
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        self.model, self.save = parse_model(copy.deepcopy(self.yaml), ch=[ch])
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps, module.momentum = BN_EPS, BN_MOMENTUM
        head = self.head
        if not isinstance(head, HEADS):
            raise CheckpointError(f"the last layer is {type(head).__name__}, not a detection head; check the YAML")
        with torch.no_grad():
            self.train()
            outputs = self.forward(torch.zeros(1, ch, STRIDE_PROBE, STRIDE_PROBE))[: head.nl]
        head.stride = torch.tensor([STRIDE_PROBE / out.shape[-2] for out in outputs])
        head.anchors /= head.stride.view(-1, 1, 1)
        _check_anchor_order(head)
        self.eval()

    @property
    def head(self) -> Detect:
        """The detection head (the last layer)."""
        return self.model[-1]

    @property
    def stride(self) -> torch.Tensor:
        """Per-level strides, e.g. ``[8., 16., 32.]``."""
        return self.head.stride

    def forward(self, x: torch.Tensor) -> Any:
        outputs: list[torch.Tensor | None] = []
        for m in self.model:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x)
            outputs.append(x if m.i in self.save else None)
        return x

    def fuse(self) -> YOLOv7:
        """Fold every Conv+BN and re-parameterize every RepConv (upstream ``Model.fuse``, Detect head)."""
        for module in self.model.modules():
            if isinstance(module, RepConv):
                module.fuse_repvgg_block()
            elif isinstance(module, Conv):
                module.fuse()
        return self


def _check_anchor_order(head: Detect) -> None:
    """Upstream ``check_anchor_order``: reverse the anchors when their order disagrees with the strides."""
    area = head.anchor_grid.prod(-1).view(-1)
    if (area[-1] - area[0]).sign() != (head.stride[-1] - head.stride[0]).sign():
        head.anchors[:] = head.anchors.flip(0)
        head.anchor_grid[:] = head.anchor_grid.flip(0)
