"""BEATs (Chen et al., "BEATs: Audio Pre-Training with Acoustic Tokenizers", ICML 2023; microsoft/unilm ``beats/``,
MIT): the self-supervised iter3 / iter3+ models and the AudioSet fine-tuned iter3+ (AS2M) ``cpt2``, every layer
exposed, batch-invariant.

Front end (:class:`BEATsFbank`): Kaldi fbank as the original's ``preprocess`` calls it
(``torchaudio.compliance.kaldi.fbank(waveform * 2**15, num_mel_bins=128, sample_frequency=16000, frame_length=25,
frame_shift=10)``: Povey window, pre-emphasis 0.97, DC removal, 512-point FFT, 128 Kaldi mels from 20 Hz, no
dither, snip edges), batched on the device (:class:`~audio_repr.frontends.KaldiFbank`, not a per-clip loop),
normalised ``(x - 15.41663) / (2 * 6.55582)``.

Network (:class:`BEATsNet`): 16 x 16 patches of the fbank image ``[time, mel]`` by a ``Conv2d`` (no bias) ->
LayerNorm (512) -> ``post_extract_proj`` (768) -> tokens in time order, the 8 frequency patches of each 160 ms
step consecutive (token ``8 t + f``) -> a convolutional positional embedding over that sequence (weight-normed
``Conv1d``, kernel 128 tokens = 16 steps, 16 groups, GELU, added) -> LayerNorm -> 12 post-norm transformer layers
with deep norm (residual x ``(2 N) ** 0.25``) and gated relative-position attention (320 buckets up to distance
800, the bias of layer 0 reused by every layer, GRU gate on the query; :mod:`audio_repr.layers.relpos`). The
fine-tuned model adds ``predictor``: a linear layer on each token, averaged over the tokens (the original's
logits; its ``lprobs`` are their sigmoid).

Layers: ``patch_embed`` (the input of layer 1: patches, LayerNorm, projection, positional convolution, LayerNorm),
``block1`` .. ``block12`` (each layer's output; ``block12`` is the original's ``extract_features`` output) and,
fine-tuned, ``logits`` (the predictor on each token). Per layer, frames: the tokens of each 160 ms step averaged
over the 8 frequency patches (one frame per 16 fbank frames; timestamp ``12.5 + 10 * (16 i + 7.5)`` ms, the
centre of the patch); clip: the mean of every token (EVAR's BEATs clip embedding; for ``logits`` the original's
clip logits). ``layers="fusion"`` is ``block7`` + ``block12``, the ViT-Base pair this package uses for
MSM-MAE/M2D (EUSIPCO 2022's recipe: an intermediate and the last layer): no BEATs-specific recipe is published.

Padding, done right (unilm #1427). The original batched path is not batch-invariant. A clip alone has
``floor(frames / 16)`` time patches of its own fbank frames (Kaldi's snip-edges frames: a partial last patch is
dropped). Padded to a longer clip it also gets the fbank frames that straddle its end and the log of the zero
padding after it (-15.9 before normalising), in further patches; the mask that should hide them is the *sample*
mask cut into equal runs per fbank frame, then the frame mask cut into equal runs of 2 frames per token — so the
tokens of the clip's partial patch and some padding tokens stay unmasked (the low-frequency tokens of a patch read
its first frames), and they reach the clip's real tokens through attention and the positional convolution (which
spans 16 steps). Here each row (each window) is exactly what it is alone: its whole patches, then zero tokens
(the positional convolution's own zero padding), masked as keys. A clip gives its alone numbers inside any batch
(to float32 reordering).

Long audio. The original runs any length at once: attention memory grows with the square of the length (a
10-minute clip: ~30 000 tokens, ~43 GB of attention weights per layer) and the relative positions saturate past
800 tokens. BEATs was trained on AudioSet's 10 s clips (998 fbank frames = 62 time patches = 496 tokens), so a clip
runs whole up to ``window_patches = 62`` time patches (up to 1007 frames, 10.08 s); a longer one is cut into
consecutive windows of 62 patches (992 frames, 9.92 s; the last one the rest), each run alone; frames are
stitched in order (their timestamps are the patch centres of the whole clip: exact), and the clip vector is the
mean of all tokens of all windows. Memory is bounded by the window, not the file.

Checkpoints (:func:`load_state`): the original ``{'cfg': dict, 'model': state_dict}`` (``BEATs_iter3.pt``,
``BEATs_iter3_plus_AS2M.pt``, ``BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt``, ...; the fine-tuned ones also
hold ``label_dict``); a bare state dict, which does not say its architecture, is refused. The ``cfg`` is read with the original's defaults for absent keys
(:func:`arch_from_cfg`) and carried into the network as its ``cfg`` buffer: loading a checkpoint whose
architecture (layers, sizes, heads, deep norm, layer-norm order, relative-position buckets and distance, GRU gate,
positional convolution, fine-tuned head) differs from the model's is refused, naming the fields
(:meth:`BEATsNet.from_cfg` builds any configuration). The layer-0 relative-position embedding the original saves
under every layer is kept once. A fine-tuned checkpoint's predictor rows are put in the order of
``audio_repr/data/audioset_labels.csv`` by its ``label_dict`` (index -> AudioSet id or name), so ``logits`` index
``i`` is AudioSet class ``i`` and ``tag()`` names the classes.
"""

