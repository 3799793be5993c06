"""The wav2vec 2.0 family on the raw waveform: wav2vec 2.0 (Baevski et al., NeurIPS 2020), HuBERT (Hsu et al.,
TASLP 2021), data2vec-audio (Baevski et al., ICML 2022) and WavLM (Chen et al., JSTSP 2022), read from their
Hugging Face checkpoints.

Network (parameter names as transformers' ``Wav2Vec2Model`` / ``HubertModel`` / ``Data2VecAudioModel`` /
``WavLMModel``, so their state dicts load after dropping a task prefix and heads):

* **feature encoder** (``feature_extractor.conv_layers``): 7 convolutions over the samples (512 channels,
  kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2: one frame every 320 samples = 20 ms, reading 400 samples),
  each followed by GELU. ``feat_extract_norm="group"`` (the "base" models): a GroupNorm with one group per
  channel after the first convolution only, i.e. each channel normalised over *time*; ``"layer"`` (the
  "large" models, data2vec-audio): a LayerNorm over channels after every convolution (usually with
  ``conv_bias``);
* **feature projection**: LayerNorm (optional for HuBERT: ``feat_proj_layer_norm``) and a linear layer to the
  model width;
* **positional convolution** (``encoder.pos_conv_embed``): a grouped convolution (kernel 128, 16 groups,
  weight-normalised in the checkpoints; the even kernel's extra last step dropped) and GELU, added to the
  frames; data2vec-audio instead stacks ``pos_conv_layers`` convolutions (kernel 19), each with a LayerNorm
  without parameters and GELU;
* **transformer**: ``do_stable_layer_norm=False`` (base): LayerNorm after adding the positions, then
  post-norm layers (``x = LN(x + attn(x)); x = LN(x + ffn(x))``); ``True`` (large): pre-norm layers
  (``x = x + attn(LN(x)); x = x + ffn(LN(x))``) and a final LayerNorm. WavLM's attention adds a gated
  relative position bias (320 log-spaced buckets up to 800 frames, learned in the first layer, gated per
  layer and head by the query frame's own features).

Layers (every one 20 ms per frame; a frame's timestamp is the centre of its 400 samples, ``12.5 + 20 i`` ms):
``features`` (the feature encoder's 512-d output), ``layer0`` (the transformer's input: the projected frames
plus the positional convolution, after the base models' LayerNorm) and ``layer1`` .. ``layerN`` (each
transformer layer's output; for the pre-norm models ``layerN`` is after the final LayerNorm). ``layer0`` ..
``layerN`` are transformers' ``hidden_states`` and ``layerN`` its ``last_hidden_state``. The clip vector is
the mean over the clip's own frames. ``layers="fusion"``: the middle and the last layer (``layer6`` and
``layer12`` for 12 layers; ``layer12`` and ``layer24`` for 24).

Batches are exact: a clip gives the same numbers alone or next to any other (up to float32 reordering).
transformers' ``Wav2Vec2FeatureExtractor`` returns no attention mask for the GroupNorm models (wav2vec2-base,
hubert-base-ls960), so there a padded batch changes every clip's output: the GroupNorm's statistics run
over the padding. Here they run over each clip's own convolution outputs (masked mean and variance per
row and channel, the statistics ``nn.GroupNorm`` computes on the clip alone). Past the feature encoder every
model zeroes the frames past each clip's end before each positional convolution (as the clip alone sees
zero padding there: data2vec-audio's stacked convolutions would otherwise read the padding's outputs) and
masks attention to each clip's own frames.

Input: the waveform at 16 kHz (:class:`~audio_repr.frontends.waveform.Waveform`), per clip zero-mean and
unit-variance where the checkpoint's preprocessor says ``do_normalize``. Clips up to 30 s are computed whole
(transformers' numbers); longer audio is cut into pieces of 30 s, each read with 5 s of real audio on both
sides (its outputs dropped): memory follows the piece, not the file. Attention is global, so a frame of
long audio is not exactly what a whole-file forward would give (no implementation can run hours of audio
through full attention); within 30 s it is.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..frontends.waveform import Waveform
from ..layers.relpos import GatedRelPosAttention
from ..registry import ModelCard, Normalisation, register
from ..weights import WeightsError, load_checkpoint, unwrap_state_dict
from . import register_family
from .base import Backbone, Family, Tiling, length_mask

__all__ = ["Wav2Vec2Net", "convert_state_dict", "load_state", "conv_out_length", "masked_group_norm"]

CONV_DIM = (512,) * 7
CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)


def conv_out_length(n: int, kernels: Sequence[int] = CONV_KERNEL, strides: Sequence[int] = CONV_STRIDE) -> int:
    """Frames the feature encoder gives for ``n`` samples (0 when shorter than its 400-sample window)."""
    for k, s in zip(kernels, strides):
        n = (n - k) // s + 1 if n >= k else 0
    return max(n, 0)


def masked_group_norm(x: torch.Tensor, lengths: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """``nn.GroupNorm(C, C)`` (one group per channel: each channel normalised over time) of ``x [B, C, T]``
    with each row's statistics over its first ``lengths[b]`` steps only (biased variance, ``norm.eps``)."""
    B, C, T = x.shape
    valid = length_mask(lengths, T).to(x.dtype)[:, None, :]   # [B, 1, T]
    count = lengths.clamp(min=1).to(x.dtype)[:, None, None]
    mean = (x * valid).sum(dim=-1, keepdim=True) / count
    var = ((x - mean).square() * valid).sum(dim=-1, keepdim=True) / count
    y = (x - mean) * torch.rsqrt(var + norm.eps)
    return y * norm.weight[None, :, None] + norm.bias[None, :, None]


