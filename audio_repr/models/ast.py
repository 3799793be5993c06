"""Audio Spectrogram Transformer (Gong et al., Interspeech 2021) with every block exposed.

Network: a DeiT-style ViT (``dim=768``, 12 blocks, 12 heads, MLP 3072, LayerNorm eps 1e-6 as
timm's DeiT) on the normalised Kaldi fbank ``[B, 128 mel, T]``: 16 x 16 patches with stride
``(fstride, tstride)`` (10 x 10 for the main AudioSet model: a 12 x 101 grid for 1024 frames),
cls + distillation tokens, a learned positional embedding, 12 pre-norm blocks with
``scaled_dot_product_attention``, a final LayerNorm. Patch embedding and blocks are the shared ones of
:mod:`audio_repr.layers.vit` (``qkv`` with a bias).

Layers: ``block1`` .. ``block12``, each the block's output passed through the final LayerNorm
(``block12`` is the model's own output, transformers' ``last_hidden_state``). Per layer:

* frames: the patch tokens averaged over the frequency patches of each time step, one frame
  every ``tstride`` fbank frames (100 ms for 10 x 10); a frame's timestamp is the centre of its
  16-frame patch: ``12.5 + 10 * (tstride * i + 7.5)`` ms from the clip's start;
* clip: ``(cls + dist) / 2`` (transformers' ``pooler_output`` for ``block12``), delivered to the
  encoder as ``outputs.clip[layer]`` (the card's ``clip_pooling="token"``).

``layers="fusion"`` is the EUSIPCO 2022 recipe: ``block5`` and ``block12`` (1-based), each through
the final norm, concatenated (1536-d frames and clip). The raw token sequences (transformers'
``hidden_states``: the embeddings, then each block's output before the final norm) are available
from :meth:`ASTNet.hidden_states`.

Input length (``W`` = the model's window, 1024 frames = 10.24 s for the AudioSet models, 128 for
speech commands; ``t0`` = time patches of a window, ``hop = t0 * tstride`` frames, 1010 for 10 x 10):

* ``short="pad"`` (default, cards ``ast-*``): a clip of ``T <= W`` frames is padded with fbank value
  0 (before normalisation) to ``W`` frames, exactly as the original inference and transformers'
  ``ASTFeatureExtractor`` do, so the outputs equal theirs;
* ``short="crop"`` (card ``ast-audioset-crop``): a window of ``n`` frames gets ``t = ceil(n / tstride)``
  time patches (the last one completed with fbank value 0) and the centre ``t`` columns of the
  positional grid (``pos[..., t0 // 2 - t // 2 :][:t]``), as the original recipes for shorter inputs
  (ESC-50, EVAR) do. Faster for short clips; different numbers from the 1024-frame model;
* longer audio is never squeezed or interpolated: it is cut into windows of ``W`` frames that
  start every ``hop`` frames (consecutive windows overlap by ``W - hop`` frames, 14 for 10 x 10, so
  every patch lies inside one window and the patch grid continues without gap or repeat). Frames
  are stitched (window ``k`` gives the patches starting at ``k * hop + tstride * i``); the clip
  vector is the average of the windows' ``(cls + dist) / 2`` weighted by the frames each window
  owns (``hop``; the last window: the rest). The last window is padded (or cropped) as above.

A clip of ``T`` frames gives ``ceil(T / tstride)`` frames (at most ``t0`` per window): one for every
patch that starts inside the clip (``T = 1024``: 101 frames, as transformers).

Checkpoints: the original repository's (``module.v.*`` keys, e.g. ``audioset_10_10_0.4593.pth``,
``speechcommands_10_10_0.9812.pth``), transformers' ``ASTModel`` / ``ASTForAudioClassification``
state dicts (saved or in memory, either naming), or a folder saved by ``save_pretrained``. The
classification heads are dropped. transformers' port sets the LayerNorm eps to 1e-12 where the
original (timm's DeiT) has 1e-6; we keep the original's. The two differ by about ``eps / (2 var)`` of
a token's features: negligible at a trained model's activation scale (tested to 1e-4 end to end).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.vit import Block, PatchEmbed
from ..frontends import KaldiFbank
from ..registry import ModelCard, Normalisation, register
from ..weights import unwrap_state_dict
from . import register_family
from .base import Backbone, Family, LayerOutputs, Tiling, length_mask

__all__ = ["ASTNet", "ASTOutputs", "convert_state_dict", "load_state"]


class ASTOutputs(LayerOutputs):
    """``layer -> frames [B, T_out, D]``, plus ``clip``: ``layer -> [B, D]`` ((cls + dist) / 2)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip: "OrderedDict[str, torch.Tensor]" = OrderedDict()


