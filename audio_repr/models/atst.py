"""ATST-Frame (Li, Shao, Li, "Self-supervised Audio Teacher-Student Transformer for Both Clip-level and Frame-level
Tasks", IEEE/ACM TASLP 2024; ``Audio-WestlakeU/audiossl``, ``audiossl/methods/atstframe``; code MIT, checkpoints
CC BY 4.0): the teacher encoder of the self-supervised model, every block exposed, batch-invariant.

Front end (:class:`ATSTLogMel`), as the original's ``embedding.py``: torchaudio's ``MelSpectrogram(16000,
n_fft=1024, win_length=1024, hop_length=160, n_mels=64, f_min=60, f_max=7800)`` (centred, reflect padding, periodic
Hann window, power spectrum, HTK mel without filter normalisation), ``AmplitudeToDB(stype="power", top_db=80)``
(``10 log10(max(p, 1e-10))``, then everything below the clip's maximum minus 80 dB raised to it), and
``MinMax(min=-79.6482, max=50.6842)`` (``(x - min) / (max - min) * 2 - 1``). The front end gives the dB values;
the min-max map is the card's :class:`~audio_repr.registry.Normalisation` (``mean = (min + max) / 2``,
``std = (max - min) / 2``), and the 80 dB floor, which needs the clip's maximum, is applied by the network over the
frames of each row's own length (in normalised units: ``80 * 2 / (max - min)``), so that padding never changes a row.
Input at other rates is resampled with torchaudio's default (the card's ``sinc_hann``), as audiossl's datasets do.
``calibrate()`` replaces the MinMax map with a dataset's statistics (not part of the original pipeline); the floor
stays 80 dB of the card's scale.

Network (:class:`FrameATSTNet`, the original ``FrameAST_base``): 64 x 4 patches (the whole mel axis, 40 ms) by a
linear projection (here the equivalent ``Conv2d``, the checkpoint's ``[768, 256]`` matrix reshaped to
``[768, 1, 64, 4]``), a learned positional embedding cut to the sequence (``pos_type="cut"``: token ``i`` gets row
``i + 1`` of a 251-row table), 12 pre-norm blocks (768-d, 12 heads, MLP 3072, ``qkv`` without bias, LayerNorm eps
1e-6), key masking past each row's patches, and the ``norm_frame`` LayerNorm. No ``[CLS]`` token.

Layers: ``block1`` .. ``block12``, each block's output through ``norm_frame`` (the original's
``get_intermediate_layers``); one frame per patch, every 40 ms (timestamp: the centre of the patch's 4 frames,
``15 + 40 i`` ms; the original labels them ``40 i``). The default is ``block12`` (the teacher's frame output);
``layers="fusion"`` is all twelve concatenated (9216-d), the original's own embedding (``N_BLOCKS = 12`` of
``get_timestamp_embedding``). Clip: the mean of the frames (the original's ``get_scene_embedding``: the mean over the
clip's tokens of each layer).

Length. A clip of ``n`` frames has ``floor(n / 4)`` patches (the original drops a partial last patch); the shortest
is 4 frames (40 ms). The positional table covers 250 patches (10 s); longer audio is cut into windows of 250
patches (1000 frames) run alone, the last one taking the rest (up to 1003 frames). The original cuts at 1001 frames
instead: each cut drops a frame (its timestamps, ``40 i``, drift by 10 ms per 10 s) and averages its chunks' clip
vectors with equal weight, a chunk of 1-3 frames (no patch) adding a zero vector; here the grid is continuous and
the clip is the mean of all frames. The 80 dB floor is the clip's for clips of one window (the original's numbers)
and each window's own for longer ones (the original takes the whole file's maximum, which a bounded-memory reader
cannot know before the end).

Checkpoints (:func:`load_state`): the Lightning ``.ckpt`` files of the release (``atstframe_base.ckpt``), read
without Lightning (``state_dict``, ``hyper_parameters``, optimizer states, callbacks, ...: the training objects are
read as inert placeholders, nothing pickled is run): the teacher encoder ``model.teacher.encoder.*`` (the one the
original ``load_model`` uses), the student's when there is no teacher, or a bare encoder state dict. The
hyper-parameters, when present, must describe this network (``pos_type="cut"``, no prompts, no averaged blocks).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from ..frontends import LogMelSpectrogram
from ..layers.vit import Block, PatchEmbed
from ..registry import ModelCard, Normalisation, register
from ..weights import WeightsError, load_checkpoint, unwrap_state_dict
from . import register_family
from .base import Backbone, Family, Tiling, length_mask

__all__ = ["ATSTLogMel", "FrameATSTNet", "convert_checkpoint", "load_state", "DB_MIN", "DB_MAX", "TOP_DB"]

#: the original's MinMax bounds (dB) and AmplitudeToDB's floor below the clip's maximum
DB_MIN, DB_MAX, TOP_DB = -79.6482, 50.6842, 80.0


class ATSTLogMel(LogMelSpectrogram):
    """torchaudio's ``MelSpectrogram`` (centred, reflect, periodic Hann, power, HTK mel) followed by the dB of
    ``AmplitudeToDB(stype="power")``: ``10 log10(max(p, amin))`` (``amin = 1e-10``, reference 1). The ``top_db``
    floor, which depends on the clip's maximum, is the network's (see the module doc)."""

    def __init__(self, amin: float = 1e-10, **kwargs):
        super().__init__(**kwargs)
        self.amin = float(amin)

    def window_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        if stop <= start:
            return self._no_frames(padded)
        mel = self.mel_frames(padded, start, stop)         # power 2 (the card): re^2 + im^2, as torchaudio
        return 10.0 * torch.log10(torch.clamp(mel, min=self.amin))


class FrameATSTNet(Backbone):
    """The ATST-Frame encoder on normalised dB mel ``[B, n_mels, T]`` (see the module doc). Parameter names follow
    the checkpoints' ``model.teacher.encoder.*`` (``pos_embed``, ``blocks.N.{norm1,attn.{qkv,proj},norm2,
    mlp.{fc1,fc2}}``, ``norm_frame``) except the patch projection, ``patch_embed.proj`` (a ``Conv2d``)."""

    clip_pooling = "mean"            # get_scene_embedding: the mean of the clip's tokens (= frames)
    use_cls_token = False

    def __init__(self, n_mels: int = 64, patch_w: int = 4, window_patches: int = 250, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
                 top_db: float = TOP_DB, db_min: float = DB_MIN, db_max: float = DB_MAX):
        super().__init__()
        if window_patches < 1 or patch_w < 1:
            raise ValueError(f"window_patches and patch_w must be >= 1, got {window_patches}, {patch_w}")
        if not db_max > db_min:
            raise ValueError(f"db_max must exceed db_min, got {db_min}, {db_max}")
        self.n_mels, self.patch_w, self.window_patches = int(n_mels), int(patch_w), int(window_patches)
        self.embed_dim = embed_dim
        self.grid = (1, self.window_patches)                  # (frequency, time) patches of a window
        # AmplitudeToDB's floor in normalised (MinMax) units
        self.top_db_normalised = float(top_db) * 2.0 / (float(db_max) - float(db_min))
        self.patch_embed = PatchEmbed(embed_dim, (self.n_mels, self.patch_w))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.window_patches + 1, embed_dim))
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            blk = Block(embed_dim, num_heads, int(embed_dim * mlp_ratio), norm_eps, bias="qkv")
            blk.attn.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)      # qkv_bias=False
            self.blocks.append(blk)
        self.norm_frame = nn.LayerNorm(embed_dim, eps=norm_eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        names = [f"block{i + 1}" for i in range(depth)]
        self.layer_dims: Dict[str, int] = OrderedDict((n, embed_dim) for n in names)
        self.layer_strides: Dict[str, int] = OrderedDict((n, self.patch_w) for n in names)
        self.min_frames = self.patch_w
        # windows of window_patches patches; each non-last one also reads the patch_w - 1 frames after it (never a
        # whole patch), so that the last window, which takes the rest, always holds at least one patch
        self.tiling = Tiling(chunk_frames=self.window_patches * self.patch_w, overlap_frames=self.patch_w - 1)

    def out_frames(self, n: int, layer: Optional[str] = None) -> int:
        """One frame per whole patch: ``floor(n / 4)`` (the original drops a partial last patch)."""
        return n // self.patch_w

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> "OrderedDict[str, torch.Tensor]":
        """``x [B, n_mels, T]`` (dB mel after the MinMax map; frames past a row's length are not read) and the rows'
        frame counts -> ``{layer: [B, floor(T_max / 4), D]}``; steps past a row's own ``floor(length / 4)`` are not
        meaningful."""
        if x.ndim != 3 or x.shape[1] != self.n_mels:
            raise ValueError(f"expected normalised mel [B, {self.n_mels}, T], got shape {tuple(x.shape)}")
        B, _, T = x.shape
        pw = self.patch_w
        lens = lengths.to(x.device).long() if lengths is not None else torch.full((B,), T, device=x.device)
        lens = lens.clamp(max=T)
        patches = torch.div(lens, pw, rounding_mode="floor")
        P = int(patches.max())
        if int(patches.min()) < 1:
            raise ValueError(f"a row of {int(lens.min())} frames holds no {pw}-frame patch "
                             f"(ATST-Frame needs >= {pw} frames)")
        if P > self.window_patches:
            raise ValueError(f"{P} patches exceed the positional table ({self.window_patches}); the encoder cuts "
                             f"long audio into windows of {self.window_patches * pw} frames")
        # AmplitudeToDB's top_db: the floor below each row's maximum over its own frames
        valid = length_mask(lens, T)[:, None, :]
        peak = torch.where(valid, x, torch.full_like(x, float("-inf"))).amax(dim=(1, 2), keepdim=True)
        x = torch.maximum(x, peak - self.top_db_normalised)
        x = x[:, None, :, : P * pw].to(self.pos_embed.dtype)
        h = self.patch_embed(x) + self.pos_embed[:, 1: P + 1]
        mask = None
        if int(patches.min()) < P:
            mask = length_mask(patches, P)[:, None, None, :]
        outs: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for i, blk in enumerate(self.blocks):
            h = blk(h, mask)
            outs[f"block{i + 1}"] = self.norm_frame(h)
        return outs


# ---- checkpoints -------------------------------------------------------------------------------------------------
#: the names Lightning's AttributeDict has had (pytorch_lightning 1.x, lightning_fabric / lightning 2.x)
_ATTRIBUTE_DICTS = ("pytorch_lightning.utilities.parsing.AttributeDict", "lightning_fabric.utilities.data.AttributeDict",
                    "lightning.fabric.utilities.data.AttributeDict")
_PREFIXES = ("model.teacher.encoder.", "model.student.encoder.")


def _check_hparams(hp: Any) -> None:
    if not isinstance(hp, Mapping):
        return
    problems = []
    if hp.get("pos_type", "cut") != "cut":
        problems.append(f"pos_type={hp.get('pos_type')!r} (this network cuts its positional table: 'cut')")
    if int(hp.get("nprompt", 0) or 0) != 0:
        problems.append(f"nprompt={hp.get('nprompt')!r} (prompt tokens are not supported)")
    if int(hp.get("avg_blocks", 0) or 0) != 0:
        problems.append(f"avg_blocks={hp.get('avg_blocks')!r} (the data2vec-style variant, not ATST-Frame)")
    if problems:
        raise WeightsError("the checkpoint's hyper_parameters describe another network: " + "; ".join(problems))


def _encoder_tensors(state: Mapping) -> Dict[str, torch.Tensor]:
    """The teacher encoder's tensors of a state dict, their prefix (the first of ``_PREFIXES`` present, else an
    optional ``encoder.``) stripped."""
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in tensors):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return {(k[len("encoder."):] if k.startswith("encoder.") else k): v for k, v in tensors.items()}


def _renamed(tensors: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our names: the training-only ``mask_embed`` dropped, the linear patch projection as ``patch_embed.proj``."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        if k == "mask_embed":                                  # the masked-token embedding of training
            continue
        if k.startswith("patch_embed.patch_embed."):           # the linear patch projection (reshaped later)
            kind = k.rsplit(".", 1)[1]
            out[f"patch_embed.proj.{kind}"] = v
            continue
        out[k] = v
    return out


def convert_checkpoint(obj: Any) -> Dict[str, torch.Tensor]:
    """An ATST-Frame checkpoint (Lightning's ``{'state_dict', 'hyper_parameters', ...}`` or a bare encoder state
    dict) -> :class:`FrameATSTNet`'s state dict."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"expected an ATST-Frame checkpoint dict, got {type(obj).__name__}")
    _check_hparams(obj.get("hyper_parameters"))
    tensors = _encoder_tensors(unwrap_state_dict(obj, ("state_dict",)))
    if not any(k.startswith("blocks.") for k in tensors) or "pos_embed" not in tensors:
        raise WeightsError("not an ATST-Frame checkpoint: no model.teacher.encoder.* (blocks, pos_embed) tensors "
                           "(an ATST-Clip checkpoint, audiossl/methods/atst, is another network)")
    if any(k.startswith("prompt_embed") for k in tensors):
        raise WeightsError("this ATST-Frame checkpoint has prompt tokens (nprompt > 0), which are not supported")
    out = _renamed(tensors)
    w = out.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 2:                          # Linear over (p1 p2 c) -> Conv2d [D, 1, p1, p2]
        hp = obj.get("hyper_parameters")
        p1 = int(hp.get("patch_h", 64)) if isinstance(hp, Mapping) else 64
        if w.shape[1] % p1:
            raise WeightsError(f"ATST patch projection of {w.shape[1]} inputs is not a whole number of "
                               f"{p1}-bin columns")
        out["patch_embed.proj.weight"] = w.reshape(w.shape[0], 1, p1, w.shape[1] // p1)
    return out


def load_state(path) -> Dict[str, torch.Tensor]:
    """An ATST-Frame Lightning ``.ckpt`` (or a saved encoder state dict) -> :class:`FrameATSTNet`'s state dict,
    read safely: the Lightning ``AttributeDict`` of ``hyper_parameters`` as the plain dict it derives from, the
    other training objects as inert placeholders; no pickled code runs."""
    return convert_checkpoint(load_checkpoint(path, allow=[(dict, n) for n in _ATTRIBUTE_DICTS], inert_others=True))


register_family(Family("atst", build_frontend=ATSTLogMel, build_network=FrameATSTNet, load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
FRONTEND = dict(sample_rate=16000, n_fft=1024, win_length=1024, hop_length=160, n_mels=64, f_min=60.0,
                f_max=7800.0, mel_scale="htk", power=2.0, center=True)
_LICENCE = ("CC BY 4.0 (checkpoints; the audiossl code is MIT: https://github.com/Audio-WestlakeU/audiossl/blob/main/"
            "LICENSE)")
_CITE = ("X. Li, N. Shao, X. Li, \"Self-supervised Audio Teacher-Student Transformer for Both Clip-level and "
         "Frame-level Tasks\", IEEE/ACM Trans. Audio, Speech, Language Process., vol. 32, pp. 1336-1351, 2024.")

register(ModelCard(
    name="atst-frame", family="atst",
    description=("ATST-Frame base (self-supervised on AudioSet), 64 HTK mels 60-7800 Hz in dB, 64x4 patches, 768-d "
                 "frames every 40 ms"),
    sample_rate=16000, frontend=FRONTEND,
    arch=dict(n_mels=64, patch_w=4, window_patches=250, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    # MinMax(min=-79.6482, max=50.6842): (x - min) / (max - min) * 2 - 1 = (x - mid) / half-range
    normalisation=Normalisation((DB_MIN + DB_MAX) / 2.0, (DB_MAX - DB_MIN) / 2.0),
    weights="atstframe_base.ckpt",
    default_layer="block12",
    fusion_layers=tuple(f"block{i + 1}" for i in range(12)),      # the original's N_BLOCKS = 12 concatenation
    licence=_LICENCE, citation=_CITE, paper="https://arxiv.org/abs/2306.04186",
    published={"EVAR avg (linear)": 79.9},
    cpu_batch_frames=16384,          # on a CPU 16 ~1000-frame windows per batch, more of shorter clips (issue 29)
))
