"""EAT (Chen, Liang, Ma, Zheng, Chen, "EAT: Self-Supervised Pre-Training with Efficient Audio Transformer", IJCAI
2024; ``cwx-worst-one/EAT``, MIT) and SSLAM (Alex et al., ICLR 2025; ``ta012/SSLAM``, the same network, CC BY 4.0
weights): the pre-trained data2vec 2.0-style encoders, every block exposed, batch-invariant.

Front end: Kaldi fbank as the original's ``feature_extract.py`` calls it (``waveform - waveform.mean()``, then
``torchaudio.compliance.kaldi.fbank(htk_compat=True, sample_frequency=16000, use_energy=False,
window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)``: 25 ms frames, pre-emphasis 0.97, DC removal,
512-point FFT, 128 Kaldi mels from 20 Hz, snip edges; :class:`~audio_repr.frontends.KaldiFbank`, batched), normalised
``(x + 4.268) / (2 * 4.569)``. A clip's fbank is padded with zeros (before normalising) to a multiple of 16 frames,
as the original's README does (``target_length = ((n_frames + 15) // 16) * 16``).
Input at other rates is resampled with torchaudio's default (the card's ``sinc_hann``), as ``feature_extract.py``
does (``torchaudio.functional.resample``).

Network (:class:`EATNet`, fairseq's ``Data2VecMultiModel`` with the image modality as EAT configures it, or the Hub's
``EATModel``): 16 x 16 patches of the fbank image ``[time, mel]`` by a ``Conv2d`` (tokens in time order, the 8
frequency patches of each 160 ms step consecutive: token ``8 t + f``), the fixed 2-D sin-cos positional table
(stored in the checkpoints; 768 steps = 122.88 s) added, a ``[CLS]`` token (no position) put first, a LayerNorm over
all tokens (fairseq: ``context_encoder.norm``; the Hub: ``pre_norm``), then post-norm blocks (``layer_norm_first =
False``: ``x = norm1(x + attn(x))``, ``x = norm2(x + mlp(x))``; 768-d, 12 heads, MLP 3072, ``qkv`` with bias,
LayerNorm eps 1e-6; large: 1024-d, 24 blocks, 16 heads). No final norm: the last block's output is the original's
``extract_features`` output. Padding tokens past each row's patches are masked as keys (the original's
``padding_mask``), so a row's numbers are those of the row alone.

Layers: ``block1`` .. ``blockN``, each block's output. Per layer, frames: the patch tokens of each time step
averaged over the 8 frequency patches (one frame per 16 fbank frames, 160 ms; timestamp: the centre of the patch,
``12.5 + 10 * (16 i + 7.5)`` ms); clip: the layer's ``[CLS]`` token. The ``[CLS]`` token is the default clip
embedding because the original trains it as the utterance-level target (``cls_loss``) and its feature-extraction
guide recommends it ("utterance-level embeddings (CLS token) typically offer superior performance" for
classification). The frame mean is the layer ``blockN_mean``: the last block's frames, with their mean as the clip
vector (choose it with ``layers=["blockN_mean"]``). ``layers="fusion"`` is the EUSIPCO 2022 pair this package uses
for ViTs: an intermediate block and the last (``block7`` + ``block12``; large: ``block14`` + ``block24``).

Length. EAT was pre-trained on 10 s clips (1024 frames, 64 time patches); a clip up to 1024 frames runs whole (padded
to whole patches as the original). Longer audio is cut into windows of 1024 frames, each run alone (their own
positions from 0, as the original's fixed 10 s input), frames stitched in order; the clip ``[CLS]`` is the average of
the windows' weighted by the frames each holds (the frame mean of ``blockN_mean`` likewise). The original's feature
extractor instead truncates everything past ``target_length``.

Checkpoints (:func:`load_state`): fairseq's (``EAT-base_epoch30_pt.pt`` ...: ``{'cfg', 'model', 'optimizer_history',
'extra_state', 'last_optimizer_state', ...}``; the student encoder ``modality_encoders.IMAGE.*`` + ``blocks.*`` is
kept, the EMA teacher ``_ema``, the decoder and the training heads are dropped; ``cfg['model']``, when present, must
describe this network: post-norm, one extra token, no prenet blocks, no ALiBi), the Hub's ``model.safetensors`` of
``worstchan/EAT-*`` / ``ta012/SSLAM_*`` (``model.local_encoder``, ``model.extra_tokens``,
``model.fixed_positional_encoder.positions``, ``model.pre_norm``, ``model.blocks``), with fine-tuned heads
(``fc_norm``, ``head``) dropped. Read without fairseq or transformers.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..frontends import KaldiFbank
from ..layers.vit import Attention, Mlp, PatchEmbed
from ..registry import ModelCard, Normalisation, register
from ..weights import WeightsError, load_checkpoint, unwrap_state_dict
from . import register_family
from .base import Backbone, Family, LayerOutputs, Tiling, length_mask

__all__ = ["EATNet", "PostNormBlock", "sincos_table", "convert_checkpoint", "load_state", "FBANK_MEAN", "FBANK_STD"]

FBANK_MEAN, FBANK_STD = -4.268, 4.569


def sincos_table(dim: int, steps: int, width: int) -> torch.Tensor:
    """data2vec 2.0's flexible 2-D sin-cos table ``[steps * width, dim]`` (row ``t * width + f``): the first half of
    the channels encode the frequency index ``f``, the second half the time index ``t``, each ``[sin, cos]`` of
    ``pos / 10000 ** (k / (dim / 4))`` (float32 throughout, as the original's numpy)."""
    if dim % 4:
        raise ValueError(f"the sin-cos table needs an embedding size divisible by 4, got {dim}")
    grid_w, grid_h = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(steps, dtype=np.float32))

    def one(pos):
        omega = np.arange(dim // 4, dtype=np.float32) / np.float32(dim / 4.0)
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return torch.from_numpy(np.concatenate([one(grid_w), one(grid_h)], axis=1).astype(np.float32))


class PostNormBlock(nn.Module):
    """data2vec 2.0's ``AltBlock`` with ``layer_norm_first=False``: ``x = norm1(x + attn(x))``, then
    ``x = norm2(x + mlp(x))``."""

    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, bias="qkv")
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.mlp(x))


