"""Dasheng (Dinkel et al., "Scaling up masked audio encoder learning for general audio classification", Interspeech
2024; ``RicherMans/Dasheng``, the ``dasheng`` package, Apache-2.0): masked-autoencoder ViTs trained on 272k hours of
general audio, ``dasheng-base`` (86 M parameters), ``dasheng-06b`` (0.6 B) and ``dasheng-12b`` (1.2 B; named as the
original's ``dasheng_06B`` / ``dasheng_12B``: a dot cannot be in a HEAR module's name), every block exposed.

Front end (:class:`~audio_repr.frontends.decibel.DecibelMelSpectrogram`): torchaudio's ``MelSpectrogram`` (16 kHz,
``n_fft`` 512, window 512, hop 160, 64 HTK mels 0-8000 Hz, centred, power) in dB with ``top_db = 120``, the floor
relative to the loudest value of the whole clip (the original computes it over the tensor it is given: one clip
alone; see the front end's doc for batches). No fixed normalisation: the network's own batch norm over the 64 mels
(``init_bn``, eval statistics) comes first.

Network (:class:`AudioTransformer`): ``64 x 4`` patches (one patch spans all mels and 4 frames = 40 ms) by a
``Conv2d``, a learned time positional embedding (``time_pos_embed``, one column per patch of a 1008-frame chunk:
252) and frequency one (``freq_pos_embed``) added, tokens ``(f t)`` (frequency-major), pre-norm transformer blocks
(``qkv`` with bias, exact GELU, LayerNorm eps 1e-6, optional LayerScale), a final LayerNorm.

Long audio and batches, as the original's ``forward_spectrogram``: the patch sequence is cut into chunks of
``target_length / 4 = 252`` patches (1008 frames, 10.08 s), each encoded alone with the positional embedding of
its own first columns (the last chunk: its own length), and the chunks' outputs concatenated. Here a chunk is one
of the encoder's windows (:class:`~audio_repr.models.base.Tiling` of 1008 frames), so memory is bounded by the
chunk, not the file. A clip has ``floor(frames / 4)`` patches (the original's ``Conv2d`` drops a last partial
patch). In a padded batch each row's patches past its own count are masked as attention keys, so a clip gives its
alone numbers inside any batch. (The original's ``x_length`` masks ``floor(samples / 640)`` patches, one fewer than
it computes alone when ``samples mod 640 >= 480``, and the zero padding of a batched row changes its last frames'
spectrum and the batch's dB floor; the Hugging Face port has no mask at all. Neither is "the clip alone".)

Layers: ``block1`` .. ``blockN`` (the residual stream after each block) and ``output`` (the last block through the
final LayerNorm: the original's output, the standard layer). Frames: one per patch, every 40 ms, timestamp the
centre of its 4 frames (``15 + 40 i`` ms); clip: their time mean (the original's and X-ARES's clip embedding).
``layers="fusion"``: the block at 7/12 of the depth and ``output`` (``block7`` + ``output`` for the base model, as
this package's other ViT-Base families; EUSIPCO 2022's recipe of an intermediate and the last layer).

Checkpoints (:func:`load_state`): the released ``{'model': state, 'config': {...}}`` (Zenodo record 11511780:
``dasheng_base.pt``, ``dasheng_06b.pt``, ``dasheng_12b.pt``). The original's ``from_pretrained`` passes the
``config``'s top-level keys to the encoder over its defaults (keys it does not know, such as the trainer's
``train_data`` or ``epochs``, fall into ``**kwargs``) and then sets ``embed_dim``, ``depth`` and ``num_heads`` by
the variant. Here the same: the config's encoder fields are read with the original's defaults for absent keys,
kept in the network as its ``config`` buffer and checked when weights are loaded; a checkpoint whose architecture
or front end differs from the model's (patches, MLP ratio, qkv bias, LayerScale, chunk length, mels, FFT, hop,
window, band, centring, ``top_db``) is refused, naming the fields; the width and depth are the tensors' shapes. The front end's buffers (``front_end.*``) are dropped (the front end computes them),
``init_bn.1.*`` becomes ``init_bn.*``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..frontends import DecibelMelSpectrogram
from ..layers.vit import Attention, Mlp
from ..registry import ModelCard, Normalisation, register
from ..weights import WeightsError, load_checkpoint, unwrap_state_dict
from . import register_family
from .base import Backbone, Family, LayerOutputs, Tiling, length_mask

__all__ = ["AudioTransformer", "DashengNet", "arch_from_config", "convert_checkpoint", "load_state",
           "CONFIG_DEFAULTS", "FRONTEND"]


# ---- the network ------------------------------------------------------------------------------------------------
class LayerScale(nn.Module):
    """A learned per-channel scale (``gamma``), the original's ``LayerScale`` when ``init_values`` is set."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm block ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))`` (no LayerScale: identity); the
    attention and MLP of :mod:`audio_repr.layers.vit`. Names: ``norm1``, ``attn.{qkv,proj}``, ``ls1.gamma``,
    ``norm2``, ``mlp.{fc1,fc2}``, ``ls2.gamma``."""

    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float, qkv_bias: bool = True,
                 init_values: Optional[float] = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, bias="qkv")
        if not qkv_bias:
            self.attn.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), mask))
        return x + self.ls2(self.mlp(self.norm2(x)))


class AudioTransformer(Backbone):
    """The audio ViT of Dasheng and CED on dB mel features ``[B, n_mels, T]`` (see the module doc): batch norm over
    mels, ``patch_size`` patches (frequency x time, non-overlapping), time and frequency positional embeddings for a
    chunk of ``target_length`` frames, pre-norm blocks, a final LayerNorm; optionally CED's classifier
    (``outputlayer``: LayerNorm eps 1e-5, Linear to ``num_classes``).

    Chunks of ``target_length // patch_t`` patches are encoded alone (positions from each chunk's own first column),
    padded patches masked as keys. Frames: the tokens of each time step averaged over the frequency patches (one
    token per step for Dasheng). Parameter names are the checkpoints' (``init_bn``, ``patch_embed.proj``,
    ``time_pos_embed``, ``freq_pos_embed``, ``blocks.N.*``, ``norm``, ``outputlayer.{0,1}``)."""

    clip_pooling = "mean"

    def __init__(self, n_mels: int = 64, patch_size: Sequence[int] = (64, 4), embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: Optional[float] = None, target_length: int = 1008, norm_eps: float = 1e-6,
                 num_classes: Optional[int] = None):
        super().__init__()
        pf, pt = int(patch_size[0]), int(patch_size[1])
        if pf < 1 or pt < 1 or n_mels % pf:
            raise ValueError(f"{n_mels} mels are not a whole number of {pf}x{pt} patches")
        if target_length < pt:
            raise ValueError(f"target_length {target_length} holds no {pt}-frame patch")
        if embed_dim % num_heads:
            raise ValueError(f"embedding size {embed_dim} is not divisible by {num_heads} heads")
        self.n_mels, self.patch_size, self.embed_dim = int(n_mels), (pf, pt), int(embed_dim)
        self.freq_patches, self.chunk_patches = self.n_mels // pf, int(target_length) // pt
        self.target_length = int(target_length)
        self.grid = (self.freq_patches, self.chunk_patches)      # (frequency, time) patches of a whole chunk
        self.use_cls_token = False                              # no [CLS] token: frames and clip from the patches
        self.init_bn = nn.BatchNorm1d(self.n_mels, momentum=0.01)
        self.patch_embed = _PatchEmbed(embed_dim, (pf, pt))
        self.time_pos_embed = nn.Parameter(torch.randn(1, embed_dim, 1, self.chunk_patches) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, embed_dim, self.freq_patches, 1) * 0.02)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, int(embed_dim * mlp_ratio), norm_eps, qkv_bias,
                                           init_values) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.outputlayer = (nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
                            if num_classes else None)
        names = [f"block{i + 1}" for i in range(depth)] + ["output"]
        self.layer_dims: Dict[str, int] = OrderedDict((n, self.embed_dim) for n in names)
        if self.outputlayer is not None:
            self.layer_dims["logits"] = int(num_classes)
        self.layer_strides: Dict[str, int] = OrderedDict((n, pt) for n in self.layer_dims)
        self.min_frames = pt
        # the original's chunks: each encoded alone, the last one at its own length; each also reads the pt - 1
        # frames after it (never a whole patch: unused), so that the last one always holds a patch (a clip of
        # 1008 k + 1..3 frames has no patch past its k chunks)
        self.tiling = Tiling(chunk_frames=self.chunk_patches * pt, overlap_frames=pt - 1)

    def out_frames(self, n: int, layer: Optional[str] = None) -> int:
        """One frame per whole patch: ``floor(n / patch_t)``."""
        return n // self.patch_size[1]

    def tokens(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, Optional[torch.Tensor], int, int, List[int]]:
        """Embedded tokens of the chunks of ``x [B, n_mels, T]``: ``(tokens [B * n, F' * w, D], key mask or None,
        n chunks, w patches per chunk, each row's patch count)``."""
        if x.ndim != 3 or x.shape[1] != self.n_mels:
            raise ValueError(f"expected dB mel features [B, {self.n_mels}, T], got shape {tuple(x.shape)}")
        B, _, T = x.shape
        pt, W, Fp, D = self.patch_size[1], self.chunk_patches, self.freq_patches, self.embed_dim
        lens = [int(v) for v in lengths.tolist()] if lengths is not None else [T] * B
        patches = [min(n, T) // pt for n in lens]
        if min(patches) < 1:
            raise ValueError(f"a row of {min(lens)} frames holds no {pt}-frame patch")
        P = max(patches)
        h = self.init_bn(x[..., : P * pt].to(self.time_pos_embed.dtype))
        g = self.patch_embed(h[:, None])                                        # [B, D, F', P]
        n = -(-P // W)
        w = W if n > 1 else P
        if n * w > P:
            g = F.pad(g, (0, n * w - P))
        g = g.reshape(B, D, Fp, n, w).permute(0, 3, 1, 2, 4).reshape(B * n, D, Fp, w)
        g = g + self.time_pos_embed[..., :w] + self.freq_pos_embed
        tok = g.flatten(2).transpose(1, 2)                                     # [B * n, F' * w, D], (f t)
        mask = None
        if any(p < n * w for p in patches):
            starts = torch.arange(n, device=x.device) * w
            real = (torch.tensor(patches, device=x.device).view(B, 1) - starts.view(1, n)).clamp(0, w).reshape(-1)
            real = torch.where(real == 0, torch.full_like(real, w), real)     # a chunk of padding only: unused
            valid = length_mask(real, w)
            mask = valid.repeat(1, Fp)[:, None, None, :]
        return tok, mask, n, w, patches

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> LayerOutputs:
        """``x [B, n_mels, T]`` (dB mel, frames past a row's length never read as keys) and the rows' frame counts ->
        ``{layer: [B, floor(T / patch_t), D]}``; steps past a row's own ``floor(length / patch_t)`` are not
        meaningful."""
        B = x.shape[0]
        h, mask, n, w, patches = self.tokens(x, lengths)
        P, Fp = max(patches), self.freq_patches

        def frames(t: torch.Tensor) -> torch.Tensor:                     # [B*n, F'*w, C] -> [B, P, C]
            C = t.shape[-1]
            t = t.reshape(B * n, Fp, w, C)
            t = t[:, 0] if Fp == 1 else t.mean(dim=1)
            return t.reshape(B, n * w, C)[:, :P]

        token = self.clip_pooling == "token"
        if token:   # each row's clip vectors: the mean of its real tokens per chunk, chunks weighted by their patches
            keep = (mask[:, 0, 0, :].to(h.dtype) if mask is not None else h.new_ones(h.shape[:2]))   # [B*n, L]
            cols = torch.tensor(patches, device=h.device, dtype=h.dtype).view(B, 1)
            share = (cols - torch.arange(n, device=h.device, dtype=h.dtype).view(1, n) * w).clamp(0, w) / cols

            def chunk_means(t: torch.Tensor) -> torch.Tensor:             # [B*n, L, C] -> [B*n, C]
                if mask is None:
                    return t.mean(dim=1)
                return (t * keep[..., None]).sum(dim=1) / keep.sum(dim=1, keepdim=True)

            def over_chunks(c: torch.Tensor) -> torch.Tensor:             # [B*n, C] -> [B, C]
                return c if n == 1 else (c.reshape(B, n, -1) * share[..., None]).sum(dim=1)

        outs = LayerOutputs()
        outs.clip = OrderedDict() if token else None
        for i, blk in enumerate(self.blocks):
            h = blk(h, mask)
            outs[f"block{i + 1}"] = frames(h)
            if token:
                outs.clip[f"block{i + 1}"] = over_chunks(chunk_means(h))
        h = self.norm(h)
        outs["output"] = out = frames(h)
        if token:
            pooled = chunk_means(h)
            outs.clip["output"] = over_chunks(pooled)
        if self.outputlayer is not None:
            outs["logits"] = self.outputlayer(out)          # on each step's mean token (CED's 'dm' frames)
            if token:   # the classifier on each chunk's mean token (CED's clip logits)
                outs.clip["logits"] = over_chunks(self.outputlayer(pooled))
        return outs


class _PatchEmbed(nn.Module):
    """``proj``: the patch ``Conv2d`` (kernel = stride = patch size), giving the grid ``[N, D, F', T']``."""

    def __init__(self, dim: int, patch: Tuple[int, int]):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


# ---- Dasheng: the config carried with the weights ---------------------------------------------------------------
#: the original encoder's defaults (``AudioTransformerMAE_Encoder``) for the fields that shape inference
CONFIG_DEFAULTS: Dict[str, Any] = dict(
    patch_size=(64, 4), patch_stride=(64, 4), embed_dim=768, depth=12, num_heads=8, mlp_ratio=4.0, qkv_bias=True,
    init_values=None, target_length=1008, pooling="mean", n_fft=512, n_mels=64, hop_size=160, win_size=512,
    f_min=0, f_max=8000, center=True, top_db=120)
#: the ``config`` buffer: these fields in this order (tuples as two values; ``init_values`` None as 0)
#: (``embed_dim``, ``depth`` and ``num_heads`` are not among them: the original's ``dasheng_base()`` / ``dasheng_06B()``
#: / ``dasheng_12B()`` set them over the config's; here the card does, and the tensors' shapes must agree)
_CFG_FIELDS = ("patch_size", "patch_stride", "mlp_ratio", "qkv_bias", "init_values", "target_length", "n_fft", "n_mels", "hop_size", "win_size", "f_min", "f_max",
               "center", "top_db")


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise WeightsError(f"expected a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def arch_from_config(config: Mapping) -> Dict[str, Any]:
    """A checkpoint's ``config`` -> the normalised architecture and front-end fields (the original's defaults for
    absent keys; training-only keys ignored). A config the original could not run as an encoder of frames is
    refused: overlapping patches, ``pooling='token'`` (a ``[CLS]`` token in every chunk)."""
    if not isinstance(config, Mapping):
        raise WeightsError(f"Dasheng config must be a dict, got {type(config).__name__}")
    c = {k: config.get(k, v) for k, v in CONFIG_DEFAULTS.items()}
    out: Dict[str, Any] = dict(
        patch_size=_pair(c["patch_size"]), patch_stride=_pair(c["patch_stride"]), embed_dim=int(c["embed_dim"]),
        depth=int(c["depth"]), num_heads=int(c["num_heads"]), mlp_ratio=float(c["mlp_ratio"]),
        qkv_bias=bool(c["qkv_bias"]), init_values=float(c["init_values"]) if c["init_values"] else None,
        target_length=int(c["target_length"]), n_fft=int(c["n_fft"]), n_mels=int(c["n_mels"]),
        hop_size=int(c["hop_size"]), win_size=int(c["win_size"]), f_min=float(c["f_min"]),
        f_max=float(c["f_max"]), center=bool(c["center"]),
        top_db=float(c["top_db"]) if c["top_db"] is not None else -1.0)
    if out["patch_size"] != out["patch_stride"]:
        raise WeightsError(f"Dasheng config with overlapping patches (patch_size {out['patch_size']}, patch_stride "
                           f"{out['patch_stride']}) is not supported")
    if c["pooling"] != "mean":
        raise WeightsError(f"Dasheng config pooling={c['pooling']!r} is not supported (the released encoders: 'mean')")
    return out


def config_tensor(cfg: Mapping) -> torch.Tensor:
    vals: List[float] = []
    for k in _CFG_FIELDS:
        v = cfg[k]
        vals += [float(a) for a in v] if isinstance(v, tuple) else [float(v) if v is not None else 0.0]
    return torch.tensor(vals, dtype=torch.float64)


def config_from_tensor(t: torch.Tensor) -> Dict[str, Any]:
    vals = t.detach().double().cpu().tolist()
    out: Dict[str, Any] = {}
    i = 0
    for k in _CFG_FIELDS:
        if k in ("patch_size", "patch_stride"):
            out[k] = (int(round(vals[i])), int(round(vals[i + 1])))
            i += 2
            continue
        v = vals[i]
        i += 1
        d = CONFIG_DEFAULTS[k]
        out[k] = (bool(round(v)) if isinstance(d, bool) else (v or None) if k == "init_values"
                  else float(v) if k in ("mlp_ratio", "f_min", "f_max", "top_db") else int(round(v)))
    return out


class DashengNet(AudioTransformer):
    """Dasheng's encoder (:class:`AudioTransformer` without a classifier), with the architecture and front end it
    was built for as its ``config`` buffer, checked against a loaded checkpoint's."""

    def __init__(self, n_mels: int = 64, patch_size: Sequence[int] = (64, 4), embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: Optional[float] = None, target_length: int = 1008,
                 frontend: Optional[Mapping] = None):
        super().__init__(n_mels=n_mels, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, init_values=init_values,
                         target_length=target_length)
        fe = dict(FRONTEND, **(frontend or {}))
        self.arch = dict(
            patch_size=self.patch_size, patch_stride=self.patch_size, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=float(mlp_ratio), qkv_bias=bool(qkv_bias),
            init_values=float(init_values) if init_values else None, target_length=int(target_length),
            n_fft=int(fe["n_fft"]), n_mels=int(n_mels), hop_size=int(fe["hop_length"]),
            win_size=int(fe["win_length"]), f_min=float(fe["f_min"]), f_max=float(fe["f_max"]),
            center=bool(fe["center"]), top_db=float(fe["top_db"]) if fe["top_db"] is not None else -1.0)
        self.register_buffer("config", config_tensor(self.arch))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "config"
        if key in state_dict:
            got = state_dict[key]
            if tuple(got.shape) != tuple(self.config.shape):
                raise WeightsError(f"Dasheng config of {tuple(got.shape)} values, expected {tuple(self.config.shape)}")
            theirs, ours = config_from_tensor(got), config_from_tensor(self.config)
            diff = [f"{k}={theirs[k]!r} (this model: {ours[k]!r})" for k in _CFG_FIELDS if theirs[k] != ours[k]]
            if diff:
                raise WeightsError("the checkpoint's Dasheng config is another model: " + "; ".join(diff))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ---- checkpoints --------------------------------------------------------------------------------------------------
_BN = "init_bn.1."


def convert_state(state: Mapping, prefixes: Sequence[str] = ()) -> Dict[str, torch.Tensor]:
    """The original encoder's state dict (``front_end.*`` buffers, ``init_bn.1.*``, ``patch_embed.proj.*``, the
    positional embeddings, ``blocks.N.*``, ``norm.*``, CED's ``outputlayer.*``) -> :class:`AudioTransformer`'s;
    ``prefixes`` (e.g. a Hugging Face port's ``encoder.``) are removed first."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            continue
        k = k[len("module."):] if k.startswith("module.") else k
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        if k.startswith("front_end.") or k.startswith("decoder.") or k == "mask_token":
            continue
        if k.startswith(_BN):
            k = "init_bn." + k[len(_BN):]
        out[k] = v
    return out


def convert_checkpoint(obj: Any) -> Dict[str, torch.Tensor]:
    """A released Dasheng checkpoint ``{'model': state, 'config': {...}}`` -> :class:`DashengNet`'s state dict,
    with its ``config`` buffer (see the module doc)."""
    if not isinstance(obj, Mapping) or "model" not in obj:
        raise WeightsError("a Dasheng checkpoint is a dict {'model': state, 'config': {...}} as the released files "
                           f"(Zenodo record 11511780); got {type(obj).__name__}"
                           + (f" with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, Mapping) else ""))
    state = unwrap_state_dict(obj, ("model",))
    if not any(isinstance(k, str) and k.startswith("blocks.") for k in state):
        raise WeightsError("not a Dasheng encoder: no blocks.* tensors in the checkpoint's 'model'")
    out = convert_state(state)
    if any(k.startswith("outputlayer.") for k in out):
        raise WeightsError("this checkpoint has a classifier (outputlayer.*): a CED or fine-tuned model, not a Dasheng "
                           "encoder")
    config = obj.get("config")
    if config is None:
        raise WeightsError("the Dasheng checkpoint has no 'config' beside 'model' (the released files have one)")
    out["config"] = config_tensor(arch_from_config(config))
    return out


def load_state(path) -> Dict[str, torch.Tensor]:
    """A Dasheng checkpoint file -> :class:`DashengNet`'s state dict (see :func:`convert_checkpoint`)."""
    return convert_checkpoint(load_checkpoint(path, inert_others=True))


def build_frontend(**kwargs) -> DecibelMelSpectrogram:
    return DecibelMelSpectrogram(**kwargs)


register_family(Family("dasheng", build_frontend=build_frontend, build_network=DashengNet, load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
FRONTEND = dict(sample_rate=16000, n_fft=512, win_length=512, hop_length=160, n_mels=64, f_min=0.0, f_max=8000.0,
                mel_scale="htk", power=2.0, center=True, top_db=120.0)
_LICENCE = ("Apache-2.0 (https://github.com/RicherMans/Dasheng/blob/main/LICENSE; the code and the checkpoints "
            "released with it, Zenodo record 11511780)")
_CITE = ("H. Dinkel, Z. Yan, Y. Wang, J. Zhang, Y. Wang, B. Wang, \"Scaling up masked audio encoder learning for general "
         "audio classification\", Interspeech 2024, pp. 547-551.")

for _name, _file, _dim, _depth, _heads, _params, _scores in [
    ("dasheng-base", "dasheng_base.pt", 768, 12, 12, "86 M",
     {"HEAR env": 80.2, "HEAR speech": 72.5, "HEAR music": 84.0, "ESC-50 (kNN)": 61.9, "VoxCeleb1 (kNN)": 34.21}),
    ("dasheng-06b", "dasheng_06b.pt", 1280, 32, 16, "600 M",
     {"HEAR env": 82.4, "HEAR speech": 74.9, "HEAR music": 84.0, "ESC-50 (kNN)": 66.55, "VoxCeleb1 (kNN)": 37.78}),
    ("dasheng-12b", "dasheng_12b.pt", 1536, 40, 24, "1.2 B",
     {"HEAR env": 83.2, "HEAR speech": 75.7, "HEAR music": 84.9, "ESC-50 (kNN)": 68.55, "VoxCeleb1 (kNN)": 39.39}),
]:
    register(ModelCard(
        name=_name, family="dasheng",
        description=(f"Dasheng {_params} ({_depth} blocks, {_dim}-d; masked autoencoder on 272k hours of general audio), "
                     f"64 mels in dB, 64x4 patches, {_dim}-d frames every 40 ms, 10.08-s chunks"),
        sample_rate=16000, frontend=FRONTEND,
        arch=dict(n_mels=64, patch_size=(64, 4), embed_dim=_dim, depth=_depth, num_heads=_heads, mlp_ratio=4.0,
                  qkv_bias=True, init_values=None, target_length=1008),
        normalisation=Normalisation(0.0, 1.0),        # none: the network's batch norm over mels normalises
        weights=_file, default_layer="output",
        fusion_layers=(f"block{round(_depth * 7 / 12)}", "output"),
        licence=_LICENCE, citation=_CITE, paper="https://arxiv.org/abs/2406.06992",
        # the original reads 16 kHz audio as given (torchaudio.load; its README asks for 16 kHz input)
        published=_scores,
        cpu_batch_frames=16384,          # on a CPU 16 ~1000-frame windows per batch, more of shorter clips (issue 29)
    ))
