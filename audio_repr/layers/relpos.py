"""Gated relative-position self-attention and the fairseq-style encoder layer around it, shared by the two
families whose transformers come from UniSpeech / WavLM: BEATs (:mod:`audio_repr.models.beats`) and WavLM.

* :func:`relative_position_bucket`: T5's bucketing of a signed distance ``key - query`` (bidirectional: half
  the buckets for each sign; distances below ``num_buckets // 4`` exact, larger ones on a log scale up to
  ``max_distance``, farther ones in the last bucket);
* :class:`GatedRelPosAttention`: multi-head self-attention (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``,
  scale ``head_dim ** -0.5``) whose scores get a per-head relative-position bias, looked up in the embedding
  ``relative_attention_bias`` (``[num_buckets, heads]``, held by the first layer only: the layers after it reuse
  the bias it returns) and, with ``gru_rel_pos``, scaled per query and head by a gate:
  ``g = sigmoid(sum over 4 of grep_linear(u) viewed [..., 2, 4])``, ``gate = g_a (g_b grep_a - 1) + 2`` with
  ``u`` the per-head slice of the layer's input (``gate_source="input"``, WavLM) or of the unscaled query
  projection (``gate_source="query"``, BEATs);
* :class:`RelPosEncoderLayer`: fairseq's ``TransformerSentenceEncoderLayer``: post-norm (``x = LN(alpha x +
  attn(x))``, ``x = LN(alpha x + ffn(x))``; DeepNet's deep norm sets ``alpha = (2 N) ** 0.25`` for ``N`` layers,
  :func:`deep_norm_alpha`; ``alpha = 1`` is the plain post-norm of WavLM Base) or pre-norm
  (``layer_norm_first``: ``x + attn(LN(x))``, ``x + ffn(LN(x))``, WavLM Large), ``fc1``/``fc2`` with exact GELU.

Parameter names are the original checkpoints' (``self_attn.{q,k,v,out}_proj``, ``self_attn.relative_attention_bias``,
``self_attn.grep_linear``, ``self_attn.grep_a``, ``self_attn_layer_norm``, ``fc1``, ``fc2``, ``final_layer_norm``),
so a stack of these layers under ``encoder.layers`` has the state-dict keys unilm's BEATs and WavLM save (they also
store layer 0's bias embedding under every layer: a converter keeps layer 0's).

Padding: ``key_padding_mask`` ``[B, L]`` is ``True`` at padding tokens (fairseq's convention); padded keys get no
attention weight, so a row's outputs at its real tokens do not depend on the padding. Outputs at padded query
positions are finite but not meaningful.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["relative_position_bucket", "deep_norm_alpha", "GatedRelPosAttention", "RelPosEncoderLayer"]


def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int, max_distance: int,
                             bidirectional: bool = True) -> torch.Tensor:
    """T5 buckets of signed distances ``key - query`` (a LongTensor of any shape) -> LongTensor of bucket ids.

    Bidirectional: buckets ``0 .. n/2 - 1`` for distances ``<= 0``, ``n/2 .. n - 1`` for ``> 0`` (``n =
    num_buckets``). In each half, ``|d| < n/4`` has its own bucket; larger ``|d|`` gets
    ``n/4 + floor(log(|d| / (n/4)) / log(max_distance / (n/4)) * (n/2 - n/4))``, at most ``n/2 - 1``.
    Unidirectional: only ``d <= 0`` is distinguished (``d > 0`` shares bucket 0), on all ``n`` buckets."""
    n = num_buckets
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        n //= 2
        buckets = buckets + (relative_position > 0).long() * n
        dist = relative_position.abs()
    else:
        dist = (-relative_position).clamp(min=0)
    exact = n // 2
    small = dist < exact
    # float32 log as the originals compute it (the bucket edges depend on its rounding); distance 0 is "small"
    far = exact + (torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                   * (n - exact)).long()
    far = far.clamp(max=n - 1)
    return buckets + torch.where(small, dist, far)


def deep_norm_alpha(num_layers: int) -> float:
    """DeepNet's residual scale for an encoder of ``num_layers`` post-norm layers: ``(2 N) ** 0.25``."""
    return math.pow(2 * num_layers, 0.25)


