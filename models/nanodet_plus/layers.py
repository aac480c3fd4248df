"""Building blocks shared by the backbones, the neck and the heads (upstream ``nanodet/model/module``).

Attribute names (``conv``, ``bn``/``gn``, ``depthwise``, ``dwnorm``, ``pointwise``, ``pwnorm``, ``scale``,
``project``) are part of the checkpoint layout: they match upstream so its state dicts load strictly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nanodet_infer.errors import InvalidArgumentError

# Upstream's ``act_layers`` (nanodet/model/module/activation.py, latest): name -> constructor, with
# upstream's arguments. ``HardSwish`` and ``Hardswish`` are both upstream names for ``nn.Hardswish``.
# PReLU is the only one with a parameter (``weight``, one slope, init 0.25): it appears in state dicts.
# Upstream passes ``inplace=True`` where the class takes it; that has no numerical effect and is left out.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "ReLU": nn.ReLU,
    "LeakyReLU": lambda: nn.LeakyReLU(negative_slope=0.1),
    "ReLU6": nn.ReLU6,
    "SELU": nn.SELU,
    "ELU": nn.ELU,
    "GELU": nn.GELU,
    "PReLU": nn.PReLU,
    "SiLU": nn.SiLU,
    "HardSwish": nn.Hardswish,
    "Hardswish": nn.Hardswish,
}


def check_activation(name: object) -> None:
    """Raise :class:`InvalidArgumentError` unless ``name`` is None or one of :data:`ACTIVATIONS`."""
    if name is not None and (not isinstance(name, str) or name not in ACTIVATIONS):
        raise InvalidArgumentError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")


def activation_layer(name: str | None) -> nn.Module:
    """The activation ``name`` (upstream ``act_layers``); None is the identity."""
    check_activation(name)
    return nn.Identity() if name is None else ACTIVATIONS[name]()


def norm_layer(norm_cfg: Mapping[str, Any], num_features: int) -> tuple[str, nn.Module]:
    """``(attribute name, layer)`` for an upstream ``norm_cfg`` (``BN`` -> ``bn``, ``GN`` -> ``gn``)."""
    options = dict(norm_cfg)
    kind = options.pop("type", None)
    options.pop("requires_grad", None)
    eps = options.pop("eps", 1e-5)
    if kind in ("BN", "SyncBN"):
        return "bn", nn.BatchNorm2d(num_features, eps=eps, **options)
    if kind == "GN":
        if "num_groups" not in options:
            raise InvalidArgumentError("norm_cfg type GN needs num_groups; add num_groups to the config")
        return "gn", nn.GroupNorm(num_channels=num_features, eps=eps, **options)
    raise InvalidArgumentError(f"unsupported norm_cfg type {kind!r}; use BN or GN")


class ConvModule(nn.Module):
    """Conv2d -> optional norm -> optional activation; ``[B, Cin, H, W] -> [B, Cout, H', W']``.

    The convolution has a bias only when there is no norm layer (upstream ``bias='auto'``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        norm_cfg: Mapping[str, Any] | None = None,
        activation: str | None = "ReLU",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=norm_cfg is None
        )
        self.norm_name: str | None = None
        if norm_cfg is not None:
            self.norm_name, norm = norm_layer(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)
        self.act = activation_layer(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        return self.act(x)


class DepthwiseConvModule(nn.Module):
    """Depthwise kxk conv -> norm -> act -> pointwise 1x1 conv -> norm -> act (upstream layout).

    ``[B, Cin, H, W] -> [B, Cout, H', W']``; biases only when ``norm_cfg`` is None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        norm_cfg: Mapping[str, Any] | None = None,
        activation: str | None = "ReLU",
    ) -> None:
        super().__init__()
        bias = norm_cfg is None
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride=stride, padding=padding, groups=in_channels, bias=bias
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.dwnorm = norm_layer(norm_cfg, in_channels)[1] if norm_cfg is not None else nn.Identity()
        self.pwnorm = norm_layer(norm_cfg, out_channels)[1] if norm_cfg is not None else nn.Identity()
        self.act = activation_layer(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))


class Scale(nn.Module):
    """A learnable scalar multiplier (parameter ``scale``, shape ``[]``)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Integral(nn.Module):
    """Expected value of the per-side box distribution (upstream ``Integral``, buffer ``project``).

    ``[..., 4 * (reg_max + 1)]`` logits -> ``[..., 4]`` distances in stride units.
    """

    def __init__(self, reg_max: int) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        x = F.softmax(x.reshape(*shape, 4, self.reg_max + 1), dim=-1)
        return x @ self.project.type_as(x)
