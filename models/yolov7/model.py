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
from collections.abc import Iterator, Mapping
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


MAX_MULTIPLE = 4.0
"""Largest ``width_multiple`` / ``depth_multiple`` a YAML may give (upstream's largest, YOLOv7-X, uses 1.25)."""
MAX_LAYERS = 1024
"""Most layers (backbone + head) of a YAML (YOLOv7-E6E has 266)."""
MAX_REPEATS = 64
"""Largest repeat count ``number`` of one layer, before ``depth_multiple``."""
MAX_CHANNELS = 16384
"""Largest channel count of one layer after ``width_multiple`` (upstream's largest: 1280)."""
MAX_ANCHOR_LEVELS = 16
MAX_PARAMETERS = 1 << 30
"""Most convolution weights a YAML may build (a lower bound is counted before each layer is built): 1G, 4 GiB as
float32, the exporter's memory budget (:data:`~nanodet_models.tensor_bounds.MAX_WEIGHT_BYTES`)."""


def check_model_dict(d: Any) -> None:
    """Raise :class:`CheckpointError` unless ``d`` is a YOLOv7 model dict within the documented bounds.

    ``nc`` an integer in ``1..MAX_NUM_CLASSES`` (the runtime's bound), the multiples numbers in
    ``(0, MAX_MULTIPLE]``, ``anchors`` a count or at most 16 lists of pixel pairs, ``backbone`` + ``head`` at most
    :data:`MAX_LAYERS` layers ``[from, number, module, args]`` whose ``from`` names earlier layers. Nothing is built.
    """
    from nanodet_infer.metadata import MAX_NUM_CLASSES

    def fail(where: str, problem: str) -> CheckpointError:
        return CheckpointError(f"the model YAML's {where} {problem}; pass a checkpoint or YAML made by YOLOv7")

    if not isinstance(d, Mapping):
        raise fail("root", f"is a {type(d).__name__}, not a mapping")
    nc = d.get("nc")
    if not _is_int(nc) or not 1 <= nc <= MAX_NUM_CLASSES:
        raise fail("nc", f"is {_shown(nc)}, not an integer in 1..{MAX_NUM_CLASSES}")
    for key in ("depth_multiple", "width_multiple"):
        value = d.get(key)
        if not (_is_int(value) or isinstance(value, float)) or not 0 < value <= MAX_MULTIPLE:
            raise fail(key, f"is {_shown(value)}, not a number in (0, {MAX_MULTIPLE:g}]")
    anchors = d.get("anchors")
    if _is_int(anchors):
        if not 1 <= anchors <= MAX_ANCHOR_LEVELS:
            raise fail("anchors", f"is {anchors}, not a count in 1..{MAX_ANCHOR_LEVELS}")
    elif not (
        isinstance(anchors, list)
        and 1 <= len(anchors) <= MAX_ANCHOR_LEVELS
        and all(isinstance(level, list) and 2 <= len(level) <= 2 * MAX_ANCHOR_LEVELS and len(level) % 2 == 0
                and all(isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1e5 for v in level)
                for level in anchors)
        and len({len(level) for level in anchors}) == 1
    ):
        raise fail("anchors", f"are {_shown(anchors)}, not lists of (width, height) pixel pairs, one list per level")
    layers = d.get("backbone"), d.get("head")
    if not all(isinstance(part, list) for part in layers):
        raise fail("backbone/head", "are not lists of layers")
    layers = layers[0] + layers[1]
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise fail("backbone + head", f"hold {len(layers)} layers, not 1..{MAX_LAYERS}")
    for i, layer in enumerate(layers):
        if not (isinstance(layer, list) and len(layer) == 4):
            raise fail(f"layer {i}", f"is {_shown(layer)}, not [from, number, module, args]")
        f, n, name, args = layer
        sources = f if isinstance(f, list) else [f]
        if not sources or not all(_is_int(x) and (x == -1 or -i <= x < i) for x in sources) or len(sources) > 16:
            raise fail(f"layer {i}", f"reads from {_shown(f)}, not earlier layers")
        if not _is_int(n) or not 1 <= n <= MAX_REPEATS:
            raise fail(f"layer {i}", f"repeats {_shown(n)} times, not 1..{MAX_REPEATS}")
        if not isinstance(name, str) or not isinstance(args, list) or len(args) > 16:
            raise fail(f"layer {i}", f"has module {_shown(name)} with arguments {_shown(args)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plan(d: Mapping[str, Any], ch: list[int]) -> Iterator[tuple[int, Any, int, type[nn.Module], list[Any], int]]:
    """Upstream ``parse_model``'s arithmetic without building anything: per layer ``(i, from, n, module class,
    constructor args, output channels)``. Raises :class:`CheckpointError` naming an unsupported module or a
    channel count above :data:`MAX_CHANNELS`."""
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    c2 = ch[-1]
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
            if not _is_int(c2):
                raise CheckpointError(f"layer {i}'s output channels are {_shown(c2)}, not an integer; check the YAML")
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
        if not 1 <= c2 <= MAX_CHANNELS:
            raise CheckpointError(f"layer {i} would have {c2} channels (limit {MAX_CHANNELS}); check width_multiple")
        yield i, f, n, m, args, c2
        if i == 0:
            ch = []
        ch.append(c2)


def _conv_weights(m: type[nn.Module], n: int, args: list[Any]) -> int:
    """A lower bound of the weights of ``n`` layers ``m(*args)``: the convolution kernels of Conv / RepConv."""
    if m not in (Conv, RepConv):
        return 0
    c1, c2 = args[0], args[1]
    k = args[2] if len(args) > 2 and _is_int(args[2]) else 1
    g = args[5] if len(args) > 5 and _is_int(args[5]) and args[5] > 0 else 1
    return n * c1 * c2 * k * k // g


def estimate_parameters(d: Mapping[str, Any], ch: int = 3) -> int:
    """A lower bound of the parameters :class:`YOLOv7` would build from ``d`` (its Conv / RepConv kernels), computed
    without building anything; ``d`` is first checked by :func:`check_model_dict`."""
    check_model_dict(d)
    return sum(_conv_weights(m, n, args) for _, _, n, m, args, _ in _plan(d, [ch]))


def parse_model(d: Mapping[str, Any], ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    """Upstream ``parse_model``: the layers of ``d`` (backbone + head) and the indices whose outputs
    later layers read. Raises :class:`CheckpointError` naming an unsupported module, or before building the layer
    that takes the model above :data:`MAX_PARAMETERS`."""
    layers, save, weights = [], [], 0
    for i, f, n, m, args, _ in _plan(d, ch):
        weights += _conv_weights(m, n, args)
        if weights > MAX_PARAMETERS:
            raise CheckpointError(
                f"the model YAML builds more than {MAX_PARAMETERS} weights by layer {i} (the exporter's memory budget, "
                f"{4 * MAX_PARAMETERS >> 30} GiB as float32); check width_multiple / depth_multiple"
            )
        module = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        module.i, module.f = i, f
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
    return nn.Sequential(*layers), sorted(save)


class YOLOv7(nn.Module):
    """Upstream ``models.yolo.Model``: ``self.model`` (the layers) and ``self.yaml`` (the config dict).

    ``forward(x)`` takes ``[B, 3, H, W]`` RGB in [0, 1] (H, W multiples of the largest stride) and
    returns what the head returns (see :mod:`.heads`).
    """

    def __init__(self, cfg: Mapping[str, Any], ch: int = 3) -> None:
        super().__init__()
        check_model_dict(cfg)
        self.yaml = copy.deepcopy(dict(cfg))
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if not _is_int(ch) or not 1 <= ch <= 16:
            raise CheckpointError(f"the model YAML's ch is {_shown(ch)}, not an input channel count in 1..16")
        try:
            self._build(ch)
        except CheckpointError:
            raise
        except (KeyError, TypeError, IndexError, ValueError, AttributeError, ZeroDivisionError, RuntimeError) as exc:
            reason = " ".join(str(exc).split())[:120]
            raise CheckpointError(
                f"the model YAML does not build ({type(exc).__name__}: {reason}); pass a checkpoint or YAML made by "
                "YOLOv7"
            ) from None
        self.eval()

    def _build(self, ch: int) -> None:
        """Upstream ``Model.__init__``: the layers, the strides measured on a zero input, the anchors in grid units."""
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
