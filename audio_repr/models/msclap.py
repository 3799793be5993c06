"""Microsoft CLAP 2023 (Elizalde, Deshmukh, Wang, ICASSP 2024; ``microsoft/CLAP``, ``msclap`` on PyPI, MIT): an
HTS-AT audio encoder and a GPT-2 text encoder, each followed by a projection into one 1024-d joint space.

Audio (:class:`MsClapNet`, on :class:`~audio_repr.frontends.msclap.MsClapLogMel`): the original's inference path
(``CLAPWrapper.get_audio_embeddings``): 44.1 kHz audio (resampled with the library's default windowed sinc, which
is torchaudio's ``Resample`` with its defaults, as the original's ``read_audio``), a clip of at most 7 s repeated
to fill 7 s and cut there, HTS-AT's log-mel (filters drawn for 32 kHz: see the front end), HTS-AT's
``latent_output`` (``latent``: the mean of the last stage's normalised tokens), the audio ``projection``
(``linear1``, GELU, ``linear2``, the sum of both, LayerNorm; no biases) and L2 normalisation (``joint``, the
default layer: the original returns the projection unnormalised and normalises it in ``compute_similarity``).
A multi-channel file is downmixed (the original concatenates its channels end to end).

Long audio, deterministically (the original crops a random 7 s): the log-mel frames are read in consecutive
windows of 965 frames (a 7 s clip's frames) every 964 frames, each window as the model reads one 7 s clip; the
last window holds the rest of the clip and is filled, as the original fills a short clip, by repeating its own
frames (frame by frame: at the seams the STFT frames are not those of the repeated waveform). Each window gives
one frame of each layer (``frames``: one vector per window, stamped with the window's start: 0, 6995.01, 13990.02 ms,
...; a clip up to 7 s is stamped 0); the clip vector is the mean of the windows' vectors weighted by the frames
each window owns (for ``joint`` a mean of unit vectors, which :func:`audio_repr.similarity` and
:func:`audio_repr.zero_shot` normalise again). A clip up to 7 s is one window: it equals the original's
embedding. Nothing random, and every window is computed alone, so a clip gives the same numbers alone or in any
batch.

Text (:meth:`MsClapNet.embed_text`): the original's ``preprocess_text``: the text followed by
``' <|endoftext|>'``, GPT-2's tokenizer (``vocab.json`` + ``merges.txt`` of ``gpt2``, with ``'!'`` added as the
padding token), padded to 77 tokens (not truncated: a longer text keeps its tokens, up to GPT-2's 1024); GPT-2's
hidden state at position ``count(ids != id('!')) - 1`` (the original's ``torch.ne(input_ids, 0).sum(-1) - 1``:
``'!'`` is id 0, so a text holding '!' is read at an earlier token, as the original reads it), the text
``projection``, L2 normalisation. Zero-shot logits are ``exp(logit_scale) * audio @ text.T`` of unit vectors, as
``compute_similarity``; the probabilities their softmax over the labels.

Checkpoints (:func:`load_state`): ``CLAP_weights_2023.pth`` (``{'model': state_dict}``, which the original loads
with ``strict=False``) or a bare state dict; what inference does not use is dropped: the front end's
STFT/mel matrices, HTS-AT's tagging head (``tscam_conv``, ``head``), index and mask buffers, and the causal-mask
buffers an older ``transformers`` saved with GPT-2 (``attn.bias``, ``attn.masked_bias``: the reason for
``strict=False``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..frontends.msclap import MsClapLogMel
from ..layers.htsat import HTSAT
from ..layers.text import Gpt2, Gpt2Tokenizer, tokenizer_paths
from ..registry import ModelCard, Normalisation, register
from ..weights import WeightsError, load_checkpoint, unwrap_state_dict
from . import register_family
from .base import Backbone, Family, LayerOutputs, TextTower, Tiling

__all__ = ["MsClapNet", "load_state", "convert_state_dict", "WINDOW_FRAMES"]

#: log-mel frames of one 7 s clip at 44.1 kHz, hop 320 (centred STFT): 308700 // 320 + 1
WINDOW_FRAMES = 965


class Projection(nn.Module):
    """The original's ``Projection``: ``LayerNorm(e + linear2(gelu(e)))`` with ``e = linear1(x)``, no biases
    (its dropout is off at inference)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.linear1(x)
        return self.layer_norm(e + self.linear2(F.gelu(e)))


