"""ShuffleNetV2 backbone in upstream NanoDet's layout (``backbone.conv1``, ``backbone.stage2..4``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nanodet_infer.errors import InvalidArgumentError

from .layers import activation_layer

# model_size -> output channels of conv1, stage2, stage3, stage4, conv5
STAGE_CHANNELS: dict[str, tuple[int, int, int, int, int]] = {
    "0.5x": (24, 48, 96, 192, 1024),
    "1.0x": (24, 116, 232, 464, 1024),
    "1.5x": (24, 176, 352, 704, 1024),
    "2.0x": (24, 244, 488, 976, 2048),
}
STAGE_REPEATS = (4, 8, 4)
STAGE_STRIDES = {2: 8, 3: 16, 4: 32}


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


class ShuffleV2Block(nn.Module):
    """One ShuffleNetV2 unit: ``[B, inp, H, W] -> [B, oup, H/stride, W/stride]``."""

    def __init__(self, inp: int, oup: int, stride: int, activation: str = "ReLU") -> None:
        super().__init__()
        self.stride = stride
        half = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(inp, stride),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, half, 1, bias=False),
                nn.BatchNorm2d(half),
                activation_layer(activation),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            activation_layer(activation),
            _depthwise(half, stride),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            activation_layer(activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)
            right = self.branch2(right)
        else:
            left, right = self.branch1(x), self.branch2(x)
        # concat + channel shuffle with 2 groups == interleave the two halves channel by channel;
        # stack/flatten keeps H and W symbolic when traced.
        return torch.stack((left, right), dim=2).flatten(1, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2: ``[B, 3, H, W]`` -> one feature map per stage in ``out_stages``.

    Stage ``i`` (2, 3, 4) has stride ``2 ** (i + 1)`` (8, 16, 32) and ``STAGE_CHANNELS[model_size][i - 1]``
    channels. ``with_last_conv`` appends upstream's 1x1 ``conv5`` to stage 4.
    """

    def __init__(
        self,
        model_size: str = "1.5x",
        out_stages: Sequence[int] = (2, 3, 4),
        with_last_conv: bool = False,
        activation: str = "ReLU",
    ) -> None:
        super().__init__()
        if model_size not in STAGE_CHANNELS:
            raise InvalidArgumentError(
                f"ShuffleNetV2 model_size {model_size!r} is not one of {', '.join(STAGE_CHANNELS)}"
            )
        if not out_stages or not set(out_stages) <= set(STAGE_STRIDES):
            raise InvalidArgumentError(f"ShuffleNetV2 out_stages must be a subset of [2, 3, 4], got {out_stages!r}")
        self.out_stages = tuple(out_stages)
        channels = STAGE_CHANNELS[model_size]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(channels[0]),
            activation_layer(activation),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inp = channels[0]
        for stage, repeats, oup in zip((2, 3, 4), STAGE_REPEATS, channels[1:4], strict=True):
            blocks = [ShuffleV2Block(inp, oup, 2, activation)]
            blocks += [ShuffleV2Block(oup, oup, 1, activation) for _ in range(repeats - 1)]
            setattr(self, f"stage{stage}", nn.Sequential(*blocks))
            inp = oup
        if with_last_conv:
            self.stage4.add_module(
                "conv5",
                nn.Sequential(
                    nn.Conv2d(inp, channels[4], 1, bias=False),
                    nn.BatchNorm2d(channels[4]),
                    activation_layer(activation),
                ),
            )
        last = channels[4] if with_last_conv else channels[3]
        self.out_channels = tuple({2: channels[1], 3: channels[2], 4: last}[s] for s in self.out_stages)
        self.strides = tuple(STAGE_STRIDES[s] for s in self.out_stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.maxpool(self.conv1(x))
        outputs = []
        for stage in (2, 3, 4):
            x = getattr(self, f"stage{stage}")(x)
            if stage in self.out_stages:
                outputs.append(x)
        return tuple(outputs)