class _Window:
    """One window of one row: feature frames ``start .. start + length`` of row ``row``, ``patches``
    time patches kept, ``own`` frames it owns (the weight of its clip vector)."""

    __slots__ = ("row", "start", "length", "patches", "own")

    def __init__(self, row: int, start: int, length: int, patches: int, own: int):
        self.row, self.start, self.length, self.patches, self.own = row, start, length, patches, own


class ASTNet(Backbone):
    """The AST encoder. ``forward(x [B, n_mels, T], lengths)`` -> :class:`ASTOutputs` (see module doc)."""

    def __init__(self, n_mels: int = 128, max_frames: int = 1024, patch: int = 16, fstride: int = 10,
                 tstride: int = 10, dim: int = 768, depth: int = 12, heads: int = 12, mlp_dim: int = 3072,
                 eps: float = 1e-6, short: str = "pad"):
        super().__init__()
        if short not in ("pad", "crop"):
            raise ValueError(f"short must be 'pad' or 'crop', got {short!r}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.n_mels, self.window, self.patch = n_mels, max_frames, patch
        self.fstride, self.tstride, self.short = fstride, tstride, short
        self.f_patches = (n_mels - patch) // fstride + 1
        self.t_patches = (max_frames - patch) // tstride + 1
        self.hop = self.t_patches * tstride
        self.patch_embed = PatchEmbed(dim, patch, stride=(fstride, tstride))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.f_patches * self.t_patches + 2, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_dim, eps) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=eps)
        names = [f"block{i + 1}" for i in range(depth)]
        self.layer_dims: Dict[str, int] = OrderedDict((n, dim) for n in names)
        self.layer_strides: Dict[str, int] = OrderedDict((n, tstride) for n in names)
        self._windows: Dict[str, int] = OrderedDict((n, patch) for n in names)
        self.min_frames = 1
        # windows of max_frames frames every hop frames (each also reads the frames up to its full length);
        # frames past a clip's end are a fbank value of 0 before normalising, as the originals pad
        self.tiling = Tiling(chunk_frames=self.hop, overlap_frames=max_frames - self.hop, pad_value=0.0,
                             min_piece_frames=max_frames if short == "pad" else 0)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.dist_token, std=0.02)

    clip_pooling = "token"        # (cls + dist) / 2 of each window, averaged over the frames each window owns

    # ---- geometry ----------------------------------------------------------------------------
    @property
    def layer_windows(self) -> Dict[str, int]:
        return dict(self._windows)

    def n_windows(self, n: int) -> int:
        """Windows for a clip of ``n`` feature frames."""
        return 1 if n <= self.window else 1 + -(-(n - self.window) // self.hop)

    def _last_patches(self, n: int) -> Tuple[int, int]:
        """(start, patches) of the last window of a clip of ``n`` frames."""
        start = self.hop * (self.n_windows(n) - 1)
        return start, max(1, min(self.t_patches, -(-(n - start) // self.tstride)))

    def out_frames(self, n: int, layer: Optional[str] = None) -> int:
        """Output frames for ``n`` feature frames: ``ceil(n / tstride)``, at most ``t0`` per window."""
        return self.t_patches * (self.n_windows(n) - 1) + self._last_patches(n)[1]

    def in_frames(self, n: int) -> int:
        """Feature frames the network reads for a clip of ``n`` frames (the rest is padding)."""
        start, t = self._last_patches(n)
        last = self.window if self.short == "pad" else self.tstride * (t - 1) + self.patch
        full = self.hop * (self.n_windows(n) - 2) + self.window if self.n_windows(n) > 1 else 0
        return max(start + last, full)

    def _plan(self, lengths: List[int]) -> List[_Window]:
        wins = []
        for b, n in enumerate(lengths):
            n = max(int(n), 1)
            K = self.n_windows(n)
            for k in range(K):
                start = k * self.hop
                if k < K - 1:
                    wins.append(_Window(b, start, self.window, self.t_patches, self.hop))
                else:
                    t = self._last_patches(n)[1]
                    length = self.window if self.short == "pad" else self.tstride * (t - 1) + self.patch
                    wins.append(_Window(b, start, length, t, n - start))
        return wins

    # ---- the transformer ----------------------------------------------------------------------
    def _tokens(self, x: torch.Tensor,
                patches: Optional[List[int]] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Embedded tokens [N, 2 + F' T', D] of windows x [N, n_mels, L] and the attention mask (or None)."""
        p = self.patch_embed.proj(x[:, None].to(self.pos_embed.dtype))        # [N, D, F', T']
        N, D, Fp, Tp = p.shape
        pos = self.pos_embed[:, 2:]
        mask = None
        if self.short == "pad" or patches is None:
            if Tp != self.t_patches:
                raise ValueError(f"{self.window} frames per window expected, got {x.shape[-1]} "
                                 f"({Tp} time patches instead of {self.t_patches})")
            tok = p.flatten(2).transpose(1, 2) + pos
        else:   # crop: each window its own centre columns of the positional grid
            t = torch.tensor(patches, device=x.device)
            grid = pos.reshape(self.f_patches, self.t_patches, D)
            idx = (self.t_patches // 2 - t // 2)[:, None] + torch.arange(Tp, device=x.device)[None]
            pw = grid[:, idx.clamp(0, self.t_patches - 1)].permute(1, 0, 2, 3)   # [N, F', T', D]
            tok = (p.permute(0, 2, 3, 1) + pw).reshape(N, Fp * Tp, D)
            if min(patches) < Tp:
                keep = length_mask(t, Tp)[:, None, :].expand(N, Fp, Tp)
                keep = torch.cat([keep.new_ones(N, 2), keep.reshape(N, Fp * Tp)], dim=1)
                mask = keep[:, None, None, :]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(N, -1, -1)
        dist = (self.dist_token + self.pos_embed[:, 1:2]).expand(N, -1, -1)
        return torch.cat([cls, dist, tok], dim=1), mask

    def _states(self, x: torch.Tensor, patches: Optional[List[int]] = None) -> Iterator[torch.Tensor]:
        h, mask = self._tokens(x, patches)
        yield h
        for blk in self.blocks:
            h = blk(h, mask)
            yield h

    def hidden_states(self, x: torch.Tensor, patches: Optional[List[int]] = None) -> List[torch.Tensor]:
        """Token sequences of windows ``x [N, n_mels, L]``: the embeddings, then each block's output
        (before the final norm), as transformers' ``output_hidden_states`` ([N, 2 + F' T', D] each)."""
        return list(self._states(x, patches))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> ASTOutputs:
        if x.ndim != 3:
            raise ValueError(f"expected normalised fbank [B, {self.n_mels}, T], got shape {tuple(x.shape)}")
        B, _, T = x.shape
        lens = [int(v) for v in lengths.tolist()] if lengths is not None else [T] * B
        wins = self._plan(lens)
        xs = self._window_inputs(x, wins)
        patches = [w.patches for w in wins]
        states = self._states(xs, patches if self.short == "crop" else None)
        first = next(states)
        Tp = (first.shape[1] - 2) // self.f_patches
        del first
        out_n = [self.out_frames(max(n, 1)) for n in lens]
        T_out = max(out_n)
        flat_idx, weights = self._stitching(wins, out_n, Tp)
        flat_idx, weights = flat_idx.to(x.device), weights.to(x.device)
        simple = len(wins) == B and T_out <= Tp
        outs = ASTOutputs()
        for i, h in enumerate(states):        # each layer's outputs as soon as its block is done
            name = f"block{i + 1}"
            h = self.norm(h)
            c = (h[:, 0] + h[:, 1]) / 2
            fr = h[:, 2:].reshape(len(wins), self.f_patches, Tp, -1).mean(dim=1)   # [N, T', D]
            if simple:
                outs[name] = fr[:, :T_out]
                outs.clip[name] = c
            else:
                D = fr.shape[-1]
                outs[name] = fr.reshape(-1, D)[flat_idx.reshape(-1)].reshape(B, T_out, D)
                outs.clip[name] = (weights.to(c.dtype) @ c)
        return outs

    @staticmethod
    def _window_inputs(x: torch.Tensor, wins: List[_Window]) -> torch.Tensor:
        """The windows' features ``[N, n_mels, L]`` cut from the rows of ``x`` (zero-padded past its end)."""
        T = x.shape[-1]
        need = max(w.start + w.length for w in wins)
        if need > T:   # the encoder pads with the card's rule (in_frames); bare use: zeros
            x = F.pad(x, (0, need - T))
        L = max(w.length for w in wins)
        if all(w.start == 0 for w in wins) and len(wins) == x.shape[0]:
            return x[:, :, :L]
        x = F.pad(x, (0, max(0, max(w.start for w in wins) + L - x.shape[-1])))
        return torch.stack([x[w.row, :, w.start: w.start + L] for w in wins])

    @staticmethod
    def _stitching(wins: List[_Window], out_n: List[int], Tp: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """How each row's frames and clip vector come from its windows: the index of every output step among
        the windows' ``Tp`` steps ``[B, T_out]`` (past a row's own length: its last), and each window's weight
        in its row's clip vector (the frames it owns) ``[B, N]``."""
        B = len(out_n)
        flat_idx = torch.zeros(B, max(out_n), dtype=torch.long)
        weights = torch.zeros(B, len(wins), dtype=torch.float64)
        filled = [0] * B
        for wi, w in enumerate(wins):
            k = filled[w.row]
            m = min(w.patches, out_n[w.row] - k)
            flat_idx[w.row, k: k + m] = wi * Tp + torch.arange(m)
            filled[w.row] = k + m
            weights[w.row, wi] = w.own
        for b in range(B):   # frames past a row's own length: repeat its last (not meaningful)
            flat_idx[b, filled[b]:] = flat_idx[b, max(filled[b] - 1, 0)]
        return flat_idx, (weights / weights.sum(dim=1, keepdim=True)).float()


# ---- checkpoints -------------------------------------------------------------------------------
_HEAD = re.compile(r"^(?:module\.)?(?:mlp_head\.|v\.head\.|v\.head_dist\.)|^classifier\.|(?:^|\.)head(?:_dist)?\.")
_HF_LAYER = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)$")
_HF_RENAME = {
    "layernorm_before": "norm1", "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
_HF_QKV = {"attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,
           "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2}
_HF_TOP = {
    "embeddings.cls_token": "cls_token", "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
}


def convert_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """An AST checkpoint in any of the supported layouts -> our state dict (heads dropped).

    * the original repository: ``module.v.cls_token``, ``module.v.blocks.N.attn.qkv.weight``, ...
      (with or without ``module.``), plus ``module.mlp_head.*`` (dropped);
    * transformers (``ASTModel`` or ``ASTForAudioClassification``, with or without the
      ``audio_spectrogram_transformer.`` prefix): ``encoder.layer.N.attention.attention.query.weight``
      ... as saved, or ``layers.N.attention.q_proj.weight`` ... as transformers 5 names them in memory;
      separate query/key/value projections are concatenated into one ``qkv``.
    """
    obj = unwrap_state_dict(obj)
    out: Dict[str, torch.Tensor] = {}
    qkv: Dict[Tuple[int, str], Dict[int, torch.Tensor]] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v) or _HEAD.search(k):
            continue
        m = re.match(r"^(?:module\.)?v\.(.+)$", k)
        if m:                                              # the original layout: timm names
            out[m.group(1)] = v
            continue
        k = k[len("audio_spectrogram_transformer."):] if k.startswith("audio_spectrogram_transformer.") else k
        if k in _HF_TOP:
            out[_HF_TOP[k]] = v
            continue
        m = _HF_LAYER.match(k)
        if not m:
            continue
        i, rest = int(m.group(1)), m.group(2)
        sub, _, kind = rest.rpartition(".")
        if sub in _HF_QKV:
            qkv.setdefault((i, kind), {})[_HF_QKV[sub]] = v
        elif sub in _HF_RENAME:
            out[f"blocks.{i}.{_HF_RENAME[sub]}.{kind}"] = v
    for (i, kind), parts in qkv.items():
        if len(parts) != 3:
            raise ValueError(f"layer {i}: query/key/value {kind} incomplete in the checkpoint")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


def load_state(path) -> Dict[str, torch.Tensor]:
    """A checkpoint file (original ``.pth``, transformers ``.safetensors``/``.bin``) or a folder saved
    by transformers' ``save_pretrained`` -> our state dict."""
    from ..weights import WeightsError, load_checkpoint

    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return convert_state_dict(load_checkpoint(path / name))
        shards = sorted(path.glob("model-*.safetensors")) or sorted(path.glob("pytorch_model-*.bin"))
        if shards:
            state: Dict[str, torch.Tensor] = {}
            for s in shards:
                state.update(load_checkpoint(s))
            return convert_state_dict(state)
        raise WeightsError(f"{path}: no model.safetensors or pytorch_model.bin in this folder "
                           "(expected a transformers save_pretrained folder or an AST checkpoint file)")
    return convert_state_dict(load_checkpoint(path))


register_family(Family("ast", build_frontend=KaldiFbank, build_network=ASTNet, load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
# The network and the long/short input rule: audio_repr/models/ast.py. Windows of `max_frames` fbank frames
# start every `hop = t0 * tstride` frames (t0 = time patches per window) and overlap by the rest.
_AST_LICENCE = "BSD-3-Clause (https://github.com/YuanGongND/ast/blob/master/LICENSE)"
_AST_CITE = ("Y. Gong, Y.-A. Chung, J. Glass, \"AST: Audio Spectrogram Transformer\", Interspeech 2021, "
             "pp. 571-575.")
_AST_FE = dict(sample_rate=16000, frame_length_ms=25.0, frame_shift_ms=10.0, n_mels=128, low_freq=20.0,
               high_freq=0.0, preemphasis=0.97, remove_dc_offset=True, window="hanning",
               round_to_power_of_two=True, subtract_clip_mean=True)


def _ast_card(name, description, stride, weights, max_frames=1024, short="pad", stats=(-4.2677393, 4.5689974),
              published=None):
    return ModelCard(
        name=name, family="ast", description=description, sample_rate=16000, frontend=_AST_FE,
        arch=dict(n_mels=128, max_frames=max_frames, patch=16, fstride=stride, tstride=stride, dim=768,
                  depth=12, heads=12, mlp_dim=3072, eps=1e-6, short=short),
        normalisation=Normalisation(stats[0], stats[1], scale=2.0),   # AST normalises (x - mean) / (2 std)
        weights=weights,
        default_layer="block12", fusion_layers=("block5", "block12"),
        licence=_AST_LICENCE, citation=_AST_CITE, paper="https://arxiv.org/abs/2104.01778",
        published=published or {},
        # on a CPU four 1024-frame windows per batch (issue 29: with the heap policy batch 4 of 10-s clips ran 1.15x
        # one at a time and 1.18x the transformers pipeline; batch 16 had run 0.94x before it, the element-wise
        # ops on its large activations; a padded window costs a full one, so short clips batch no wider)
        cpu_batch_frames=4096,
    )


register(_ast_card(
    "ast-audioset", "AST 10x10 (AudioSet, mAP 0.4593), 128 Kaldi mels, 768-d frames every 100 ms; "
    "clips under 10.24 s padded to 1024 frames", 10, "MIT--ast-finetuned-audioset-10-10-0.4593.safetensors",
    published={"AudioSet mAP": 45.93, "EVAR avg": 65.5, "EVAR avg (fusion)": 69.8, "ESC-50": 93.5,
               "ESC-50 (fusion)": 94.2}))
register(_ast_card(
    "ast-audioset-crop", "AST 10x10 (AudioSet, mAP 0.4593) with the positional embedding centre-cropped "
    "to short clips instead of padding them to 1024 frames (faster; not the 1024-frame numbers)", 10,
    "MIT--ast-finetuned-audioset-10-10-0.4593.safetensors",
    short="crop"))
for _s, _map, _file in ((12, 44.67, "0.447"), (14, 44.31, "0.443"), (16, 44.22, "0.442")):
    register(_ast_card(
        f"ast-audioset-{_s}-{_s}", f"AST {_s}x{_s} (AudioSet, mAP {_map / 100:.4f}), 128 Kaldi mels, "
        f"768-d frames every {_s * 10} ms", _s, f"MIT--ast-finetuned-audioset-{_s}-{_s}-{_file}.bin",
        published={"AudioSet mAP": _map}))
register(_ast_card(
    "ast-speechcommands", "AST 10x10 fine-tuned on Speech Commands V2-35 (accuracy 98.12%), windows of "
    "128 frames (1.28 s)", 10, "MIT--ast-finetuned-speech-commands-v2.bin", max_frames=128, stats=(-6.845978, 5.5654526),
    published={"SPCV2-35": 98.12}))