# ---- the network ---------------------------------------------------------------------------------
class ConvLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, s: int, bias: bool, norm: Optional[str]):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, k, stride=s, bias=bias)
        self.norm_kind = norm
        if norm == "group":
            self.layer_norm = nn.GroupNorm(c_out, c_out, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(c_out, elementwise_affine=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_kind == "group":
            if bool((lengths == x.shape[-1]).all()):      # no padding in the batch: the plain (fused) GroupNorm
                x = self.layer_norm(x)
            else:
                x = masked_group_norm(x, lengths, self.layer_norm)
        elif self.norm_kind == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class FeatureEncoder(nn.Module):
    def __init__(self, norm: str, bias: bool, dims=CONV_DIM, kernels=CONV_KERNEL, strides=CONV_STRIDE):
        super().__init__()
        if norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {norm!r}")
        self.kernels, self.strides = tuple(kernels), tuple(strides)
        ins = (1,) + tuple(dims[:-1])
        self.conv_layers = nn.ModuleList([
            ConvLayer(ins[i], dims[i], kernels[i], strides[i], bias,
                      norm if (norm == "layer" or i == 0) else None) for i in range(len(dims))])

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``wav [B, N]``, samples per row -> ``[B, C, T]`` (steps past each row's own are not meaningful)."""
        x = wav[:, None]
        n = lengths
        for layer, k, s in zip(self.conv_layers, self.kernels, self.strides):
            n = torch.div(n - k, s, rounding_mode="floor") + 1
            x = layer(x, n.clamp(min=0))
        return x


class FeatureProjection(nn.Module):
    def __init__(self, c: int, dim: int, layer_norm: bool, eps: float):
        super().__init__()
        if layer_norm:
            self.layer_norm = nn.LayerNorm(c, eps=eps)
        else:
            self.register_module("layer_norm", None)
        self.projection = nn.Linear(c, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.layer_norm(x) if self.layer_norm is not None else x)


class PosConv(nn.Module):
    """wav2vec 2.0's positional convolution: grouped conv (weight norm folded into ``weight``), same-length, GELU."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:   # [B, T, D], [B, T, 1]
        y = self.conv((x * valid).transpose(1, 2))
        if self.remove:
            y = y[..., : -self.remove]
        return F.gelu(y).transpose(1, 2)


class Data2VecPosConvLayer(nn.Module):
    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        self.remove = 1 if kernel % 2 == 0 else 0
        self.layer_norm = nn.LayerNorm(dim, elementwise_affine=False)


class Data2VecPosConv(nn.Module):
    """data2vec-audio's positional convolutions: ``n`` x (conv, LayerNorm without parameters, GELU); the frames
    past each clip's end are zeroed before every one (the clip alone sees zero padding there)."""

    def __init__(self, dim: int, kernel: int, groups: int, n: int):
        super().__init__()
        self.layers = nn.ModuleList([Data2VecPosConvLayer(dim, kernel, groups) for _ in range(n)])

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            y = layer.conv((x * valid).transpose(1, 2))
            if layer.remove:
                y = y[..., : -layer.remove]
            x = F.gelu(layer.layer_norm(y.transpose(1, 2)))
        return x


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (transformers' names) and a key padding mask
    (``True``: the clip's own frame)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, bias=None) -> Tuple[torch.Tensor, None]:
        B, T, D = x.shape
        H, hd = self.heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, H, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, H, hd).transpose(1, 2)
        # no mask when no key is padding (a clip alone): SDPA may then use its fused kernels, as transformers does
        mask = None if bool(key_mask.all()) else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D)), None


class WavLMAttention(GatedRelPosAttention):
    """WavLM's attention: the shared gated relative-position attention (:mod:`audio_repr.layers.relpos`) with
    the gate computed from the layer's input, called with a key mask that is ``True`` at the clip's own frames."""

    def __init__(self, dim: int, heads: int, num_buckets: int, max_distance: int, has_rel_embed: bool):
        super().__init__(dim, heads, has_relative_attention_bias=has_rel_embed, num_buckets=num_buckets,
                         max_distance=max_distance, gru_rel_pos=True, gate_source="input")

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, bias=None):
        return super().forward(x, ~key_mask, bias)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.output_dense = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float, pre_norm: bool,
                 relpos: Optional[Mapping] = None, has_rel_embed: bool = False):
        super().__init__()
        self.pre_norm = pre_norm
        if relpos:
            self.attention = WavLMAttention(dim, heads, relpos["num_buckets"], relpos["max_distance"], has_rel_embed)
        else:
            self.attention = Attention(dim, heads)
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.feed_forward = FeedForward(dim, hidden)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, bias: Optional[torch.Tensor] = None):
        """-> (output, the position bias for the next layer: WavLM's first layer's, ungated; else None)."""
        if self.pre_norm:
            a, bias = self.attention(self.layer_norm(x), key_mask, bias)
            x = x + a
            return x + self.feed_forward(self.final_layer_norm(x)), bias
        a, bias = self.attention(x, key_mask, bias)
        x = self.layer_norm(x + a)
        return self.final_layer_norm(x + self.feed_forward(x)), bias


class Encoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, hidden: int, eps: float, pre_norm: bool,
                 pos_conv_kernel: int, pos_conv_groups: int, pos_conv_layers: int, relpos: Optional[Mapping]):
        super().__init__()
        if pos_conv_layers:
            self.pos_conv_embed = Data2VecPosConv(dim, pos_conv_kernel, pos_conv_groups, pos_conv_layers)
        else:
            self.pos_conv_embed = PosConv(dim, pos_conv_kernel, pos_conv_groups)
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.layers = nn.ModuleList([EncoderLayer(dim, heads, hidden, eps, pre_norm, relpos, has_rel_embed=i == 0)
                                     for i in range(depth)])


class Wav2Vec2Net(Backbone):
    """The wav2vec 2.0 family's network on waveforms ``[B, 1, N]`` (see the module doc)."""

    clip_pooling = "mean"

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, mlp_dim: int = 3072,
                 feat_extract_norm: str = "group", conv_bias: bool = False, feat_proj_layer_norm: bool = True,
                 stable_layer_norm: bool = False, layer_norm_eps: float = 1e-5, pos_conv_kernel: int = 128,
                 pos_conv_groups: int = 16, pos_conv_layers: int = 0, relpos: Optional[Mapping] = None,
                 conv_dim: Sequence[int] = CONV_DIM, conv_kernel: Sequence[int] = CONV_KERNEL,
                 conv_stride: Sequence[int] = CONV_STRIDE, chunk_seconds: float = 30.0, context_seconds: float = 5.0,
                 sample_rate: int = 16000):
        super().__init__()
        self.feature_extractor = FeatureEncoder(feat_extract_norm, conv_bias, conv_dim, conv_kernel, conv_stride)
        self.feature_projection = FeatureProjection(conv_dim[-1], dim, feat_proj_layer_norm, layer_norm_eps)
        self.encoder = Encoder(dim, depth, heads, mlp_dim, layer_norm_eps, stable_layer_norm, pos_conv_kernel,
                               pos_conv_groups, pos_conv_layers, relpos)
        self.stable_layer_norm = stable_layer_norm
        self.relpos = dict(relpos) if relpos else None
        stride, window = 1, 1
        for k, s in zip(conv_kernel, conv_stride):
            window += (k - 1) * stride
            stride *= s
        self.stride, self.window = stride, window                       # 320 and 400 samples
        names = ["features"] + [f"layer{i}" for i in range(depth + 1)]
        self.layer_dims: Dict[str, int] = OrderedDict((n, conv_dim[-1] if n == "features" else dim) for n in names)
        self.layer_strides: Dict[str, int] = OrderedDict((n, stride) for n in names)
        self.min_frames = window
        chunk = int(round(chunk_seconds * sample_rate)) // stride * stride
        context = int(round(context_seconds * sample_rate)) // stride * stride
        self.tiling = Tiling(chunk_frames=chunk, context_frames=context)

    @property
    def layer_windows(self) -> Dict[str, int]:
        return {n: self.window for n in self.layer_strides}

    def out_frames(self, n: int, layer: Optional[str] = None) -> int:
        fe = self.feature_extractor
        return conv_out_length(int(n), fe.kernels, fe.strides)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"expected waveforms [B, 1, N], got shape {tuple(x.shape)}")
        B, _, N = x.shape
        if lengths is None:
            lengths = torch.full((B,), N, dtype=torch.long, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.long)
        fe = self.feature_extractor
        feats = fe(x[:, 0], lengths).transpose(1, 2)                              # [B, T, C]
        T = feats.shape[1]
        n_out = torch.tensor([conv_out_length(int(n), fe.kernels, fe.strides) for n in lengths.tolist()],
                             device=x.device)
        key_mask = length_mask(n_out, T)                                          # [B, T]
        valid = key_mask[..., None].to(feats.dtype)
        outs: Dict[str, torch.Tensor] = OrderedDict(features=feats)
        h = self.feature_projection(feats)
        enc = self.encoder
        h = h * valid + enc.pos_conv_embed(h, valid)
        if not self.stable_layer_norm:
            h = enc.layer_norm(h)
        outs["layer0"] = h
        bias = None
        last = len(enc.layers)
        for i, layer in enumerate(enc.layers, start=1):
            h, bias = layer(h, key_mask, bias)
            outs[f"layer{i}"] = enc.layer_norm(h) if (self.stable_layer_norm and i == last) else h
        return outs