from __future__ import annotations

import csv
import math
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..frontends import KaldiFbank
from ..layers.relpos import RelPosEncoderLayer, deep_norm_alpha
from ..registry import ModelCard, Normalisation, register
from ..weights import WeightsError, load_checkpoint, unwrap_state_dict
from . import register_family
from .base import Backbone, Family, Tiling, length_mask

__all__ = ["BEATsFbank", "BEATsNet", "arch_from_cfg", "convert_checkpoint", "load_state", "CFG_DEFAULTS",
           "FBANK_MEAN", "FBANK_STD"]

FBANK_MEAN, FBANK_STD = 15.41663, 6.55582

#: the original ``BEATsConfig`` defaults (applied to keys a checkpoint's ``cfg`` lacks), inference fields only
CFG_DEFAULTS: Dict[str, Any] = dict(
    input_patch_size=-1, embed_dim=512, conv_bias=False, encoder_layers=12, encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu", layer_norm_first=False,
    deep_norm=False, conv_pos=128, conv_pos_groups=16, relative_position_embedding=False, num_buckets=320,
    max_distance=1280, gru_rel_pos=False, finetuned_model=False, predictor_class=527)

#: the network's ``cfg`` buffer: these fields, in this order (activation: 0 gelu, 1 relu)
_CFG_FIELDS = tuple(CFG_DEFAULTS)
_ACTIVATIONS = ("gelu", "relu")


class BEATsFbank(KaldiFbank):
    """:class:`~audio_repr.frontends.KaldiFbank` of the waveform times ``waveform_scale`` (BEATs: ``2 ** 15``, the
    16-bit scale; exact in floating point), so that silence is clamped at ``log(float32 eps)`` as the original's."""

    def __init__(self, waveform_scale: float = 32768.0, **kwargs):
        super().__init__(**kwargs)
        self.waveform_scale = float(waveform_scale)

    def window_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return super().window_frames(padded * self.waveform_scale, start, stop)