class EATNet(Backbone):
    """The EAT / SSLAM encoder on normalised fbank ``[B, n_mels, T]`` (see the module doc). Parameter names:
    ``patch_embed.proj``, ``pos_embed`` (the fixed table, loaded), ``cls_token``, ``pre_norm``,
    ``blocks.N.{norm1,attn.{qkv,proj},norm2,mlp.{fc1,fc2}}``."""

    clip_pooling = "token"          # the [CLS] token (blockN_mean: the frame mean), windows weighted by their frames
    use_cls_token = True

    def __init__(self, n_mels: int = 128, patch: int = 16, window_patches: int = 64, max_positions: int = 768,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        if n_mels % patch:
            raise ValueError(f"{n_mels} mel bins are not a whole number of {patch}-bin patches")
        if not 1 <= window_patches <= max_positions:
            raise ValueError(f"window_patches must be in 1..{max_positions}, got {window_patches}")
        self.n_mels, self.patch, self.freq_patches = int(n_mels), int(patch), int(n_mels) // int(patch)
        self.window_patches, self.embed_dim = int(window_patches), embed_dim
        self.grid = (self.freq_patches, self.window_patches)       # (frequency, time) patches of a window
        self.patch_embed = PatchEmbed(embed_dim, self.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, max_positions * self.freq_patches, embed_dim), requires_grad=False)
        with torch.no_grad():                         # (a no-op on the meta device: shapes only)
            self.pos_embed.copy_(sincos_table(embed_dim, max_positions, self.freq_patches)[None])
        self.pre_norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.blocks = nn.ModuleList([PostNormBlock(embed_dim, num_heads, int(embed_dim * mlp_ratio), norm_eps)
                                     for _ in range(depth)])
        nn.init.normal_(self.cls_token, std=0.02)
        names = [f"block{i + 1}" for i in range(depth)] + [f"block{depth}_mean"]
        self.layer_dims: Dict[str, int] = OrderedDict((n, embed_dim) for n in names)
        self.layer_strides: Dict[str, int] = OrderedDict((n, self.patch) for n in names)
        self.min_frames = 1
        # the pre-training length (10 s), each window alone; a window's partial last patch is completed with
        # fbank value 0 before normalising, as the original pads
        self.tiling = Tiling(chunk_frames=self.window_patches * self.patch, pad_value=0.0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A checkpoint's positional table of another length (its ``max_length``) is taken row for row: the table's
        row ``8 t + f`` depends on ``(t, f)`` only, so its first rows are this network's; rows it lacks past the
        first window come from the same formula."""
        key = prefix + "pos_embed"
        t = state_dict.get(key)
        ours = self.pos_embed
        if (torch.is_tensor(t) and t.ndim == 3 and t.shape[0] == 1 and t.shape[2] == ours.shape[2]
                and t.shape[1] != ours.shape[1] and t.shape[1] % self.freq_patches == 0 and ours.device.type != "meta"):
            if t.shape[1] < self.window_patches * self.freq_patches:
                raise WeightsError(f"the checkpoint's positional table has {t.shape[1] // self.freq_patches} time "
                                   f"steps, fewer than a {self.window_patches}-patch window")
            n = min(t.shape[1], ours.shape[1])
            full = ours.detach().clone()
            full[:, :n] = t[:, :n].to(full.dtype)
            state_dict[key] = full
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- geometry ----------------------------------------------------------------------------------
    def out_frames(self, n: int, layer: Optional[str] = None) -> int:
        """One frame per (zero-completed) patch: ``ceil(n / 16)``."""
        return -(-n // self.patch)

    def in_frames(self, n: int) -> int:
        """Frames read for ``n`` real ones: up to a whole patch (the padding: fbank value 0)."""
        return -(-n // self.patch) * self.patch

    # ---- the network ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> LayerOutputs:
        """``x [B, n_mels, T]`` (normalised fbank, each row completed to whole patches by the encoder) and the rows'
        frame counts -> every layer: frames ``[B, ceil(T_max / 16), D]`` and ``clip`` ``[B, D]``; steps past a
        row's own ``ceil(length / 16)`` are not meaningful."""
        if x.ndim != 3 or x.shape[1] != self.n_mels:
            raise ValueError(f"expected normalised fbank [B, {self.n_mels}, T], got shape {tuple(x.shape)}")
        B, _, T = x.shape
        p, Fp = self.patch, self.freq_patches
        lens = lengths.to(x.device).long().clamp(max=T) if lengths is not None else torch.full((B,), T,
                                                                                              device=x.device)
        patches = torch.div(lens + p - 1, p, rounding_mode="floor").clamp(min=1)
        P = int(patches.max())
        if P > self.pos_embed.shape[1] // Fp:
            raise ValueError(f"{P} time patches exceed the positional table ({self.pos_embed.shape[1] // Fp}); the "
                             f"encoder cuts long audio into windows of {self.window_patches * p} frames")
        if T < P * p:                                 # bare use: zeros (the encoder completes rows by its rule)
            x = F.pad(x, (0, P * p - T))
        img = x[:, :, : P * p].transpose(1, 2)[:, None].to(self.pos_embed.dtype)     # [B, 1, time, mel]
        h = self.patch_embed(img) + self.pos_embed[:, : P * Fp]                       # token 8 t + f
        h = torch.cat([self.cls_token.expand(B, -1, -1).to(h.dtype), h], dim=1)
        h = self.pre_norm(h)
        mask = None
        if int(patches.min()) < P:
            keep = length_mask(patches, P)
            keep = keep[:, :, None].expand(B, P, Fp).reshape(B, P * Fp)
            mask = torch.cat([keep.new_ones(B, 1), keep], dim=1)[:, None, None, :]
        outs = LayerOutputs()
        outs.clip = OrderedDict()
        for i, blk in enumerate(self.blocks):
            h = blk(h, mask)
            name = f"block{i + 1}"
            outs[name] = h[:, 1:].reshape(B, P, Fp, -1).mean(dim=2)
            outs.clip[name] = h[:, 0]
        last = f"block{len(self.blocks)}"
        fr = outs[last]
        valid = length_mask(patches, P).to(fr.dtype)
        outs[last + "_mean"] = fr
        outs.clip[last + "_mean"] = (fr * valid[:, :, None]).sum(dim=1) / patches[:, None].to(fr.dtype)
        return outs


# ---- checkpoints ---------------------------------------------------------------------------------------------
_FAIRSEQ = {
    "modality_encoders.IMAGE.local_encoder.proj.weight": "patch_embed.proj.weight",
    "modality_encoders.IMAGE.local_encoder.proj.bias": "patch_embed.proj.bias",
    "modality_encoders.IMAGE.extra_tokens": "cls_token",
    "modality_encoders.IMAGE.fixed_positional_encoder.positions": "pos_embed",
    "modality_encoders.IMAGE.context_encoder.norm.weight": "pre_norm.weight",
    "modality_encoders.IMAGE.context_encoder.norm.bias": "pre_norm.bias",
}
_HUB = {
    "local_encoder.proj.weight": "patch_embed.proj.weight", "local_encoder.proj.bias": "patch_embed.proj.bias",
    "extra_tokens": "cls_token", "fixed_positional_encoder.positions": "pos_embed",
    "pre_norm.weight": "pre_norm.weight", "pre_norm.bias": "pre_norm.bias",
}
_BLOCK = re.compile(r"^blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")


def _check_cfg(cfg: Any) -> None:
    """``cfg['model']`` of a fairseq checkpoint (plain dicts, as fairseq saves it) must describe this network."""
    if not isinstance(cfg, Mapping) or not isinstance(cfg.get("model"), Mapping):
        return
    m = cfg["model"]
    image = ((m.get("modalities") or {}).get("image") or {}) if isinstance(m.get("modalities"), Mapping) else {}
    problems = []
    if m.get("layer_norm_first"):
        problems.append("layer_norm_first=True (EAT's blocks are post-norm)")
    if int(image.get("num_extra_tokens", 1)) != 1:
        problems.append(f"num_extra_tokens={image.get('num_extra_tokens')} (EAT has one [CLS] token)")
    if int(image.get("prenet_depth", 0)) != 0:
        problems.append(f"prenet_depth={image.get('prenet_depth')} (EAT has no prenet blocks)")
    if image.get("use_alibi_encoder"):
        problems.append("use_alibi_encoder=True (EAT uses no ALiBi)")
    if int(image.get("in_chans", 1)) != 1:
        problems.append(f"in_chans={image.get('in_chans')} (an image model, not EAT's spectrogram)")
    if problems:
        raise WeightsError("the checkpoint's cfg describes another data2vec 2.0 network: " + "; ".join(problems))


def _network_tensors(state: Mapping) -> Dict[str, torch.Tensor]:
    """The network's tensors of a state dict (the Hub's ``model.`` prefix stripped)."""
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    if not any(k.startswith(("blocks.", "model.blocks.")) for k in tensors):
        raise WeightsError("not an EAT checkpoint: no blocks.* tensors")
    if any(k.startswith("model.") for k in tensors) and not any(k.startswith("blocks.") for k in tensors):
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    return tensors


def _renamed(tensors: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """fairseq's and the Hub's names -> ours (the blocks keep theirs; everything else is dropped)."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        if k in _FAIRSEQ:
            out[_FAIRSEQ[k]] = v
        elif k in _HUB:
            out[_HUB[k]] = v
        elif _BLOCK.match(k):
            out[k] = v
    return out


def convert_checkpoint(obj: Any) -> Dict[str, torch.Tensor]:
    """An EAT / SSLAM checkpoint (fairseq's ``{'cfg', 'model', ...}`` or the Hub's state dict) -> :class:`EATNet`'s
    state dict."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"expected an EAT checkpoint dict, got {type(obj).__name__}")
    if "model" in obj and isinstance(obj.get("model"), Mapping):
        _check_cfg(obj.get("cfg"))
    out = _renamed(_network_tensors(unwrap_state_dict(obj, ("model",))))
    missing = [n for n in ("patch_embed.proj.weight", "cls_token", "pos_embed", "pre_norm.weight") if n not in out]
    if missing:
        raise WeightsError(f"not an EAT checkpoint: no {', '.join(missing)} (expected fairseq's "
                           "modality_encoders.IMAGE.* or the Hub's model.local_encoder/extra_tokens/pre_norm)")
    if out["cls_token"].shape[1] != 1:
        raise WeightsError(f"EAT has one extra ([CLS]) token; this checkpoint has {out['cls_token'].shape[1]}")
    return out


def load_state(path) -> Dict[str, torch.Tensor]:
    """An EAT / SSLAM checkpoint file (fairseq ``.pt``, the Hub's ``.safetensors`` or ``.bin``) -> :class:`EATNet`'s
    state dict; the training objects a fairseq file pickles beside the tensors are read as inert placeholders."""
    return convert_checkpoint(load_checkpoint(path, inert_others=True))


register_family(Family("eat", build_frontend=KaldiFbank, build_network=EATNet, load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
FRONTEND = dict(sample_rate=16000, frame_length_ms=25.0, frame_shift_ms=10.0, n_mels=128, low_freq=20.0,
                high_freq=0.0, preemphasis=0.97, remove_dc_offset=True, window="hanning", round_to_power_of_two=True,
                subtract_clip_mean=True)
_BASE = dict(n_mels=128, patch=16, window_patches=64, max_positions=768, embed_dim=768, depth=12, num_heads=12,
             mlp_ratio=4.0)
_LARGE = dict(_BASE, embed_dim=1024, depth=24, num_heads=16)
_EAT_LICENCE = "MIT (https://github.com/cwx-worst-one/EAT/blob/main/LICENSE; code and released checkpoints)"
_EAT_CITE = ("W. Chen, Y. Liang, Z. Ma, Z. Zheng, X. Chen, \"EAT: Self-Supervised Pre-Training with Efficient Audio "
             "Transformer\", IJCAI 2024, pp. 3807-3815.")
_SSLAM_LICENCE = ("CC BY 4.0 (checkpoints, as the ta012/SSLAM README states; code MIT: "
                  "https://github.com/ta012/SSLAM/blob/main/LICENSE)")
_SSLAM_CITE = ("T. Alex, S. Ahmed, A. Mustafa, M. Awais, P. J. B. Jackson, \"SSLAM: Enhancing Self-Supervised Models "
               "with Audio Mixtures for Polyphonic Soundscapes\", ICLR 2025.")

for _name, _file, _what, _arch, _lic, _cite, _paper, _scores in [
    ("eat-base", "worstchan--EAT-base_epoch30_pretrain.safetensors", "EAT-base (epoch 30, self-supervised on "
     "AudioSet-2M)", _BASE, _EAT_LICENCE, _EAT_CITE, "https://arxiv.org/abs/2401.03497",
     {"AudioSet mAP (fine-tuned)": 48.9, "AS-20K mAP (fine-tuned)": 41.3}),
    ("eat-large", "worstchan--EAT-large_epoch20_pretrain.safetensors", "EAT-large (epoch 20, self-supervised on "
     "AudioSet-2M)", _LARGE, _EAT_LICENCE, _EAT_CITE, "https://arxiv.org/abs/2401.03497",
     {"AudioSet mAP (fine-tuned)": 49.5, "AS-20K mAP (fine-tuned)": 42.0}),
    ("sslam-base", "ta012--SSLAM_pretrain.safetensors", "SSLAM (EAT-base network, self-supervised on AudioSet-2M "
     "with audio mixtures)", _BASE, _SSLAM_LICENCE, _SSLAM_CITE, "https://openreview.net/forum?id=odU59TxdiB",
     {"AudioSet mAP (fine-tuned)": 50.2}),
]:
    _d = _arch["depth"]
    register(ModelCard(
        name=_name, family="eat",
        description=(f"{_what}; 128 Kaldi mels, 16x16 patches, {_arch['embed_dim']}-d frames every 160 ms, "
                     "clip: the [CLS] token"),
        sample_rate=16000, frontend=FRONTEND, arch=dict(_arch),
        normalisation=Normalisation(FBANK_MEAN, FBANK_STD, scale=2.0),    # (x + 4.268) / (2 * 4.569)
        weights=_file, default_layer=f"block{_d}",
        fusion_layers=(f"block{(_d * 7 + 11) // 12}", f"block{_d}"),
        licence=_lic, citation=_cite, paper=_paper, published=_scores,
        cpu_batch_frames=16384,          # on a CPU 16 ~1000-frame windows per batch, more of shorter clips (issue 29)
    ))
