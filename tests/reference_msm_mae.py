"""A straightforward re-statement of the original MSM-MAE model (encoder + decoder, with the module
layout of the official code so that ``state_dict()`` has the official checkpoint keys) and of its
runtime's ``encode_lms``: used to write checkpoints in the official layout and to compute reference
outputs one clip and one unit at a time, in plain Python loops with explicit attention."""

import argparse
import math

import numpy as np
import torch
from torch import nn


def mae_sincos(dim, n_freq, n_time, cls_token):
    """MAE's fixed 2-D sin-cos table for a (freq x time) grid, patches frequency-major."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows = []
    for f in range(n_freq):
        for t in range(n_time):
            rows.append(np.concatenate([np.sin(t * omega), np.cos(t * omega), np.sin(f * omega), np.cos(f * omega)]))
    table = np.stack(rows)
    if cls_token:
        table = np.concatenate([np.zeros((1, dim)), table])
    return torch.tensor(table, dtype=torch.float32)[None]


class Attn(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, length, dim = x.shape
        hd = dim // self.heads
        q = x @ self.qkv.weight[:dim].T + self.q_bias
        k = x @ self.qkv.weight[dim:2 * dim].T                  # the key has no bias
        v = x @ self.qkv.weight[2 * dim:].T + self.v_bias
        q, k, v = (t.reshape(n, length, self.heads, hd).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class Blk(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = Attn(dim, heads), Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, 16, stride=16)


class OriginalMSMMAE(nn.Module):
    """MSM-MAE ViT (+ the MAE decoder, unused for encoding) on [1, 80, unit] inputs."""

    def __init__(self, unit=208, dim=768, depth=12, heads=12, dec_dim=384, dec_depth=4, dec_heads=6, cls=True):
        super().__init__()
        self.unit, self.dim, self.use_cls = unit, dim, cls
        self.grid = (5, unit // 16)
        n = self.grid[0] * self.grid[1] + int(cls)
        self.patch_embed = PatchEmbed(dim)
        if cls:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(mae_sincos(dim, *self.grid, cls), requires_grad=False)
        self.blocks = nn.ModuleList([Blk(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # decoder (present in the checkpoints, not used to encode)
        self.decoder_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n, dec_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Blk(dec_dim, dec_heads) for _ in range(dec_depth)])
        self.decoder_norm = nn.LayerNorm(dec_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dec_dim, 16 * 16)

    def encoder_layers(self, x):
        """x [B, 1, 80, unit] -> list of every block's tokens, the last one after the final norm,
        and the raw last block, as (layers, raw_last)."""
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        if self.use_cls:
            t = t + self.pos_embed[:, 1:]
            t = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(t.shape[0], -1, -1), t], dim=1)
        else:
            t = t + self.pos_embed
        layers = []
        for blk in self.blocks:
            t = blk(t)
            layers.append(t)
        raw_last = layers[-1]
        layers[-1] = self.norm(t)
        return layers, raw_last


def encode_lms(model, lms):
    """The original runtime's ``encode_lms`` on one normalised clip lms [80, T], all layers:
    returns (list of [T', 3840] for block1..11 + output, raw block12 [T', 3840])."""
    unit = model.unit
    T = lms.shape[-1]
    pad = unit - (T % unit)                       # a whole extra unit when T is a multiple (as the original)
    x = torch.nn.functional.pad(lms, (0, pad))[None, None]
    per_unit = []
    for i in range(x.shape[-1] // unit):
        layers, raw = model.encoder_layers(x[..., i * unit:(i + 1) * unit])
        outs = []
        for t in layers + [raw]:
            if model.use_cls:
                t = t[:, 1:]
            f, w = model.grid
            t = t.reshape(1, f, w, -1).permute(0, 2, 1, 3).reshape(1, w, -1)      # 'b (f t) d -> b t (f d)'
            outs.append(t[0])
        per_unit.append(outs)
    cat = [torch.cat([u[j] for u in per_unit], dim=0) for j in range(len(per_unit[0]))]
    drop = int(model.grid[1] * pad / unit)
    if drop > 0:
        cat = [c[:-drop] for c in cat]
    return cat[:-1], cat[-1]


def random_model(seed=0, **kwargs):
    """An OriginalMSMMAE whose weight matrices have PyTorch's (seeded) random default initialisation
    and whose LayerNorm scales and shifts, biases (q_bias, v_bias included) and tokens are random too."""
    torch.manual_seed(seed)
    net = OriginalMSMMAE(**kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("pos_embed") or (p.ndim >= 2 and "token" not in name):
                continue
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net.eval()


def official_checkpoint(net, epoch=100, unit=208):
    """The layout misc.save_model writes: model (encoder + decoder), optimizer, epoch, scaler, args."""
    from conftest import adamw_state, grad_scaler_state

    state = net.state_dict()
    args = argparse.Namespace(input_size=f"80x{unit}", model="mae_vit_base_patch16x16", epochs=epoch,
                              batch_size=512, accum_iter=1, mask_ratio=0.75, norm_pix_loss=False, no_cls_token=False,
                              weight_decay=0.05, lr=None, blr=1.5e-4, min_lr=0.0, warmup_epochs=40,
                              data_path="data", output_dir=f"80x{unit}p16x16_test", log_dir=None, device="cuda",
                              seed=0, resume="", start_epoch=0, num_workers=10, pin_mem=True, world_size=4,
                              local_rank=-1, dist_on_itp=False, dist_url="env://", distributed=True, rank=0, gpu=0,
                              dist_backend="nccl")
    return {"model": state, "optimizer": adamw_state(len(state), lr=1.5e-4), "epoch": epoch,
            "scaler": grad_scaler_state(), "args": args}