def _fill_by_repetition(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """[B, F, T] -> [B, F, WINDOW_FRAMES]: each row's first ``lengths[b]`` frames repeated to fill the window."""
    B, _, T = x.shape
    n = torch.full((B,), T, device=x.device) if lengths is None else lengths.to(x.device).clamp(1, T)
    if T == WINDOW_FRAMES and bool((n == T).all()):
        return x
    idx = torch.arange(WINDOW_FRAMES, device=x.device)[None, :] % n[:, None]          # [B, W]
    return torch.gather(x, 2, idx[:, None, :].expand(B, x.shape[1], WINDOW_FRAMES))


class MsClapNet(Backbone, TextTower):
    """Microsoft CLAP with the names of its checkpoints: ``audio_encoder.base.htsat`` (HTS-AT),
    ``audio_encoder.projection``, ``caption_encoder.base`` (GPT-2), ``caption_encoder.projection``,
    ``logit_scale``.

    Layers, one step per 7 s window: ``latent`` (HTS-AT's latent output) and ``joint`` (projected,
    L2-normalised)."""

    clip_pooling = "token"

    def __init__(self, n_mels: int = 64, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (4, 8, 16, 32), window_size: int = 8, spec_size: int = 256,
                 joint_dim: int = 1024, text: Optional[Dict] = None, context_length: int = 77,
                 tokenizer_files: Tuple[str, str] = ("gpt2-vocab.json", "gpt2-merges.txt"),
                 template: str = "this is the sound of {}"):
        super().__init__()
        self.audio_encoder = nn.Module()
        self.audio_encoder.base = nn.Module()
        self.audio_encoder.base.htsat = HTSAT(n_mels=n_mels, spec_size=spec_size, embed_dim=embed_dim,
                                              depths=depths, num_heads=num_heads, window_size=window_size)
        width = self.audio_encoder.base.htsat.num_features
        self.audio_encoder.projection = Projection(width, joint_dim)
        self.caption_encoder = nn.Module()
        self.caption_encoder.base = Gpt2(**dict(text or {}))
        self.caption_encoder.projection = Projection(self.caption_encoder.base.wte.embedding_dim, joint_dim)
        self.logit_scale_ = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.context_length = context_length
        self.tokenizer_files = tuple(tokenizer_files)
        self.default_template = template
        self._tokenizer = None
        self.layer_dims = {"latent": width, "joint": joint_dim}
        self.layer_strides = {"latent": WINDOW_FRAMES - 1, "joint": WINDOW_FRAMES - 1}
        self.min_frames = 1
        self.text_dim = joint_dim
        self.tiling = Tiling(chunk_frames=WINDOW_FRAMES - 1, overlap_frames=1, min_piece_frames=WINDOW_FRAMES)

    # the checkpoint's name of the temperature is ``logit_scale``, which TextTower's method of that name takes
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "logit_scale"] = destination.pop(prefix + "logit_scale_")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "logit_scale" in state_dict:
            state_dict[prefix + "logit_scale_"] = state_dict.pop(prefix + "logit_scale")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def layer_windows(self) -> Dict[str, int]:
        # a step is a whole 7 s window, which a clip up to 7 s fills by repetition: its timestamp is the window's
        # start (0 for such a clip), which lies inside the clip, where the window's centre may not
        return {n: 1 for n in self.layer_dims}

    def out_frames(self, n: int, layer: str) -> int:
        return 1 if n > 0 else 0

    def forward(self, x: torch.Tensor, lengths=None) -> LayerOutputs:
        # [B, F, T], T <= 965 per window; a row shorter than the window is filled by repeating its own frames
        if x.shape[-1] > WINDOW_FRAMES:
            raise ValueError(f"Microsoft CLAP reads windows of at most {WINDOW_FRAMES} frames, got {x.shape[-1]}")
        x = _fill_by_repetition(x, lengths)
        latent = self.audio_encoder.base.htsat(x.transpose(1, 2))
        joint = F.normalize(self.audio_encoder.projection(latent), dim=-1)
        out = LayerOutputs(latent=latent[:, None], joint=joint[:, None])
        out.clip = {"latent": latent, "joint": joint}
        return out

    # ---- the text tower ----
    def tokenizer(self) -> Gpt2Tokenizer:
        if self._tokenizer is None:
            vocab, merges = tokenizer_paths(self.tokenizer_files)
            self._tokenizer = Gpt2Tokenizer(vocab, merges, self.context_length)
        return self._tokenizer

    def set_tokenizer_files(self, vocab, merges) -> None:
        """Use these ``vocab.json`` and ``merges.txt`` (instead of the cache/mirror/download of the manifest's)."""
        self._tokenizer = Gpt2Tokenizer(Path(vocab), Path(merges), self.context_length)

    def embed_text(self, texts: List[str]) -> torch.Tensor:
        tok = self.tokenizer()
        ids = tok(texts).to(self.logit_scale_.device)
        last = ids.ne(tok.pad_id).sum(dim=-1) - 1
        # causal attention: the tokens after the one read never change it, so the batch is cut after the last read
        hidden = self.caption_encoder.base(ids[:, : int(last.max()) + 1])
        picked = hidden[torch.arange(ids.shape[0], device=ids.device), last]
        return F.normalize(self.caption_encoder.projection(picked), dim=-1)

    def logit_scale(self) -> float:
        return float(self.logit_scale_.detach().exp())


