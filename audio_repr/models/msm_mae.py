"""MSM-MAE encoder (Niizumi et al., "Masked Spectrogram Modeling using Masked Autoencoders for
Learning General-purpose Audio Representation", HEAR 2021 / PMLR 166) with every block exposed.

The network is the MAE encoder of the official ``nttcslab/msm-mae`` code run without masking:
a ViT (Base: 768-d, 12 blocks, 12 heads, MLP 3072, pre-norm, LayerNorm eps 1e-6) over 16x16
patches of an 80-mel log spectrogram cut into fixed units of ``unit_frames`` frames (208 or 512),
a fixed 2-D sin-cos positional embedding (stored in the checkpoints), an optional ``[CLS]``
token, and BEiT-style attention (the qkv projection has no bias tensor; ``q_bias`` and ``v_bias``
are separate parameters and the key bias is zero). Patch embedding and blocks are the shared ones of
:mod:`audio_repr.layers.vit` (``bias="qv"``).

Input: normalised log-mel ``[B, n_mels, T]``. ``T`` is padded on the right with zeros to a whole
number of units (as the original ``encode_lms`` does) and all units of all rows are encoded as
one batch. Output per layer ``[B, n_units * unit_frames / 16, 5 * 768]``: the ``[CLS]`` token is
dropped and the five frequency patches of each 16-frame time step are concatenated
(frequency-major, ``(f d)``), which is the original's 3840-d frame feature every 160 ms.
Steps past ``ceil(T_clip / 16)`` of a clip belong to padding; the encoder trims them.

Layers: ``block1`` .. ``block12`` (the residual stream after each block) and ``output`` (the last
block followed by the encoder's final LayerNorm: the standard output). The original's
``encode_lms(..., return_layers=True)`` list corresponds to ``block1`` .. ``block11``, ``output``
(index 11 is the normalised last block). ``layers="fusion"`` is ``block7`` + ``output`` (7680-d),
the original runtime's suggested ``fusion_layers = [6, 11]``.

Pieces (see the cards): the encoder cuts each clip's spectrogram into whole units (context 0), the
last one zero-padded after normalisation, and keeps ``ceil(n / 16)`` steps of a piece of ``n`` real
frames, which is exactly what the original keeps after trimming its padding. Each step's timestamp
is the centre of its 16 frames (``75 + 160 i`` ms), so the last, partial step of a clip can lie up
to 75 ms past its end.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers.vit import Block, PatchEmbed
from ..frontends import LogMelSpectrogram
from ..registry import ModelCard, Normalisation, register
from ..weights import load_checkpoint, unwrap_state_dict
from . import register_family
from .base import Backbone, Family, Tiling

__all__ = ["MSMMAEEncoder", "convert_state_dict", "load_state",
           "sincos_pos_embed_2d"]


def sincos_pos_embed_2d(dim: int, grid: Tuple[int, int], cls_token: bool) -> torch.Tensor:
    """Fixed 2-D sin-cos positional embedding of MAE for a ``(freq, time)`` patch grid,
    ``[(1 if cls_token) + F*T, dim]``, patches frequency-major; a zero row for the ``[CLS]`` position.

    The first half of the channels encodes the time (column) index, the second half the
    frequency (row) index; each half is ``[sin(pos * w), cos(pos * w)]`` with
    ``w_i = 10000^(-i / (dim / 4))``. Computed in float64 and rounded once to float32.
    """
    if dim % 4:
        raise ValueError(f"embedding size {dim} must be a multiple of 4 for the 2-D sin-cos embedding")
    gf, gt = grid
    rows, cols = np.meshgrid(np.arange(gf, dtype=np.float32), np.arange(gt, dtype=np.float32), indexing="ij")

    def one_axis(pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
        out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_axis(cols), one_axis(rows)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return torch.from_numpy(emb).float()


class MSMMAEEncoder(Backbone):
    """The MSM-MAE ViT encoder on fixed units of ``unit_frames`` spectrogram frames.

    Parameter names follow the official checkpoints (``patch_embed.proj``, ``pos_embed``,
    ``cls_token``, ``blocks.N.{norm1,attn.{qkv,q_bias,v_bias,proj},norm2,mlp.{fc1,fc2}}``, ``norm``).
    """

    def __init__(self, n_mels: int = 80, unit_frames: int = 208, patch_size: Sequence[int] = (16, 16),
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 use_cls_token: bool = True, norm_eps: float = 1e-6):
        super().__init__()
        pf, pt = int(patch_size[0]), int(patch_size[1])
        if n_mels % pf or unit_frames % pt:
            raise ValueError(f"input {n_mels}x{unit_frames} is not a whole number of {pf}x{pt} patches")
        self.n_mels, self.unit_frames, self.patch_size = n_mels, unit_frames, (pf, pt)
        self.grid = (n_mels // pf, unit_frames // pt)          # (frequency, time) patches per unit
        self.embed_dim, self.use_cls_token = embed_dim, use_cls_token
        self.patch_embed = PatchEmbed(embed_dim, self.patch_size)
        n_tok = self.grid[0] * self.grid[1] + (1 if use_cls_token else 0)
        # fixed (not trained) sin-cos embedding; the checkpoints store it, so it is loaded with them
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(embed_dim, self.grid, use_cls_token)[None],
                                      requires_grad=False)
        if use_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, int(embed_dim * mlp_ratio), norm_eps, bias="qv")
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        assert self.pos_embed.shape[1] == n_tok
        d = self.grid[0] * embed_dim
        names = [f"block{i + 1}" for i in range(depth)] + ["output"]
        self.layer_dims: Dict[str, int] = OrderedDict((n, d) for n in names)
        self.layer_strides: Dict[str, int] = OrderedDict((n, pt) for n in names)
        self.min_frames = 1
        # independent units, as the original encode_lms: whole units, the last one zero-padded after normalisation
        self.tiling = Tiling(chunk_frames=unit_frames, min_piece_frames=unit_frames)

    clip_pooling = "mean"                                  # the original's clip embedding: the time mean

    def out_frames(self, n: int, layer: Optional[str] = None) -> int:
        """Time steps of a piece of ``n`` real frames: the last partial patch is kept (as the original)."""
        return -(-n // self.patch_size[1])

    def units(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, F, T]`` -> ``[B * n_units, 1, F, unit_frames]``, zero-padding ``T`` to whole units."""
        B, Fq, T = x.shape
        if Fq != self.n_mels:
            raise ValueError(f"expected {self.n_mels} mel bins, got {Fq}")
        n = max(1, -(-T // self.unit_frames))
        x = F.pad(x, (0, n * self.unit_frames - T))
        return x.view(B, Fq, n, self.unit_frames).permute(0, 2, 1, 3).reshape(B * n, 1, Fq, self.unit_frames)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> "OrderedDict[str, torch.Tensor]":
        """``x [B, n_mels, T]`` (normalised, zeros past each clip) -> ``{layer: [B, T_out, 5 * D]}``.

        ``lengths`` is not needed: every unit is encoded on its own, and padding is zeros as in the original."""
        if x.ndim == 4:
            x = x[:, 0]
        B = x.shape[0]
        u = self.units(x)
        h = self.patch_embed(u)
        pos = self.pos_embed.to(h.dtype)
        if self.use_cls_token:
            h = h + pos[:, 1:]
            cls = (self.cls_token + pos[:, :1]).expand(h.shape[0], -1, -1)
            h = torch.cat([cls, h], dim=1)
        else:
            h = h + pos
        skip = 1 if self.use_cls_token else 0
        gf, gt = self.grid
        D = self.embed_dim

        def frames(t: torch.Tensor) -> torch.Tensor:   # [B*n, (cls) + gf*gt, D] -> [B, n*gt, gf*D]
            t = t[:, skip:].reshape(t.shape[0], gf, gt, D).permute(0, 2, 1, 3).reshape(t.shape[0], gt, gf * D)
            return t.reshape(B, -1, gf * D)

        outs: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            outs[f"block{i + 1}"] = frames(h)
        outs["output"] = frames(self.norm(h))
        return outs


# ---- checkpoints ------------------------------------------------------------------------------
_ENCODER_KEY = re.compile(r"^(patch_embed\.|pos_embed$|cls_token$|blocks\.\d+\.|norm\.)")


def convert_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """Official MSM-MAE checkpoint -> encoder state dict.

    Accepts the training checkpoint (``{'model': state, 'optimizer': ..., 'epoch': ..., 'args': ...}``),
    a bare state dict, or one wrapped in ``state_dict`` and/or prefixed by ``module.`` (DDP). The
    decoder's ``mask_token`` and ``decoder_*`` tensors are dropped.
    """
    obj = unwrap_state_dict(obj, ("model", "state_dict"))
    out: Dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            continue
        name = k[len("module."):] if k.startswith("module.") else k
        if _ENCODER_KEY.match(name):
            out[name] = v
    return out


def _safe_torch_load(path: Path):
    """The training checkpoint without running pickled code; its pickled ``args`` & co. are read as inert
    placeholders (see :func:`audio_repr.weights.load_checkpoint`)."""
    return load_checkpoint(path, inert_others=True)


def _epoch(p: Path) -> int:
    m = re.search(r"(\d+)", p.stem)
    return int(m.group(1)) if m else -1


def load_state(path: Union[str, Path], convert: Callable[[Mapping], Dict[str, torch.Tensor]] = convert_state_dict
                 ) -> Dict[str, torch.Tensor]:
    """Read the encoder's weights from an official release: the ``.pth`` checkpoint itself, the
    release folder holding ``checkpoint-*.pth``, or the release ``.zip`` of that folder (the
    newest epoch is used when there are several). ``convert`` turns the checkpoint into the state
    dict (M2D, whose releases have the same layouts, passes its own)."""
    from ..weights import WeightsError

    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob("*.pth"), key=lambda p: (_epoch(p), str(p)))
        if not found:
            raise WeightsError(f"{path}: no checkpoint-*.pth found in this folder")
        return convert(_safe_torch_load(found[-1]))
    members = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            members = [n for n in z.namelist() if n.endswith(".pth") and not n.startswith("__MACOSX")]
            if members:   # a release archive (a torch checkpoint is a zip too, but holds no .pth member)
                member = max(members, key=lambda n: (_epoch(Path(n)), n))
                with tempfile.TemporaryDirectory() as tmp:
                    extracted = Path(z.extract(member, tmp))
                    return convert(_safe_torch_load(extracted))
    return convert(_safe_torch_load(path))


register_family(Family("msm_mae", build_frontend=LogMelSpectrogram, build_network=MSMMAEEncoder,
                       load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
# the same NTT evaluation agreement as BYOL-A's: internal testing and evaluation, no distribution
_MSM_LICENCE = ("NTT Software License Agreement for Evaluation (internal testing, analysing and evaluating of "
                "the paper's methods only; no redistribution); "
                "https://github.com/nttcslab/msm-mae/blob/main/LICENSE")
_MSM_CITE = ("D. Niizumi, D. Takeuchi, Y. Ohishi, N. Harada, K. Kashino, \"Masked Spectrogram Modeling using "
             "Masked Autoencoders for Learning General-purpose Audio Representation\", HEAR: Holistic Evaluation "
             "of Audio Representations (NeurIPS 2021 Competition), PMLR 166:1-24, 2022.")
#: the 16 kHz 80-mel front end (nnAudio's parameters) of MSM-MAE, shared by M2D
FRONTEND = dict(sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80, f_min=50.0,
                f_max=8000.0, mel_scale="slaney")
_MSM_TASKS = ("ESC-50", "US8K", "SPCV2", "VC1", "VoxForge", "CREMA-D", "GTZAN", "NSynth", "Surge")

for _name, _unit, _release, _scores in [
    ("msm-mae-80x208", 208, "80x208p16x16_0422", (87.1, 82.2, 91.1, 49.7, 95.6, 66.9, 75.9, 76.5, 37.8)),
    ("msm-mae-80x512", 512, "80x512p16x16_0425", (88.9, 84.0, 92.4, 56.5, 96.8, 67.6, 81.4, 76.1, 37.4)),
    ("msm-mae-80x512-paper", 512, "80x512p16x16_paper", (89.1, 84.3, 93.1, 56.1, 97.5, 70.1, 79.3, 76.9, 37.5)),
]:
    register(ModelCard(
        name=_name, family="msm_mae",
        description=(f"MSM-MAE ViT-Base ({_release}), 80 Slaney mels in {_unit}-frame units, 16x16 patches, "
                     "3840-d frames every 160 ms"),
        sample_rate=16000, frontend=FRONTEND,
        arch=dict(n_mels=80, unit_frames=_unit, patch_size=(16, 16), embed_dim=768, depth=12, num_heads=12,
                  mlp_ratio=4.0, use_cls_token=True),
        # Per-clip statistics, what the original runtime computes on a batch of one; the fixed ones (the README's
        # example numbers) are used only once set_norm_stats()/calibrate() fix them.
        normalisation=Normalisation(-5.4919195, 5.0389895, per_clip=True),
        weights=f"{_release}.zip",
        default_layer="output",
        # the original runtime's suggested fusion_layers [6, 11]: the 7th block and the normalised last block
        fusion_layers=("block7", "output"),
        licence=_MSM_LICENCE, citation=_MSM_CITE, paper="https://proceedings.mlr.press/v166/niizumi22a.html",
        published=dict(zip(_MSM_TASKS, _scores)),
        cpu_batch_frames=16 * _unit,     # 16 units per batch on a CPU (a 10-s clip's 5 units together; issue 29)
    ))