class ConvPositionalEmbedding(nn.Module):
    """fairseq's convolutional positional embedding over ``[N, L, D]`` tokens: a grouped ``Conv1d`` (kernel ``k``,
    zero padding ``k // 2`` both sides, the last output dropped for an even ``k``) with weight normalisation over
    the kernel axis (``weight = weight_g * weight_v / ||weight_v||``, the norm per kernel position), then GELU.
    Returns the embedding (the caller adds it)."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        if dim % groups:
            raise ValueError(f"conv_pos_groups {groups} does not divide the embedding size {dim}")
        self.kernel, self.groups = int(kernel), int(groups)
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.empty(dim, dim // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.weight_v, std=math.sqrt(4.0 / (kernel * dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        w = v * (self.weight_g / v.norm(dim=(0, 1), keepdim=True))
        y = F.conv1d(x.transpose(1, 2), w, self.bias, padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2)


class _Encoder(nn.Module):
    """``encoder.*`` of the checkpoints: the positional convolution, the layers, the LayerNorm."""

    def __init__(self, dim, ffn, heads, layers, activation, layer_norm_first, deep_norm, conv_pos, conv_pos_groups,
                 relative_position_embedding, num_buckets, max_distance, gru_rel_pos):
        super().__init__()
        self.pos_conv = ConvPositionalEmbedding(dim, conv_pos, conv_pos_groups)
        alpha = deep_norm_alpha(layers) if deep_norm else 1.0
        self.layers = nn.ModuleList([
            RelPosEncoderLayer(dim, ffn, heads, layer_norm_first=layer_norm_first, deep_norm_alpha=alpha,
                               activation=activation, has_relative_attention_bias=relative_position_embedding and i == 0,
                               num_buckets=num_buckets, max_distance=max_distance, gru_rel_pos=gru_rel_pos,
                               gate_source="query")
            for i in range(layers)])
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = layer_norm_first


class _Window:
    __slots__ = ("row", "start", "count")

    def __init__(self, row: int, start: int, count: int):
        self.row, self.start, self.count = row, start, count


class BEATsNet(Backbone):
    """The BEATs network on normalised fbank ``[B, n_mels, T]`` (see the module doc). Keyword arguments are the
    original ``cfg`` fields (defaults: the released models'), plus ``n_mels`` and ``window_patches`` (the longest
    run whole, in time patches). Parameter names are the checkpoints' (``patch_embedding``, ``layer_norm``,
    ``post_extract_proj``, ``encoder.pos_conv``, ``encoder.layers.N.*``, ``encoder.layer_norm``, ``predictor``), plus
    the ``cfg`` buffer (the architecture, checked when weights are loaded)."""

    clip_pooling = "mean"            # the mean of all tokens (frames are means of equally many tokens)

    def __init__(self, input_patch_size: int = 16, embed_dim: int = 512, conv_bias: bool = False,
                 encoder_layers: int = 12, encoder_embed_dim: int = 768, encoder_ffn_embed_dim: int = 3072,
                 encoder_attention_heads: int = 12, activation_fn: str = "gelu", layer_norm_first: bool = False,
                 deep_norm: bool = True, conv_pos: int = 128, conv_pos_groups: int = 16,
                 relative_position_embedding: bool = True, num_buckets: int = 320, max_distance: int = 800,
                 gru_rel_pos: bool = True, finetuned_model: bool = False, predictor_class: int = 527,
                 n_mels: int = 128, window_patches: int = 62):
        super().__init__()
        p = int(input_patch_size)
        if p < 1:
            raise ValueError(f"input_patch_size must be >= 1, got {input_patch_size}")
        if n_mels < p:
            raise ValueError(f"{n_mels} mel bins hold no {p}x{p} patch")
        if activation_fn not in _ACTIVATIONS:
            raise ValueError(f"activation_fn {activation_fn!r} is not supported (BEATs' models use 'gelu'; "
                             f"supported: {', '.join(_ACTIVATIONS)})")
        if deep_norm and layer_norm_first:
            raise ValueError("deep_norm and layer_norm_first exclude each other (as in the original)")
        if window_patches < 1:
            raise ValueError(f"window_patches must be >= 1, got {window_patches}")
        arch = dict(input_patch_size=p, embed_dim=embed_dim, conv_bias=conv_bias, encoder_layers=encoder_layers,
                    encoder_embed_dim=encoder_embed_dim, encoder_ffn_embed_dim=encoder_ffn_embed_dim,
                    encoder_attention_heads=encoder_attention_heads, activation_fn=activation_fn,
                    layer_norm_first=layer_norm_first, deep_norm=deep_norm, conv_pos=conv_pos,
                    conv_pos_groups=conv_pos_groups, relative_position_embedding=relative_position_embedding,
                    num_buckets=num_buckets, max_distance=max_distance, gru_rel_pos=gru_rel_pos,
                    finetuned_model=finetuned_model, predictor_class=predictor_class)
        self.arch = arch
        self.patch, self.n_mels, self.f_patches = p, int(n_mels), int(n_mels) // p
        self.window_patches = int(window_patches)
        self.patch_embedding = nn.Conv2d(1, embed_dim, kernel_size=p, stride=p, bias=bool(conv_bias))
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.post_extract_proj = (nn.Linear(embed_dim, encoder_embed_dim) if embed_dim != encoder_embed_dim else None)
        self.encoder = _Encoder(encoder_embed_dim, encoder_ffn_embed_dim, encoder_attention_heads, encoder_layers,
                                activation_fn, layer_norm_first, deep_norm, conv_pos, conv_pos_groups,
                                relative_position_embedding, num_buckets, max_distance, gru_rel_pos)
        self.predictor = nn.Linear(encoder_embed_dim, predictor_class) if finetuned_model else None
        self.register_buffer("cfg", cfg_tensor(arch))

        names = ["patch_embed"] + [f"block{i + 1}" for i in range(encoder_layers)]
        self.layer_dims: Dict[str, int] = OrderedDict((n, encoder_embed_dim) for n in names)
        if finetuned_model:
            self.layer_dims["logits"] = predictor_class
        self.layer_strides: Dict[str, int] = OrderedDict((n, p) for n in self.layer_dims)
        self.min_frames = p
        # windows of `window_patches` patches; each non-last one also reads the p - 1 frames after it (never a whole
        # patch: unused), so that the last window, which takes the rest, always holds at least one patch
        self.tiling = Tiling(chunk_frames=self.window_patches * p, overlap_frames=p - 1)

    @classmethod
    def from_cfg(cls, cfg: Mapping, **kwargs) -> "BEATsNet":
        """The network of an original ``cfg`` dict (the original's defaults for absent keys)."""
        return cls(**arch_from_cfg(cfg), **kwargs)

    # ---- geometry ----------------------------------------------------------------------------------
    def out_frames(self, n: int, layer: Optional[str] = None) -> int:
        """One frame per whole patch: ``floor(n / 16)`` (the original drops a last partial patch)."""
        return n // self.patch

    def _windows(self, patches: List[int]) -> List[_Window]:
        W = self.window_patches
        return [_Window(b, s, min(W, n - s)) for b, n in enumerate(patches) for s in range(0, n, W)]

    # ---- the network ------------------------------------------------------------------------------
    def _check_cfg(self, state: Mapping, prefix: str) -> None:
        key = prefix + "cfg"
        if key not in state:
            return
        got = state[key]
        if tuple(got.shape) != tuple(self.cfg.shape):
            raise WeightsError(f"BEATs cfg of {tuple(got.shape)} values, expected {tuple(self.cfg.shape)}")
        theirs, ours = cfg_from_tensor(got), self.arch
        diff = [f"{k}={theirs[k]!r} (this model: {ours[k]!r})" for k in _CFG_FIELDS if theirs[k] != ours[k]]
        if diff:
            raise WeightsError("the checkpoint's BEATs cfg is another architecture: " + "; ".join(diff)
                               + " (BEATsNet.from_cfg builds a network for any cfg)")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._check_cfg(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _pack_windows(self, grid: torch.Tensor, wins, L: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The windows' tokens ``[N, L, D]`` from the patch grid ``[B, P, F', D]`` (time-major, zeros after each
        window's own), and the padding mask ``[N, L]`` (True at padding; ``None`` when every row is one full
        window)."""
        B, P, Fp, D = grid.shape
        if len(wins) == B and all(w.count == P for w in wins):
            return grid.reshape(B, L, D), None
        h = grid.new_zeros(len(wins), L, D)
        pad = ~length_mask(torch.tensor([Fp * w.count for w in wins], device=grid.device), L)
        for i, w in enumerate(wins):
            h[i, : Fp * w.count] = grid[w.row, w.start: w.start + w.count].reshape(-1, D)
        return h, pad

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> "OrderedDict[str, torch.Tensor]":
        """``x [B, n_mels, T]`` (normalised fbank; frames past a row's length are never read) and the rows' frame
        counts -> ``{layer: [B, floor(T_max / 16), D]}``; steps past a row's own ``floor(length / 16)`` are not
        meaningful."""
        if x.ndim != 3 or x.shape[1] != self.n_mels:
            raise ValueError(f"expected normalised fbank [B, {self.n_mels}, T], got shape {tuple(x.shape)}")
        B, _, T = x.shape
        p, Fp = self.patch, self.f_patches
        lens = [int(v) for v in lengths.tolist()] if lengths is not None else [T] * B
        patches = [min(n, T) // p for n in lens]
        if min(patches) < 1:
            raise ValueError(f"a row of {min(lens)} frames holds no {p}-frame patch (BEATs needs >= {p} frames)")
        P = max(patches)
        dev = x.device
        # the original's image is [T, mel] (time first): patch (t, f) is token t * F' + f, time-major
        img = x.transpose(1, 2)[:, None, : P * p, : Fp * p].to(self.patch_embedding.weight.dtype)
        grid = self.layer_norm(self.patch_embedding(img).permute(0, 2, 3, 1))     # [B, P, F', E]
        if self.post_extract_proj is not None:
            grid = self.post_extract_proj(grid)

        # each window: its time patches' tokens in the original order, then zeros (the convolution's own padding)
        wins = self._windows(patches)
        N, L = len(wins), Fp * max(w.count for w in wins)
        h, pad = self._pack_windows(grid, wins, L)
        h = h + self.encoder.pos_conv(h)
        if not self.encoder.layer_norm_first:
            h = self.encoder.layer_norm(h)

        # frames: for each row and time patch, the F' tokens of that step in its window
        idx = torch.zeros(B, P, Fp, dtype=torch.long)
        for i, w in enumerate(wins):
            idx[w.row, w.start: w.start + w.count] = i * L + torch.arange(Fp * w.count).view(w.count, Fp)
        for b, n in enumerate(patches):               # steps past a row's end: its last step (not meaningful)
            idx[b, n:] = idx[b, n - 1]
        idx = idx.to(dev).reshape(-1)

        def frames(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(N * L, -1)[idx].reshape(B, P, Fp, -1).mean(dim=2)

        mask = pad
        outs: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        outs["patch_embed"] = frames(h)
        pb = None
        last = len(self.encoder.layers) - 1
        for i, layer in enumerate(self.encoder.layers):
            h, pb = layer(h, mask, pb)
            if i == last and self.encoder.layer_norm_first:
                h = self.encoder.layer_norm(h)         # the pre-norm encoder's final LayerNorm: the original output
            outs[f"block{i + 1}"] = frames(h)
        if self.predictor is not None:
            outs["logits"] = frames(self.predictor(h))
        return outs


# ---- cfg ---------------------------------------------------------------------------------------------------
def arch_from_cfg(cfg: Mapping) -> Dict[str, Any]:
    """An original checkpoint's ``cfg`` -> :class:`BEATsNet` keyword arguments: the inference fields, the
    original ``BEATsConfig`` defaults for absent ones (training-only fields — dropouts, layer drop, gradient decay
    — are ignored)."""
    if not isinstance(cfg, Mapping):
        raise WeightsError(f"BEATs cfg must be a dict, got {type(cfg).__name__}")
    out = {k: cfg.get(k, v) for k, v in CFG_DEFAULTS.items()}
    for k in ("conv_bias", "layer_norm_first", "deep_norm", "relative_position_embedding", "gru_rel_pos",
              "finetuned_model"):
        out[k] = bool(out[k])
    for k in ("input_patch_size", "embed_dim", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
              "encoder_attention_heads", "conv_pos", "conv_pos_groups", "num_buckets", "max_distance",
              "predictor_class"):
        out[k] = int(out[k])
    if out["activation_fn"] not in _ACTIVATIONS:
        raise WeightsError(f"BEATs cfg activation_fn {out['activation_fn']!r} is not supported "
                           f"({', '.join(_ACTIVATIONS)})")
    return out


def cfg_tensor(arch: Mapping) -> torch.Tensor:
    """The architecture as the ``cfg`` buffer (int64, so that casting the network to another float type leaves it
    alone; the fields of ``CFG_DEFAULTS`` in order, booleans as 0/1, the activation as its index)."""
    vals = [_ACTIVATIONS.index(arch[k]) if k == "activation_fn" else int(arch[k]) for k in _CFG_FIELDS]
    return torch.tensor(vals, dtype=torch.int64)


def cfg_from_tensor(t: torch.Tensor) -> Dict[str, Any]:
    vals = [int(round(float(v))) for v in t.detach().cpu().tolist()]
    if not 0 <= vals[_CFG_FIELDS.index("activation_fn")] < len(_ACTIVATIONS):
        raise WeightsError(f"BEATs cfg buffer with an unknown activation index: {vals}")
    out: Dict[str, Any] = {}
    for k, v in zip(_CFG_FIELDS, vals):
        out[k] = _ACTIVATIONS[v] if k == "activation_fn" else bool(v) if isinstance(CFG_DEFAULTS[k], bool) else v
    return out


# ---- checkpoints ----------------------------------------------------------------------------------------------
_DATA = Path(__file__).resolve().parent.parent / "data"


@lru_cache(maxsize=None)
def _audioset_ids() -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(ontology ids, display names) of ``audio_repr/data/audioset_labels.csv``, in its order."""
    with open(_DATA / "audioset_labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return tuple(r[1] for r in rows), tuple(r[2] for r in rows)


def _label_order(label_dict: Mapping, n: int) -> torch.Tensor:
    """For each AudioSet class ``j`` (the csv's order), the predictor row of the checkpoint that scores it."""
    mids, names = _audioset_ids()
    if n != len(mids):
        raise WeightsError(f"the fine-tuned predictor has {n} classes but AudioSet has {len(mids)}")
    where = {m: j for j, m in enumerate(mids)}
    where.update({name: j for j, name in enumerate(names)})
    order = [-1] * n
    for i, label in label_dict.items():
        j = where.get(str(label))
        if j is None or not 0 <= int(i) < n:
            raise WeightsError(f"label_dict entry {i!r}: {label!r} is not an AudioSet class of this predictor")
        order[j] = int(i)
    if sorted(order) != list(range(n)):
        raise WeightsError("the checkpoint's label_dict does not map each predictor output to one AudioSet class")
    return torch.tensor(order)


def convert_checkpoint(obj: Any) -> Dict[str, torch.Tensor]:
    """An original BEATs checkpoint (``{'cfg', 'model'[, 'label_dict']}``) -> the state dict of :class:`BEATsNet`,
    with its ``cfg`` buffer."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"expected a BEATs checkpoint dict, got {type(obj).__name__}")
    state = unwrap_state_dict(obj, ("model",))
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    if not any(k.startswith("encoder.layers.") for k in tensors):
        raise WeightsError("not a BEATs checkpoint: no encoder.layers.* tensors (a BEATs tokenizer or another "
                           "model's checkpoint?)")
    out: Dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        if k.startswith("encoder.layers.") and k.endswith(".self_attn.relative_attention_bias.weight") \
                and not k.startswith("encoder.layers.0."):
            continue                                   # layer 0's shared embedding, repeated under every layer
        out[k.replace("encoder.pos_conv.0.", "encoder.pos_conv.")] = v
    cfg = obj.get("cfg") if "model" in obj else None
    if not isinstance(cfg, Mapping):
        raise WeightsError("a BEATs checkpoint holds 'cfg' (the architecture) beside 'model', as the original "
                           "trainer saves it; this one has no 'cfg'")
    out["cfg"] = cfg_tensor(arch_from_cfg(cfg))
    labels = obj.get("label_dict") if "model" in obj else None
    if labels and "predictor.weight" in out:
        order = _label_order(labels, out["predictor.weight"].shape[0])
        out["predictor.weight"] = out["predictor.weight"][order]
        if "predictor.bias" in out:
            out["predictor.bias"] = out["predictor.bias"][order]
    return out


def load_state(path) -> Dict[str, torch.Tensor]:
    """A BEATs checkpoint file -> :class:`BEATsNet`'s state dict (see :func:`convert_checkpoint`)."""
    return convert_checkpoint(load_checkpoint(path))


register_family(Family("beats", build_frontend=BEATsFbank, build_network=BEATsNet, load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
_LICENCE = "MIT (https://github.com/microsoft/unilm/blob/master/LICENSE; code and released checkpoints)"
_CITE = ("S. Chen, Y. Wu, C. Wang, S. Liu, D. Tompkins, Z. Chen, F. Wei, \"BEATs: Audio Pre-Training with Acoustic "
         "Tokenizers\", ICML 2023, PMLR 202, pp. 5178-5193.")
FRONTEND = dict(sample_rate=16000, frame_length_ms=25.0, frame_shift_ms=10.0, n_mels=128, low_freq=20.0,
                high_freq=0.0, preemphasis=0.97, remove_dc_offset=True, window="povey", round_to_power_of_two=True,
                subtract_clip_mean=False, waveform_scale=32768.0)
#: the released models' cfg (BEATs_iter3*.pt): 12 deep-norm layers, 768-d, gated relative positions
ARCH = dict(input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=12, encoder_embed_dim=768,
            encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu", layer_norm_first=False,
            deep_norm=True, conv_pos=128, conv_pos_groups=16, relative_position_embedding=True, num_buckets=320,
            max_distance=800, gru_rel_pos=True, finetuned_model=False, predictor_class=527, n_mels=128,
            window_patches=62)
_DOWNLOAD_NOTE = ("; the unilm beats README's SAS download links have answered 403 since 2024 (unilm #1492): get the "
                  ".pt from its OneDrive link (the manifest's readme_url) and pass weights=")

for _name, _file, _what, _ft, _scores in [
    ("beats-iter3", "BEATs_iter3.pt", "BEATs iter3 (self-supervised on AudioSet-2M, tokenizer self-distilled from "
     "iter2)", False,
     {"AudioSet mAP (fine-tuned)": 48.0, "AS-20K mAP (fine-tuned)": 38.3, "ESC-50 (fine-tuned)": 95.6,
      "KS1 (fine-tuned)": 97.7, "KS2 (fine-tuned)": 98.3, "ER (fine-tuned)": 64.5}),
    ("beats-iter3-plus-as2m", "BEATs_iter3_plus_AS2M.pt", "BEATs iter3+ (AS2M) (self-supervised on AudioSet-2M, "
     "tokenizer from iter2 fine-tuned on AS-2M)", False,
     {"AudioSet mAP (fine-tuned)": 48.6, "AS-20K mAP (fine-tuned)": 41.8, "ESC-50 (fine-tuned)": 97.1}),
    ("beats-iter3-plus-as2m-ft", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt", "BEATs iter3+ (AS2M) fine-tuned "
     "on AudioSet-2M (cpt2), 527 AudioSet logits", True,
     {"AudioSet mAP (iter3+ AS2M fine-tuned, paper)": 48.6}),
]:
    register(ModelCard(
        name=_name, family="beats",
        description=f"{_what}; 128 Kaldi mels, 16x16 patches, 768-d frames every 160 ms" + _DOWNLOAD_NOTE,
        sample_rate=16000, frontend=FRONTEND, arch=dict(ARCH, finetuned_model=_ft),
        normalisation=Normalisation(FBANK_MEAN, FBANK_STD, scale=2.0),   # (x - 15.41663) / (2 * 6.55582)
        weights=_file, default_layer="block12", fusion_layers=("block7", "block12"),
        licence=_LICENCE, citation=_CITE, paper="https://arxiv.org/abs/2212.09058",
        published=_scores, labels="audioset" if _ft else None,
        cpu_batch_frames=16384,          # on a CPU 16 ~1000-frame windows per batch, more of shorter clips (issue 29)
    ))