class GatedRelPosAttention(nn.Module):
    """Multi-head self-attention with a (gated) bucketed relative-position bias (see the module doc).

    ``forward(x [B, L, D], key_padding_mask [B, L] (True: padding) or None, position_bias [H, L, L] or None)``
    -> ``(y [B, L, D], position_bias [H, L, L])``: the ungated bias this layer used (computed here from
    ``relative_attention_bias`` when not given), for the next layer to reuse."""

    def __init__(self, dim: int, num_heads: int, *, has_relative_attention_bias: bool = False,
                 num_buckets: int = 320, max_distance: int = 800, gru_rel_pos: bool = False,
                 gate_source: str = "query", bias: bool = True, k_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding size {dim} is not divisible by {num_heads} heads")
        if gate_source not in ("query", "input"):
            raise ValueError(f"gate_source must be 'query' (BEATs) or 'input' (WavLM), got {gate_source!r}")
        self.embed_dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.num_buckets, self.max_distance = int(num_buckets), int(max_distance)
        self.gru_rel_pos, self.gate_source = bool(gru_rel_pos), gate_source
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=k_bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(self.num_buckets, num_heads)
        else:
            self.relative_attention_bias = None
        if self.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    @property
    def has_relative_attention_bias(self) -> bool:
        return self.relative_attention_bias is not None

    def compute_bias(self, query_length: int, key_length: int) -> torch.Tensor:
        """The ungated bias ``[H, query_length, key_length]`` of this layer's embedding."""
        if self.relative_attention_bias is None:
            raise ValueError("this attention layer holds no relative-position embedding: pass position_bias")
        dev = self.relative_attention_bias.weight.device
        rel = torch.arange(key_length, device=dev)[None, :] - torch.arange(query_length, device=dev)[:, None]
        buckets = relative_position_bucket(rel, self.num_buckets, self.max_distance, bidirectional=True)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, L, _ = t.shape
        return t.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)        # [B, H, L, hd]

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None,
                position_bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        B, L, D = x.shape
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        if position_bias is None and self.relative_attention_bias is not None:
            position_bias = self.compute_bias(L, L)
        mask = None
        if position_bias is not None:
            bias = position_bias.to(q.dtype)
            bias = bias[None] if bias.ndim == 3 else bias                         # [1 or B, H, L, L]
            if self.gru_rel_pos:
                u = q if self.gate_source == "query" else self._heads(x)
                g = torch.sigmoid(self.grep_linear(u).view(B, self.num_heads, L, 2, 4).sum(-1))
                gate_a, gate_b = g.chunk(2, dim=-1)                               # [B, H, L, 1] each
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
            mask = bias
        if key_padding_mask is not None and bool(key_padding_mask.any()):
            pad = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
            pad = pad.masked_fill(key_padding_mask.to(torch.bool), float("-inf"))[:, None, None, :]
            mask = pad if mask is None else mask + pad
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)             # scale head_dim ** -0.5
        return self.out_proj(y.transpose(1, 2).reshape(B, L, D)), position_bias


class RelPosEncoderLayer(nn.Module):
    """fairseq's ``TransformerSentenceEncoderLayer`` with :class:`GatedRelPosAttention` (see the module doc).

    ``forward(x [B, L, D], key_padding_mask, position_bias)`` -> ``(x, position_bias)``."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, *, layer_norm_first: bool = False,
                 deep_norm_alpha: float = 1.0, activation: str = "gelu", eps: float = 1e-5,
                 has_relative_attention_bias: bool = False, num_buckets: int = 320, max_distance: int = 800,
                 gru_rel_pos: bool = False, gate_source: str = "query"):
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {activation!r}")
        if layer_norm_first and deep_norm_alpha != 1.0:
            raise ValueError("deep norm scales the residual of a post-norm layer; layer_norm_first has none")
        self.layer_norm_first, self.alpha = bool(layer_norm_first), float(deep_norm_alpha)
        self.activation = activation
        self.self_attn = GatedRelPosAttention(dim, num_heads, has_relative_attention_bias=has_relative_attention_bias,
                                              num_buckets=num_buckets, max_distance=max_distance,
                                              gru_rel_pos=gru_rel_pos, gate_source=gate_source)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = F.gelu(h.float()).to(h.dtype) if self.activation == "gelu" else F.relu(h)
        return self.fc2(h)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None,
                position_bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.layer_norm_first:
            a, position_bias = self.self_attn(self.self_attn_layer_norm(x), key_padding_mask, position_bias)
            x = x + a
            return x + self._ffn(self.final_layer_norm(x)), position_bias
        a, position_bias = self.self_attn(x, key_padding_mask, position_bias)
        x = self.self_attn_layer_norm(x * self.alpha + a)
        return self.final_layer_norm(x * self.alpha + self._ffn(x)), position_bias
