"""DETR's transformer and sine positional encoding, as ``models/transformer.py`` / ``position_encoding.py``.

Sequences are ``[S, B, D]`` (``batch_first=False``), flattened row-major from ``[B, D, h, w]``
(index ``i * w + j``). Keys: ``encoder.layers.N.{self_attn,linear1,linear2,norm1,norm2}``,
``encoder.norm`` (pre-norm only), ``decoder.layers.N.{self_attn,multihead_attn,linear1,linear2,norm1..3}``,
``decoder.norm``. Dropout is omitted (eval only). ``key_padding_mask`` is True on padded keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sine_position_encoding(not_mask: torch.Tensor, num_pos_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """``PositionEmbeddingSine(normalize=True, scale=2*pi)`` of a valid-pixel map ``not_mask [B, h, w]`` (float).

    Returns ``[B, 2 * num_pos_feats, h, w]``: the y half first, channels interleaving sin/cos.
    """
    eps, scale = 1e-6, 2 * math.pi
    y_embed = not_mask.cumsum(1, dtype=torch.float32)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=not_mask.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class EncoderLayer(nn.Module):
    """``TransformerEncoderLayer``: post-norm (``pre_norm=False``) or pre-norm."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.pre_norm = pre_norm

    def forward(self, src: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        if self.pre_norm:
            src2 = self.norm1(src)
            q = k = src2 + pos
            src = src + self.self_attn(q, k, src2, key_padding_mask=key_padding_mask)[0]
            return src + self.linear2(F.relu(self.linear1(self.norm2(src))))
        q = k = src + pos
        src = self.norm1(src + self.self_attn(q, k, src, key_padding_mask=key_padding_mask)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DecoderLayer(nn.Module):
    """``TransformerDecoderLayer``: self-attention over the queries, cross-attention to the memory, FFN."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.pre_norm = pre_norm

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.pre_norm:
            tgt2 = self.norm1(tgt)
            q = k = tgt2 + query_pos
            tgt = tgt + self.self_attn(q, k, tgt2)[0]
            tgt2 = self.norm2(tgt)
            tgt = (
                tgt + self.multihead_attn(tgt2 + query_pos, memory + pos, memory, key_padding_mask=key_padding_mask)[0]
            )
            return tgt + self.linear2(F.relu(self.linear1(self.norm3(tgt))))
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, k, tgt)[0])
        attended = self.multihead_attn(tgt + query_pos, memory + pos, memory, key_padding_mask=key_padding_mask)[0]
        tgt = self.norm2(tgt + attended)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class Encoder(nn.Module):
    """``TransformerEncoder``: the layers, then ``norm`` (present only with ``pre_norm``)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, num_layers: int, pre_norm: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, nhead, dim_feedforward, pre_norm) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model) if pre_norm else None

    def forward(self, src: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos, key_padding_mask)
        return src if self.norm is None else self.norm(src)


class Decoder(nn.Module):
    """``TransformerDecoder(return_intermediate=True)``; :meth:`forward` returns every layer through ``norm``."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, num_layers: int, pre_norm: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, nhead, dim_feedforward, pre_norm) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        memory: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        last_only: bool,
    ) -> list[torch.Tensor]:
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for index, layer in enumerate(self.layers):
            tgt = layer(tgt, memory, pos, query_pos, key_padding_mask)
            if not last_only or index == len(self.layers) - 1:
                outputs.append(self.norm(tgt))
        return outputs


class Transformer(nn.Module):
    """``Transformer``: ``src [B, D, h, w]``, ``pos`` alike, ``query_embed [Q, D]`` → per layer ``[B, Q, D]``."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        dim_feedforward: int,
        pre_norm: bool,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(d_model, nhead, dim_feedforward, num_encoder_layers, pre_norm)
        self.decoder = Decoder(d_model, nhead, dim_feedforward, num_decoder_layers, pre_norm)

    def forward(
        self,
        src: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        query_embed: torch.Tensor,
        pos: torch.Tensor,
        last_only: bool = True,
    ) -> list[torch.Tensor]:
        batch = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)
        pos = pos.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).repeat(1, batch, 1)
        memory = self.encoder(src, pos, key_padding_mask)
        return [h.transpose(0, 1) for h in self.decoder(memory, pos, query_pos, key_padding_mask, last_only)]
