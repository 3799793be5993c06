"""LAION-CLAP (Wu*, Chen* et al., ICASSP 2023; ``LAION-AI/CLAP``, weights CC0): an HTS-AT audio encoder and a
RoBERTa text encoder, each followed by a two-layer projection into one 512-d joint space, trained contrastively.

Audio (:class:`ClapNet`, on :class:`~audio_repr.frontends.clap.ClapLogMel`): the original's inference path for the
non-fusion checkpoints (``CLAP_Module(enable_fusion=False).get_audio_embedding_from_data``): 16-bit quantisation, a
clip of at most 10 s repeated to 10 s (``repeatpad``), the HTS-AT log-mel, HTS-AT's ``embedding`` (``latent``),
``audio_projection`` (Linear, ReLU, Linear), L2 normalisation (``joint``, the default layer).

Long audio, deterministically (the original crops a random 10 s, ``rand_trunc``): the log-mel frames are read in
consecutive windows of 1001 frames (10 s) every 1000 frames, each window as the model reads one 10 s clip; the last
window holds the rest of the clip and is completed with the log-mel of silence (-100 dB: the original's ``pad``
filling; at a window's edges the STFT reads the neighbouring real audio, where a separately cut 10 s clip would
read its reflect padding). Each window gives one frame of each layer (``frames``: one vector per window, stamped
with the window's start: 0, 10 000, 20 000 ms, ...; a clip up to 10 s, repeated to fill its window, is stamped 0); the clip vector is the mean of the windows' vectors weighted by the frames each window owns (the
last one its remainder; for ``joint`` a mean of unit vectors, which :func:`audio_repr.similarity` and
:func:`audio_repr.zero_shot` normalise again). A clip up to 10 s is one window: it equals the
original's embedding. Nothing random, and every window is computed alone, so a clip gives the same numbers alone
or in any batch.

Text (:meth:`ClapNet.embed_text`): the original's tokenizer (RoBERTa's byte-level BPE, ``vocab.json`` +
``merges.txt`` of ``roberta-base``, read with the ``tokenizers`` package; padded to 77 tokens, truncated to 77),
RoBERTa's ``pooler_output`` (tanh dense on ``<s>``), ``text_projection``, L2 normalisation. Zero-shot logits are
``exp(logit_scale_a) * audio @ text.T`` as the original's evaluation.

Checkpoints (:func:`load_state`): the released training checkpoints (``{'epoch', 'name', 'state_dict':
{'module.*': ...}, 'optimizer', ...}``) or a bare state dict, with or without ``module.``; the parts inference does
not use (the front end's STFT/mel matrices, ``audio_transform``/``text_transform``, the tagging head, index and
mask buffers, ``position_ids``) are dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..frontends.clap import ClapLogMel
from ..layers.htsat import HTSAT
from ..layers.text import BpeTokenizer, Roberta, tokenizer_paths
from ..registry import ModelCard, Normalisation, register
from ..weights import WeightsError, load_checkpoint, unwrap_state_dict
from . import register_family
from .base import Backbone, Family, LayerOutputs, TextTower, Tiling

__all__ = ["ClapNet", "Roberta", "BpeTokenizer", "load_state", "WINDOW_FRAMES"]

#: log-mel frames of one 10 s window at 48 kHz, hop 480 (centred STFT)
WINDOW_FRAMES = 1001
SILENCE_DB = -100.0          # 10 log10(amin = 1e-10): the log-mel of zeros


def _mlp(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.ReLU(), nn.Linear(d, d))


# ---- the network --------------------------------------------------------------------------------------------
class ClapNet(Backbone, TextTower):
    """LAION-CLAP with the names of its checkpoints: ``audio_branch`` (HTS-AT), ``audio_projection``,
    ``text_branch`` (RoBERTa), ``text_projection``, ``logit_scale_a``/``logit_scale_t``.

    Layers, one step per 10 s window: ``latent`` (HTS-AT's embedding) and ``joint`` (projected, L2-normalised)."""

    clip_pooling = "token"

    def __init__(self, n_mels: int = 64, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (4, 8, 16, 32), window_size: int = 8, spec_size: int = 256,
                 joint_dim: int = 512, text: Optional[Dict] = None, context_length: int = 77,
                 tokenizer_files: Tuple[str, str] = ("roberta-base-vocab.json", "roberta-base-merges.txt"),
                 template: str = "This is a sound of {}."):
        super().__init__()
        self.audio_branch = HTSAT(n_mels=n_mels, spec_size=spec_size, embed_dim=embed_dim, depths=depths,
                                  num_heads=num_heads, window_size=window_size)
        width = self.audio_branch.num_features
        self.audio_projection = _mlp(width, joint_dim)
        text = dict(text or {})
        self.text_branch = Roberta(**text)
        self.text_projection = _mlp(self.text_branch.pooler.dense.out_features, joint_dim)
        self.logit_scale_a = nn.Parameter(torch.tensor(2.6592600464820862))     # log(1 / 0.07), as initialised
        self.logit_scale_t = nn.Parameter(torch.tensor(2.6592600464820862))
        self.context_length = context_length
        self.tokenizer_files = tuple(tokenizer_files)
        self.default_template = template
        self._tokenizer = None
        self.layer_dims = {"latent": width, "joint": joint_dim}
        self.layer_strides = {"latent": WINDOW_FRAMES - 1, "joint": WINDOW_FRAMES - 1}
        self.min_frames = 1
        self.text_dim = joint_dim
        self.tiling = Tiling(chunk_frames=WINDOW_FRAMES - 1, overlap_frames=1, min_piece_frames=WINDOW_FRAMES,
                             pad_value=SILENCE_DB)

    @property
    def layer_windows(self) -> Dict[str, int]:
        # a step is a whole 10 s window, which a clip up to 10 s fills by repetition: its timestamp is the window's
        # start (0 for such a clip), which lies inside the clip, where the window's centre may not
        return {n: 1 for n in self.layer_dims}

    def out_frames(self, n: int, layer: str) -> int:
        return 1 if n > 0 else 0

    def forward(self, x: torch.Tensor, lengths=None) -> LayerOutputs:
        # [B, F, T] with T = 1001 per window (shorter rows were completed with silence by the encoder)
        if x.shape[-1] > WINDOW_FRAMES:
            raise ValueError(f"CLAP reads windows of at most {WINDOW_FRAMES} frames, got {x.shape[-1]}")
        if x.shape[-1] < WINDOW_FRAMES:
            x = F.pad(x, (0, WINDOW_FRAMES - x.shape[-1]), value=SILENCE_DB)
        latent = self.audio_branch(x.transpose(1, 2))
        joint = F.normalize(self.audio_projection(latent), dim=-1)
        out = LayerOutputs(latent=latent[:, None], joint=joint[:, None])
        out.clip = {"latent": latent, "joint": joint}
        return out

    # ---- the text tower ----
    def tokenizer(self) -> BpeTokenizer:
        if self._tokenizer is None:
            vocab, merges = tokenizer_paths(self.tokenizer_files)
            self._tokenizer = BpeTokenizer(vocab, merges, self.context_length)
        return self._tokenizer

    def set_tokenizer_files(self, vocab, merges) -> None:
        """Use these ``vocab.json`` and ``merges.txt`` (instead of the cache/mirror/download of the manifest's)."""
        self._tokenizer = BpeTokenizer(Path(vocab), Path(merges), self.context_length)

    def embed_text(self, texts: List[str]) -> torch.Tensor:
        ids, mask = self.tokenizer()(texts)
        dev = self.logit_scale_a.device
        pooled = self.text_branch(ids.to(dev), mask.to(dev))
        return F.normalize(self.text_projection(pooled), dim=-1)

    def logit_scale(self) -> float:
        return float(self.logit_scale_a.detach().exp())


# ---- checkpoints --------------------------------------------------------------------------------------------
_UNUSED = ("audio_branch.spectrogram_extractor.", "audio_branch.logmel_extractor.", "audio_branch.tscam_conv.",
           "audio_branch.head.", "audio_transform.", "text_transform.", "text_branch.embeddings.position_ids")
_UNUSED_SUFFIX = (".relative_position_index", ".attn_mask")


def convert_state_dict(sd) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            continue
        while k.startswith("module."):
            k = k[len("module."):]
        if k == "attn_mask" or k.startswith(_UNUSED) or k.endswith(_UNUSED_SUFFIX):
            continue
        out[k] = v
    return out


def load_state(path) -> Dict[str, torch.Tensor]:
    """A LAION-CLAP checkpoint (``{'state_dict': {'module.*'}}`` as released, or a bare state dict) -> our names."""
    obj = load_checkpoint(path, inert_others=True)
    try:
        sd = unwrap_state_dict(obj, keys=("state_dict", "model"))
    except TypeError as e:
        raise WeightsError(f"{path}: {e}") from None
    return convert_state_dict(sd)


def _network(**arch) -> ClapNet:
    return ClapNet(**arch)


register_family(Family(
    "laion-clap", build_frontend=ClapLogMel, build_network=_network, load_state=load_state))

FRONTEND = dict(sample_rate=48000, n_fft=1024, hop_length=480, n_mels=64, f_min=50.0, f_max=14000.0,
                clip_samples=480000)
ROBERTA_BASE = dict(vocab_size=50265, hidden=768, layers=12, heads=12, intermediate=3072, max_positions=514,
                    type_vocab=1, pad_id=1, eps=1e-5)
_CITE = ("Wu, Chen, Zhang, Hui, Berg-Kirkpatrick, Dubnov: Large-scale Contrastive Language-Audio Pretraining with "
         "Feature Fusion and Keyword-to-Caption Augmentation, ICASSP 2023")
_LICENCE = "CC0-1.0 (LAION-AI/CLAP weights); the RoBERTa tokenizer files: MIT (fairseq)"

for _name, _file, _arch, _what in (
    ("laion-clap-htsat", "630k-audioset-best.pt", dict(embed_dim=96, depths=(2, 2, 6, 2)),
     "LAION-CLAP HTSAT-tiny + RoBERTa, LAION-Audio-630K + AudioSet (630k-audioset-best)"),
    ("laion-clap-htsat-music-speech", "music_speech_audioset_epoch_15_esc_89.98.pt",
     dict(embed_dim=128, depths=(2, 2, 12, 2)),
     "LAION-CLAP HTSAT-base + RoBERTa, music + speech + AudioSet (music_speech_audioset_epoch_15_esc_89.98)"),
):
    register(ModelCard(
        name=_name, family="laion-clap",
        description=f"{_what}; audio-text joint space (512-d), zero-shot and text search; one vector per 10 s window",
        sample_rate=48000, frontend=FRONTEND, arch=dict(_arch, text=ROBERTA_BASE),
        normalisation=Normalisation(0.0, 1.0),          # bn0 inside the network normalises the log-mel
        default_layer="joint", fusion_layers=("latent", "joint"), weights=_file,
        companions=("roberta-base-vocab.json", "roberta-base-merges.txt"),     # the tokenizer (ClapNet's default)
        licence=_LICENCE, citation=_CITE, paper="https://arxiv.org/abs/2211.06687",
        cpu_batch_size=4,
        resampler="kaiser_best_librosa",                # hook.py reads files with librosa.load(sr=48000)
    ))