# ---- checkpoints ----------------------------------------------------------------------------------
_PREFIXES = ("wav2vec2.", "hubert.", "wavlm.", "data2vec_audio.", "model.")
_KEEP = ("feature_extractor.", "feature_projection.", "encoder.")
# transformers' WavLM names -> the shared relative-position attention's (unilm's)
_WAVLM_NAMES = ((".attention.gru_rel_pos_const", ".attention.grep_a"),
                (".attention.gru_rel_pos_linear.", ".attention.grep_linear."),
                (".attention.rel_attn_embed.", ".attention.relative_attention_bias."))


def convert_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """A transformers checkpoint of the family (``Wav2Vec2Model``/``ForPreTraining``/``ForCTC``..., ``HubertModel``,
    ``Data2VecAudioModel``, ``WavLMModel``..., saved or in memory) -> our state dict: the task prefix
    (``wav2vec2.``, ``hubert.``, ``data2vec_audio.``, ``wavlm.``) stripped, heads, quantiser and
    ``masked_spec_embed`` dropped, and the positional convolution's weight norm (``weight_g``/``weight_v``,
    or ``parametrizations.weight.original0/1``) folded into one weight as ``torch._weight_norm(v, g, 2)``."""
    obj = unwrap_state_dict(obj)
    out: Dict[str, torch.Tensor] = {}
    norm: Dict[str, Dict[str, torch.Tensor]] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            continue
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        if not k.startswith(_KEEP):
            continue
        for a, b in _WAVLM_NAMES:
            k = k.replace(a, b)
        for g_name, v_name in ((".weight_g", ".weight_v"),
                               (".parametrizations.weight.original0", ".parametrizations.weight.original1")):
            if k.endswith(g_name):
                norm.setdefault(k[: -len(g_name)], {})["g"] = v
                break
            if k.endswith(v_name):
                norm.setdefault(k[: -len(v_name)], {})["v"] = v
                break
        else:
            out[k] = v
    for base, gv in norm.items():
        if set(gv) != {"g", "v"}:
            raise WeightsError(f"{base}: weight norm incomplete in the checkpoint (found {sorted(gv)})")
        out[base + ".weight"] = torch._weight_norm(gv["v"].float(), gv["g"].float(), 2).to(gv["v"].dtype)
    return out


