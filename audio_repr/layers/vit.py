"""Vision Transformer (ViT) building blocks, shared by the package's two ViT families: MSM-MAE
(:mod:`audio_repr.models.msm_mae`) and AST (:mod:`audio_repr.models.ast`). Each family keeps its own
stack (tokens, positional embedding, which layers are exposed); the pieces here are the same for both.

* :class:`PatchEmbed`: spectrogram patches by a strided ``Conv2d`` (``proj``), kernel = patch size,
  stride = patch size (MSM-MAE, non-overlapping) or a smaller stride (AST, overlapping patches);
* :class:`Attention`: multi-head self-attention, one ``qkv`` projection, ``proj`` output projection,
  ``scaled_dot_product_attention`` (scale ``head_dim ** -0.5``) with an optional key padding mask.
  Two bias layouts: ``bias="qkv"``, a bias on the ``qkv`` projection (AST, DeiT), or ``bias="qv"``,
  no bias on ``qkv`` but separate ``q_bias`` and ``v_bias`` parameters and a zero key bias (MSM-MAE,
  BEiT style);
* :class:`Mlp`: ``fc1``, exact (erf) GELU, ``fc2``;
* :class:`Block`: the pre-norm transformer block ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``,
  with the LayerNorm eps given (1e-6 in both families).

Submodule and parameter names are those of the two families' official checkpoints (``proj``,
``qkv``, ``q_bias``, ``v_bias``, ``fc1``, ``fc2``, ``norm1``, ``attn``, ``norm2``, ``mlp``), so a
stack built from these blocks has the state-dict keys the checkpoints use.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchEmbed", "Attention", "Mlp", "Block"]


def _pair(v: Union[int, Sequence[int]]) -> tuple:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class PatchEmbed(nn.Module):
    """Patches of a one-channel image ``[N, 1, F, T]`` by a ``Conv2d`` (``proj``) with kernel
    ``patch_size`` and stride ``stride`` (default: the patch size, i.e. non-overlapping patches).

    ``forward`` gives the tokens ``[N, F' * T', D]``, frequency-major (row by row of the
    ``[F', T']`` patch grid); ``proj`` alone gives the grid ``[N, D, F', T']``."""

    def __init__(self, embed_dim: int, patch_size: Union[int, Sequence[int]],
                 stride: Optional[Union[int, Sequence[int]]] = None, in_chans: int = 1):
        super().__init__()
        kernel = _pair(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel,
                              stride=kernel if stride is None else _pair(stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention over ``[N, L, D]`` tokens.

    ``bias="qkv"``: ``qkv`` is a ``Linear(D, 3 D)`` with bias. ``bias="qv"``: ``qkv`` has no bias;
    the query and value biases are the parameters ``q_bias`` and ``v_bias`` and the key bias is zero
    (the projection is computed with the concatenated bias ``[q_bias, 0, v_bias]``).

    ``forward(x, mask)``: ``mask`` is passed to ``scaled_dot_product_attention`` as ``attn_mask``: a
    key padding mask as a boolean ``[N, 1, 1, L]`` (``True``: the key is attended to), or ``None``.
    """

    def __init__(self, dim: int, num_heads: int, bias: str = "qkv"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding size {dim} is not divisible by {num_heads} heads")
        if bias not in ("qkv", "qv"):
            raise ValueError(f"bias must be 'qkv' or 'qv', got {bias!r}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias == "qkv")
        if bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        N, L, D = x.shape
        if self.q_bias is None:
            qkv = self.qkv(x)
        else:
            qkv = F.linear(x, self.qkv.weight, torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias]))
        q, k, v = qkv.view(N, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(N, L, D))


class Mlp(nn.Module):
    """The transformer's feed-forward part: ``fc2(gelu(fc1(x)))``, exact (erf) GELU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x), mask)``, then ``x + mlp(norm2(x))``; both
    LayerNorms with ``eps``, an MLP of ``hidden`` units, attention with the ``bias`` layout of
    :class:`Attention`."""

    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float, bias: str = "qkv"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))
