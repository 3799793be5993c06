"""HTS-AT (Chen et al., ICASSP 2022): a Swin Transformer over a log-mel "image", the audio encoder of LAION-CLAP
and Microsoft CLAP 2023. Parameter names are the originals' (``RetroCirce/HTS-Audio-Transformer``, as vendored in
``LAION-AI/CLAP``'s ``clap_module/htsat.py``), so their state dicts load as they are.

The computation, at inference (eval mode, no fusion):

* ``bn0``: a BatchNorm over the mel bins of the log-mel ``[B, T, F]``;
* the "image": the ``T`` frames resized to ``spec_size * freq_ratio`` (1024) by bicubic interpolation with aligned
  corners (a 10 s clip at 48 kHz, hop 480, has 1001 frames), then cut into ``freq_ratio`` (4) consecutive time
  blocks of ``spec_size`` (256) frames stacked along frequency: a ``spec_size x spec_size`` image, frequency rows
  block by block;
* a ``patch_size`` convolution with ``patch_stride`` (4 x 4) and LayerNorm, four Swin stages (window attention in
  ``window_size`` (8) windows with a learned relative-position bias, every other block on windows shifted by half a
  window with the original's -100 mask across the roll's seams, patch merging between stages), a final LayerNorm;
* ``latent``: the mean of the last stage's tokens, ``[B, num_features]`` (the original's ``embedding``).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HTSAT"]


def _windows(x: torch.Tensor, w: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * nW, w * w, C], windows in row-major order."""
    B, H, W, C = x.shape
    x = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, C)


def _unwindows(x: torch.Tensor, w: int, H: int, W: int) -> torch.Tensor:
    C = x.shape[-1]
    B = x.shape[0] // ((H // w) * (W // w))
    x = x.view(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        ij = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (ij[:, :, None] - ij[:, None, :]) + (window - 1)             # [2, N, N], each in 0..2w-2
        self.register_buffer("relative_position_index", rel[0] * (2 * window - 1) + rel[1], persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask=None) -> torch.Tensor:
        Bw, N, C = x.shape
        q, k, v = self.qkv(x).reshape(Bw, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(N, N, -1).permute(2, 0, 1)[None]
        if mask is not None:
            nW = mask.shape[0]
            attn = (attn.view(Bw // nW, nW, self.heads, N, N) + mask[None, :, None]).view(Bw, self.heads, N, N)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(Bw, N, C))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, resolution: Tuple[int, int], heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:                      # the whole map is one window: no shift
            window, shift = min(resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp.fc2 = nn.Linear(int(dim * mlp_ratio), dim)
        mask = None
        if shift > 0:
            H, W = resolution
            region = torch.zeros((1, H, W, 1))
            cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
            for n, (h, w) in enumerate((h, w) for h in cuts for w in cuts):
                region[:, h, w, :] = n
            r = _windows(region, window)[..., 0]                            # [nW, w*w]
            mask = (r[:, None, :] != r[:, :, None]).float() * -100.0        # the original's -100, not -inf
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.resolution
        B, L, C = x.shape
        h = self.norm1(x).view(B, H, W, C)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        h = _unwindows(self.attn(_windows(h, self.window), self.attn_mask), self.window, H, W)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + h.reshape(B, L, C)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class PatchMerging(nn.Module):
    def __init__(self, resolution: Tuple[int, int], dim: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.resolution
        B, _, C = x.shape
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class Stage(nn.Module):
    def __init__(self, dim, resolution, depth, heads, window, mlp_ratio, merge: bool):
        super().__init__()
        self.blocks = nn.ModuleList([SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2,
                                               mlp_ratio) for i in range(depth)])
        self.downsample = PatchMerging(resolution, dim) if merge else None

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.downsample(x) if self.downsample is not None else x


class HTSAT(nn.Module):
    """HTS-AT's audio branch from the log-mel ``[B, T, n_mels]`` (dB, not normalised) to ``latent [B, D]``."""

    def __init__(self, n_mels: int = 64, spec_size: int = 256, patch_size: int = 4, patch_stride: int = 4,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (4, 8, 16, 32),
                 window_size: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.n_mels, self.spec_size = n_mels, spec_size
        self.freq_ratio = spec_size // n_mels
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, embed_dim, patch_size, patch_stride,
                                          padding=((patch_size - patch_stride) // 2,) * 2)
        self.patch_embed.norm = nn.LayerNorm(embed_dim)
        grid = spec_size // patch_stride
        self.layers = nn.ModuleList()
        for i, (d, h) in enumerate(zip(depths, num_heads)):
            r = grid // 2 ** i
            self.layers.append(Stage(embed_dim * 2 ** i, (r, r), d, h, window_size, mlp_ratio, i < len(depths) - 1))
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)

    @property
    def input_frames(self) -> int:
        return self.spec_size * self.freq_ratio

    def image(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, T, F] log-mel -> the ``[B, 1, spec_size, spec_size]`` image (after ``bn0``)."""
        x = self.bn0(mel.transpose(1, 2)[..., None]).squeeze(-1).transpose(1, 2)[:, None]   # [B, 1, T, F]
        T, Fq = x.shape[2], x.shape[3]
        if T > self.input_frames or Fq > self.spec_size // self.freq_ratio:
            raise ValueError(f"HTS-AT reads at most {self.input_frames} frames of {self.n_mels} mels, got {T} x {Fq}")
        if T < self.input_frames:
            x = F.interpolate(x, (self.input_frames, Fq), mode="bicubic", align_corners=True)
        x = x.transpose(2, 3)                                                   # [B, 1, F, T]
        B = x.shape[0]
        x = x.reshape(B, 1, Fq, self.freq_ratio, self.spec_size).permute(0, 1, 3, 2, 4)
        return x.reshape(B, 1, self.freq_ratio * Fq, self.spec_size)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(self.image(mel)).flatten(2).transpose(1, 2)
        x = self.patch_embed.norm(x)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x).mean(dim=1)      # the mean over all tokens: the original's avgpool of every position