def read_config(folder: Path) -> Optional[dict]:
    cfg = folder / "config.json"
    if not cfg.is_file():
        return None
    with open(cfg, encoding="utf-8") as f:
        return json.load(f)


def arch_from_config(cfg: Mapping) -> dict:
    """Our network's arguments from a transformers ``config.json`` of the family."""
    mt = cfg.get("model_type", "wav2vec2")
    arch = dict(dim=cfg["hidden_size"], depth=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
                mlp_dim=cfg["intermediate_size"], feat_extract_norm=cfg.get("feat_extract_norm", "layer"),
                conv_bias=cfg.get("conv_bias", False), feat_proj_layer_norm=cfg.get("feat_proj_layer_norm", True),
                stable_layer_norm=cfg.get("do_stable_layer_norm", False),
                layer_norm_eps=cfg.get("layer_norm_eps", 1e-5),
                pos_conv_groups=cfg.get("num_conv_pos_embedding_groups", 16),
                conv_dim=tuple(cfg.get("conv_dim", CONV_DIM)), conv_kernel=tuple(cfg.get("conv_kernel", CONV_KERNEL)),
                conv_stride=tuple(cfg.get("conv_stride", CONV_STRIDE)))
    if mt == "data2vec-audio":
        arch.update(feat_extract_norm="layer", pos_conv_kernel=cfg.get("conv_pos_kernel_size", 19),
                    pos_conv_layers=cfg.get("num_conv_pos_embeddings", 5))
    else:
        arch.update(pos_conv_kernel=cfg.get("num_conv_pos_embeddings", 128))
    if mt != "hubert":
        arch["feat_proj_layer_norm"] = True
    if mt == "wavlm":
        arch["relpos"] = dict(num_buckets=cfg.get("num_buckets", 320), max_distance=cfg.get("max_bucket_distance", 800))
    if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("feat_extract_activation", "gelu") != "gelu":
        raise WeightsError(f"only GELU activations are supported (config: hidden_act={cfg.get('hidden_act')!r}, "
                           f"feat_extract_activation={cfg.get('feat_extract_activation')!r})")
    return arch


def _checkpoint_files(path: Path) -> List[Path]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return [path / name]
    shards = sorted(path.glob("model-*.safetensors")) or sorted(path.glob("pytorch_model-*.bin"))
    if not shards:
        raise WeightsError(f"{path}: no model.safetensors or pytorch_model.bin in this folder "
                           "(expected a transformers save_pretrained folder or a checkpoint file)")
    return shards