# ---- checkpoints --------------------------------------------------------------------------------------------
_UNUSED = ("audio_encoder.base.htsat.spectrogram_extractor.", "audio_encoder.base.htsat.logmel_extractor.",
           "audio_encoder.base.htsat.tscam_conv.", "audio_encoder.base.htsat.head.")
_UNUSED_SUFFIX = (".relative_position_index", ".attn_mask")
_GPT2_BUFFERS = (".attn.bias", ".attn.masked_bias")


def convert_state_dict(sd) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            continue
        while k.startswith("module."):
            k = k[len("module."):]
        if k.startswith(_UNUSED) or k.endswith(_UNUSED_SUFFIX):
            continue
        if k.startswith("caption_encoder.base.h.") and k.endswith(_GPT2_BUFFERS):
            continue
        out[k] = v
    return out


def load_state(path) -> Dict[str, torch.Tensor]:
    """A Microsoft CLAP checkpoint (``{'model': state_dict}`` as released, or a bare state dict) -> our names."""
    obj = load_checkpoint(path, inert_others=True)
    try:
        sd = unwrap_state_dict(obj, keys=("model", "state_dict"))
    except TypeError as e:
        raise WeightsError(f"{path}: {e}") from None
    return convert_state_dict(sd)


register_family(Family("msclap", build_frontend=MsClapLogMel, build_network=MsClapNet, load_state=load_state))

FRONTEND = dict(sample_rate=44100, n_fft=1024, hop_length=320, n_mels=64, f_min=50.0, f_max=14000.0,
                clip_samples=308700, mel_sample_rate=32000)
GPT2_BASE = dict(vocab_size=50257, hidden=768, layers=12, heads=12, max_positions=1024, eps=1e-5)

register(ModelCard(
    name="msclap-2023", family="msclap",
    description="Microsoft CLAP 2023: HTS-AT + GPT-2, 4.6M audio-text pairs; audio-text joint space (1024-d), "
                "zero-shot and text search; one vector per 7 s window",
    sample_rate=44100, frontend=FRONTEND, arch=dict(text=GPT2_BASE),
    normalisation=Normalisation(0.0, 1.0),          # bn0 inside the network normalises the log-mel
    default_layer="joint", fusion_layers=("latent", "joint"), weights="CLAP_weights_2023.pth",
    licence="MIT (microsoft/CLAP code and weights); the GPT-2 tokenizer files: MIT (openai/gpt-2)",
    citation="Elizalde, Deshmukh, Wang: Natural Language Supervision for General-Purpose Audio Representations, "
             "ICASSP 2024",
    paper="https://arxiv.org/abs/2309.05767",
    cpu_batch_size=4,
    resampler="sinc_hann",                          # torchaudio.transforms.Resample's defaults, as read_audio
    companions=("gpt2-vocab.json", "gpt2-merges.txt"),      # the tokenizer (MsClapNet's default)
))
