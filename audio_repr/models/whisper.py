"""Whisper's encoder (Radford et al., ICML 2023) as a general-purpose audio encoder, read from the Hugging Face
checkpoints (``openai/whisper-*``; the decoder is dropped).

Network (parameter names as transformers' ``WhisperEncoder``): Whisper's log-mel of a 30-s window
(:class:`~audio_repr.frontends.whisper.WhisperLogMel`: 80 Slaney mels, 128 for large-v3; 3000 frames every
10 ms, clamped at the window's maximum - 8, ``(x + 4) / 4``), ``conv1`` (kernel 3) + GELU, ``conv2`` (kernel
3, stride 2) + GELU: 1500 frames every 20 ms; plus the sinusoidal positions (``embed_positions``, stored in the
checkpoints); pre-norm transformer layers (``self_attn`` with no key bias, ``fc1``/``fc2`` with GELU); a final
``layer_norm``.

Layers: ``layer0`` (the conv stem plus positions: transformers' ``hidden_states[0]``), ``layer1`` ..
``layerN`` (each layer's output; ``layerN`` after the final LayerNorm, transformers' ``last_hidden_state``).
Frame ``j`` of a window is centred on its mel frame ``2 j``, i.e. at ``20 j`` ms (the conv stem reads mel
frames ``2j-2 .. 2j+2``). The clip vector is the mean over the clip's own frames. ``layers="fusion"``: the
middle and the last layer.

Input length. The original (OpenAI's and transformers' feature extractors) pads every input with zeros to
30 s and the encoder always reads the whole 30-s window, attending to the padding as it was trained to; the
peers' wrappers then keep all 1500 frames (the padding's included) or truncate audio at 30 s. Here:

* a clip of at most 30 s is exactly the original's input (zero-padded to 30 s, reflect-centred STFT of the
  padded window, the window's own maximum) through the full 1500-frame encoder, so every hidden state
  equals transformers' — then the frames are **sliced back to the clip**: ``ceil(n / 320)`` frames for ``n``
  samples (the frames centred inside the clip, ``20 j < duration``); no frame describes the padding and the
  clip vector is the mean over the clip's own frames only;
* longer audio is cut into consecutive 30-s windows (no overlap, nothing dropped): each window is
  featurised and encoded exactly as a clip of its own (the last one zero-padded to 30 s), and its frames are
  stitched at ``30 000 k + 20 j`` ms: timestamps exact, memory one window at a time. (OpenAI's long-form
  transcription instead computes one STFT over the whole file, clamped at the whole file's maximum - 8, and
  moves its window by the decoded text; windows here do not depend on the rest of the file.)

There is no attention mask: the original attends to the padding, so masking it would change every number.
A clip gives the same numbers alone or in a batch because each window's input depends on that clip only.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..frontends.waveform import Waveform
from ..frontends.whisper import WINDOW_FRAMES, WINDOW_SAMPLES, WhisperLogMel
from ..registry import ModelCard, Normalisation, register
from ..weights import WeightsError, unwrap_state_dict
from . import register_family
from .base import Backbone, Family, Tiling, length_mask
from .wav2vec2 import load_hf_folder

__all__ = ["WhisperEncoderNet", "convert_state_dict", "load_state", "sinusoids", "HOP"]

HOP = 320            # samples per encoder frame (20 ms at 16 kHz)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's sinusoidal positions ``[length, channels]``: ``[sin | cos]`` of ``channels / 2`` timescales
    spaced geometrically from 1 to ``max_timescale``."""
    if channels % 2:
        raise ValueError(f"channels must be even, got {channels}")
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H = self.heads
        q, k, v = (p(x).view(B, T, H, D // H).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoderNet(Backbone):
    """Whisper's encoder on waveforms ``[B, 1, N]`` in 30-s windows (see the module doc)."""

    clip_pooling = "mean"

    def __init__(self, n_mels: int = 80, dim: int = 512, depth: int = 6, heads: int = 8, ffn: int = 2048,
                 max_source_positions: int = 1500):
        super().__init__()
        if max_source_positions * 2 != WINDOW_FRAMES:
            raise ValueError(f"max_source_positions must be {WINDOW_FRAMES // 2} (30-s windows), got "
                             f"{max_source_positions}")
        self.mel = WhisperLogMel(n_mels)
        self.conv1 = nn.Conv1d(n_mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(max_source_positions, dim)
        with torch.no_grad():
            self.embed_positions.weight.copy_(sinusoids(max_source_positions, dim))
        self.layers = nn.ModuleList([EncoderLayer(dim, heads, ffn) for _ in range(depth)])
        self.layer_norm = nn.LayerNorm(dim)
        self.n_positions = max_source_positions
        names = [f"layer{i}" for i in range(depth + 1)]
        self.layer_dims: Dict[str, int] = OrderedDict((n, dim) for n in names)
        self.layer_strides: Dict[str, int] = OrderedDict((n, HOP) for n in names)
        self.min_frames = 1
        # windows of 30 s every 30 s, each padded with zeros to 30 s (min_piece_frames), nothing shared
        self.tiling = Tiling(chunk_frames=WINDOW_SAMPLES, min_piece_frames=WINDOW_SAMPLES)

    @property
    def layer_windows(self) -> Dict[str, int]:
        # timestamps at the centre sample of each frame's middle mel frame: 320 j (window 1 on the sample grid)
        return {n: 1 for n in self.layer_strides}

    def out_frames(self, n: int, layer: Optional[str] = None) -> int:
        """Frames of a clip (window) of ``n`` samples: those centred inside it, ``ceil(n / 320)`` (at most 1500)."""
        return -(-int(n) // HOP)

    def in_frames(self, n: int) -> int:
        return -(-int(n) // WINDOW_SAMPLES) * WINDOW_SAMPLES if n > 0 else WINDOW_SAMPLES

    def encode(self, mel: torch.Tensor):
        """Every hidden state of log-mel windows ``[W, n_mels, 3000]``: ``layer0`` .. ``layerN``."""
        h = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        h = F.gelu(self.conv2(h)).transpose(1, 2)
        h = h + self.embed_positions.weight[: h.shape[1]]
        yield h
        for i, layer in enumerate(self.layers):
            h = layer(h)
            yield self.layer_norm(h) if i == len(self.layers) - 1 else h

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"expected waveforms [B, 1, N], got shape {tuple(x.shape)}")
        B, _, N = x.shape
        lens = [int(v) for v in lengths.tolist()] if lengths is not None else [N] * B
        K = max(1, -(-max(lens + [1]) // WINDOW_SAMPLES))
        wav = x[:, 0].float()
        # zeros past each clip's end (the original pads with zeros), then K windows of 30 s per row
        wav = wav * length_mask(torch.tensor(lens, device=x.device), N).to(wav.dtype)
        wav = F.pad(wav, (0, K * WINDOW_SAMPLES - N)) if N < K * WINDOW_SAMPLES else wav[:, : K * WINDOW_SAMPLES]
        windows = wav.reshape(B * K, WINDOW_SAMPLES)
        mel = self.mel(windows)
        outs: Dict[str, torch.Tensor] = OrderedDict()
        for i, h in enumerate(self.encode(mel)):
            outs[f"layer{i}"] = h.reshape(B, K * self.n_positions, -1)
        return outs


# ---- checkpoints ----------------------------------------------------------------------------------
def convert_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """A transformers Whisper checkpoint (``WhisperForConditionalGeneration``: ``model.encoder.*``;
    ``WhisperModel``: ``encoder.*``; ``WhisperForAudioClassification``: ``encoder.*``; a bare encoder) -> the
    encoder's state dict (the decoder and heads dropped)."""
    obj = unwrap_state_dict(obj)
    out: Dict[str, torch.Tensor] = {}
    has_encoder = any(isinstance(k, str) and (k.startswith("encoder.") or k.startswith("model.encoder."))
                      for k in obj)
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            continue
        for p in ("model.encoder.", "encoder."):
            if k.startswith(p):
                out[k[len(p):]] = v
                break
        else:
            if not has_encoder and k.startswith(("conv1.", "conv2.", "embed_positions.", "layers.", "layer_norm.")):
                out[k] = v
    if not out:
        raise WeightsError("no Whisper encoder tensors (encoder.* / model.encoder.*) in this checkpoint")
    return out


def _check_config(cfg: Mapping, path) -> None:
    if cfg.get("model_type") not in (None, "whisper"):
        raise WeightsError(f"{path}: config.json is a {cfg.get('model_type')!r} model, not Whisper")


def load_state(path) -> Dict[str, torch.Tensor]:
    """``model.safetensors`` / ``pytorch_model.bin`` or a ``save_pretrained`` folder -> the encoder's state dict."""
    return load_hf_folder(path, convert_state_dict, _check_config)


def _frontend(sample_rate: int = 16000):
    return Waveform(sample_rate=sample_rate, normalize=False, center=True)     # frame j centred on sample 320 j


register_family(Family("whisper", build_frontend=_frontend, build_network=WhisperEncoderNet, load_state=load_state))


# ---- the cards -----------------------------------------------------------------------------------
_LICENCE = ("MIT (openai/whisper: code and model weights); the Hugging Face repositories are tagged "
            "apache-2.0")
_CITE = ("A. Radford, J. W. Kim, T. Xu, G. Brockman, C. McLeavey, I. Sutskever, \"Robust Speech Recognition via "
         "Large-Scale Weak Supervision\", ICML 2023, PMLR 202, pp. 28492-28518.")


def _card(name, description, weights, n_mels, dim, depth, heads, published=None):
    return ModelCard(
        name=name, family="whisper", description=description, sample_rate=16000, frontend=dict(sample_rate=16000),
        arch=dict(n_mels=n_mels, dim=dim, depth=depth, heads=heads, ffn=4 * dim),
        normalisation=Normalisation(0.0, 1.0),       # Whisper's own log-mel normalisation is in the network
        default_layer=f"layer{depth}", fusion_layers=(f"layer{depth // 2}", f"layer{depth}"), weights=weights,
        licence=_LICENCE, citation=_CITE, paper="https://arxiv.org/abs/2212.04356", resampler="sinc_hann",
        cpu_batch_size=1, published=published or {})   # one 30-s window per batch on a CPU (measured: 2 no faster)


register(_card("whisper-base", "Whisper base encoder (680k h of weakly supervised speech), 512-d frames every "
               "20 ms, 6 layers, 30-s windows sliced back to the clip", "openai--whisper-base.safetensors",
               80, 512, 6, 8, published={"LibriSpeech test-clean WER (full model)": 5.0}))
register(_card("whisper-small", "Whisper small encoder, 768-d frames every 20 ms, 12 layers, 30-s windows sliced "
               "back to the clip", "openai--whisper-small.safetensors", 80, 768, 12, 12,
               published={"LibriSpeech test-clean WER (full model)": 3.4}))
register(_card("whisper-large-v3", "Whisper large-v3 encoder (5M h), 128 mels, 1280-d frames every 20 ms, 32 "
               "layers, 30-s windows sliced back to the clip", "openai--whisper-large-v3.safetensors",
               128, 1280, 32, 20))