def load_hf_folder(path, convert, check_arch=None) -> Dict[str, torch.Tensor]:
    """A transformers ``save_pretrained`` folder (its ``config.json`` checked by ``check_arch`` when given) or a
    checkpoint file -> ``convert`` of its state dict (shards merged)."""
    path = Path(path)
    if not path.is_dir():
        return convert(load_checkpoint(path))
    cfg = read_config(path)
    if cfg is not None and check_arch is not None:
        check_arch(cfg, path)
    state: Dict[str, torch.Tensor] = {}
    for f in _checkpoint_files(path):
        state.update(load_checkpoint(f))
    return convert(state)


_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")


def _check_config(cfg: Mapping, path) -> None:
    mt = cfg.get("model_type")
    if mt is not None and mt not in _MODEL_TYPES:
        raise WeightsError(f"{path}: config.json is a {mt!r} model, not one of the wav2vec 2.0 family "
                           f"({', '.join(_MODEL_TYPES)})")


def load_state(path) -> Dict[str, torch.Tensor]:
    """A checkpoint file (``model.safetensors``, ``pytorch_model.bin``) or a ``save_pretrained`` folder -> our
    state dict (a folder's ``config.json``, when present, must be of the family: another model is refused
    before its tensors are read)."""
    return load_hf_folder(path, convert_state_dict, _check_config)


register_family(Family("wav2vec2", build_frontend=Waveform, build_network=Wav2Vec2Net, load_state=load_state))


# ---- the cards -----------------------------------------------------------------------------------
_APACHE = "Apache-2.0 (the Hugging Face repository's licence; fairseq's code and weights: MIT)"
_W2V_CITE = ("A. Baevski, H. Zhou, A. Mohamed, M. Auli, \"wav2vec 2.0: A Framework for Self-Supervised Learning of "
             "Speech Representations\", NeurIPS 2020.")
_HUBERT_CITE = ("W.-N. Hsu, B. Bolte, Y.-H. H. Tsai, K. Lakhotia, R. Salakhutdinov, A. Mohamed, \"HuBERT: "
                "Self-Supervised Speech Representation Learning by Masked Prediction of Hidden Units\", IEEE/ACM "
                "TASLP 29, 2021, pp. 3451-3460.")
_D2V_CITE = ("A. Baevski, W.-N. Hsu, Q. Xu, A. Babu, J. Gu, M. Auli, \"data2vec: A General Framework for "
             "Self-supervised Learning in Speech, Vision and Language\", ICML 2022.")
_WAVLM_CITE = ("S. Chen, C. Wang, Z. Chen, Y. Wu, S. Liu, Z. Chen, J. Li, N. Kanda, T. Yoshioka, X. Xiao, J. Wu, "
               "L. Zhou, S. Ren, Y. Qian, Y. Qian, J. Wu, M. Zeng, X. Yu, F. Wei, \"WavLM: Large-Scale "
               "Self-Supervised Pre-Training for Full Stack Speech Processing\", IEEE JSTSP 16(6), 2022, "
               "pp. 1505-1518.")
_WAVLM_LICENCE = ("MIT (microsoft/unilm's licence, which the Hugging Face repository's card points to; the "
                  "repository itself carries no licence tag)")
_RELPOS = dict(num_buckets=320, max_distance=800)


def _card(name, description, weights, arch, normalize, licence, citation, paper, published=None):
    depth = arch.get("depth", 12)
    return ModelCard(
        name=name, family="wav2vec2", description=description, sample_rate=16000,
        frontend=dict(sample_rate=16000, normalize=normalize), arch=arch,
        normalisation=Normalisation(0.0, 1.0),        # the samples as they are (per-clip normalising: the front end)
        default_layer=f"layer{depth}", fusion_layers=(f"layer{depth // 2}", f"layer{depth}"), weights=weights,
        licence=licence, citation=citation, paper=paper, resampler="sinc_hann",
        cpu_batch_size=4, cpu_batch_frames=160 * 16000, published=published or {})


_BASE = dict(dim=768, depth=12, heads=12, mlp_dim=3072)
_LARGE = dict(dim=1024, depth=24, heads=16, mlp_dim=4096, feat_extract_norm="layer", conv_bias=True,
              stable_layer_norm=True)

register(_card(
    "wav2vec2-base", "wav2vec 2.0 Base (LibriSpeech 960 h, self-supervised), 768-d frames every 20 ms, 12 layers",
    "facebook--wav2vec2-base.bin", dict(_BASE), True, _APACHE, _W2V_CITE, "https://arxiv.org/abs/2006.11477",
    published={"SUPERB PR PER": 5.74, "SUPERB KS acc": 96.23, "SUPERB IC acc": 92.35, "SUPERB SID acc": 75.18,
               "SUPERB ER acc": 63.43, "SUPERB ASR WER": 6.43}))
register(_card(
    "hubert-base-ls960", "HuBERT Base (LibriSpeech 960 h, self-supervised), 768-d frames every 20 ms, 12 layers",
    "facebook--hubert-base-ls960.bin", dict(_BASE), True, _APACHE, _HUBERT_CITE, "https://arxiv.org/abs/2106.07447",
    published={"SUPERB PR PER": 5.41, "SUPERB KS acc": 96.30, "SUPERB IC acc": 98.34, "SUPERB SID acc": 81.42,
               "SUPERB ER acc": 64.92, "SUPERB ASR WER": 6.42}))
register(_card(
    "hubert-large-ll60k", "HuBERT Large (Libri-Light 60k h, self-supervised), 1024-d frames every 20 ms, 24 layers",
    "facebook--hubert-large-ll60k.bin", dict(_LARGE), True, _APACHE, _HUBERT_CITE,
    "https://arxiv.org/abs/2106.07447",
    published={"SUPERB PR PER": 3.53, "SUPERB KS acc": 95.29, "SUPERB IC acc": 98.76, "SUPERB SID acc": 90.33,
               "SUPERB ER acc": 67.62, "SUPERB ASR WER": 3.62}))
register(_card(
    "data2vec-audio-base", "data2vec-audio Base (LibriSpeech 960 h, self-supervised), 768-d frames every 20 ms, "
    "12 layers", "facebook--data2vec-audio-base.bin",
    dict(_BASE, feat_extract_norm="layer", conv_bias=False, pos_conv_kernel=19, pos_conv_layers=5), True, _APACHE,
    _D2V_CITE, "https://arxiv.org/abs/2202.03555"))
register(_card(
    "wavlm-base-plus", "WavLM Base+ (94k h: Libri-Light, GigaSpeech, VoxPopuli; self-supervised), 768-d frames "
    "every 20 ms, 12 layers with gated relative position bias", "microsoft--wavlm-base-plus.bin",
    dict(_BASE, relpos=_RELPOS), False, _WAVLM_LICENCE, _WAVLM_CITE, "https://arxiv.org/abs/2110.13900",
    published={"SUPERB PR PER": 3.92, "SUPERB KS acc": 97.37, "SUPERB IC acc": 99.00, "SUPERB SID acc": 89.42,
               "SUPERB ER acc": 68.65, "SUPERB ASR WER": 5.59}))
register(_card(
    "wavlm-large", "WavLM Large (94k h, self-supervised), 1024-d frames every 20 ms, 24 layers with gated relative "
    "position bias", "microsoft--wavlm-large.bin", dict(_LARGE, relpos=_RELPOS), True, _WAVLM_LICENCE, _WAVLM_CITE,
    "https://arxiv.org/abs/2110.13900",
    published={"SUPERB PR PER": 3.06, "SUPERB KS acc": 97.86, "SUPERB IC acc": 99.31, "SUPERB SID acc": 95.49,
               "SUPERB ER acc": 70.62, "SUPERB ASR WER": 3.44}))
