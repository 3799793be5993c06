"""Masked Modeling Duo encoders (Niizumi et al., ICASSP 2023; IEEE/ACM TASLP 2024): M2D, M2D-AS and the audio
encoder of M2D-CLAP, with every block exposed.

M2D is the successor of MSM-MAE (:mod:`audio_repr.models.msm_mae`) by the same authors, and the network the
official ``nttcslab/m2d`` runtime (``examples/portable_m2d.py``) uses to encode audio is the online encoder
run without masking: a ViT-Base (768-d, 12 blocks, 12 heads, MLP 3072, pre-norm, LayerNorm eps 1e-6) over
patches of an 80-mel log spectrogram cut into units of ``unit_frames`` frames (608 = 6.08 s for the 16x16
models, 200 for the 16x4 "40 ms" model), a fixed 2-D sin-cos positional embedding (MSM-MAE's, stored in the
checkpoints), a ``[CLS]`` token and a final LayerNorm. Unlike MSM-MAE it is timm's ViT: the ``qkv``
projection has its own bias (``bias="qkv"`` of the shared :mod:`audio_repr.layers.vit` blocks).

Front end and normalisation: MSM-MAE's (nnAudio mel, 16 kHz, 80 Slaney mels 50-8000 Hz, ``log(x + eps)``),
normalised with the fixed statistics the checkpoint stores as ``norm_stats`` (``[-7.1, 4.2]`` when it has
none, the 2022 models, as the original adds). Loading weights sets them (:meth:`M2DEncoder.weights_norm_stats`);
``calibrate()`` replaces them with a dataset's, as EVAR's linear evaluation does.

Long audio, as the original ``encode_lms``: the spectrogram is cut into consecutive units of ``unit_frames``;
the last unit is *not* padded to a whole unit but only to a whole number of patches (with zeros after
normalisation), and the encoder reads it with the positional embedding of its first columns only. Here all
units of all clips run as one batch: a unit shorter than the batch's widest is masked (its padding tokens are
not attended to), which gives the outputs of encoding it alone at its own length.

Output per layer ``[B, n_units * unit_frames / patch_t, 5 * 768]``: the ``[CLS]`` token is dropped and the
five frequency patches of each time step are concatenated (frequency-major, ``(f d)``), the original's
3840-d frame feature every 160 ms (16x16) or 40 ms (16x4). A clip of ``n`` frames has ``ceil(n / patch_t)``
steps; a step's timestamp is the centre of its ``patch_t`` frames (``75 + 160 i`` ms for 16x16, ``15 + 40 i``
ms for 16x4). Clip embedding: the time mean of the frames, the original's ``get_scene_embeddings``.

Layers: ``block1`` .. ``block12`` (the residual stream after each block) and ``output`` (the last block
followed by the final LayerNorm: the standard output). The original's ``encode_lms(..., return_layers=True)``
list is ``block1`` .. ``block11``, ``output``. ``layers="fusion"`` follows the EUSIPCO 2022 recipe for ViTs
(an intermediate and the last layer concatenated): ``block7`` + ``output`` (7680-d), the same pair as MSM-MAE.

Checkpoints (:func:`load_state`): the release ``.zip``, its run folder (``m2d_vit_base-80x608p16x16-221006-mr7``
holding ``checkpoint-300.pth``), the ``.pth`` itself (the training checkpoint: ``model`` holds the online and
target encoders, the decoder and, for M2D-AS/-CLAP, the offline predictor / projectors: only the online
encoder is kept), the encoder-only weights the original ``util/to_encoder_only_weight.py`` writes (the
runtime ViT's bare state dict, ``norm_stats`` included) and the runtime wrappers' prefixes (``backbone.``,
EVAR's ``module.ar.runtime.backbone.``). The run folder's name encodes input size, patch size and sample rate
(``80x608p16x16``, optionally ``p32k``); when the name parses it must agree with the tensors, and 32 kHz models
are refused (this family's front end is the 16 kHz one).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..frontends import LogMelSpectrogram
from ..layers.text import Bert, WordPieceTokenizer
from ..layers.vit import Block, PatchEmbed
from ..registry import ModelCard, Normalisation, register
from ..weights import WeightsError, unwrap_state_dict
from . import msm_mae, register_family
from .base import Backbone, Family, TextTower, Tiling, length_mask

__all__ = ["M2DEncoder", "M2DClapNet", "convert_state_dict", "convert_clap_state_dict", "load_state",
           "load_clap_state", "parse_run_name", "DEFAULT_NORM_STATS"]

#: the statistics the original assumes for checkpoints that store none (the 2022 models)
DEFAULT_NORM_STATS = (-7.1, 4.2)


class M2DEncoder(Backbone):
    """The M2D online encoder (timm ViT) on units of ``unit_frames`` spectrogram frames.

    Parameter names follow the official checkpoints (``patch_embed.proj``, ``pos_embed``, ``cls_token``,
    ``blocks.N.{norm1,attn.{qkv,proj},norm2,mlp.{fc1,fc2}}``, ``norm``) plus the ``norm_stats`` buffer
    (``[mean, std]`` of the input normalisation, as the checkpoints store it)."""

    clip_pooling = "mean"                                  # get_scene_embeddings: the time mean of the frames
    use_cls_token = True

    def __init__(self, n_mels: int = 80, unit_frames: int = 608, patch_size: Sequence[int] = (16, 16),
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        pf, pt = int(patch_size[0]), int(patch_size[1])
        if n_mels % pf or unit_frames % pt:
            raise ValueError(f"input {n_mels}x{unit_frames} is not a whole number of {pf}x{pt} patches")
        self.n_mels, self.unit_frames, self.patch_size = n_mels, unit_frames, (pf, pt)
        self.grid = (n_mels // pf, unit_frames // pt)          # (frequency, time) patches of a whole unit
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(embed_dim, self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # fixed sin-cos table (MSM-MAE's), stored in the checkpoints and loaded with them
        self.pos_embed = nn.Parameter(msm_mae.sincos_pos_embed_2d(embed_dim, self.grid, True)[None],
                                      requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, int(embed_dim * mlp_ratio), norm_eps, bias="qkv")
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.register_buffer("norm_stats", torch.tensor(DEFAULT_NORM_STATS, dtype=torch.float32))
        d = self.grid[0] * embed_dim
        names = [f"block{i + 1}" for i in range(depth)] + ["output"]
        self.layer_dims: Dict[str, int] = OrderedDict((n, d) for n in names)
        self.layer_strides: Dict[str, int] = OrderedDict((n, pt) for n in names)
        self.min_frames = 1
        # the original's units, each read alone: no context, the last one only padded to whole patches
        self.tiling = Tiling(chunk_frames=unit_frames)

    def out_frames(self, n: int, layer: Optional[str] = None) -> int:
        """Time steps of ``n`` real frames: the last partial patch is kept (zero-padded, as the original)."""
        return -(-n // self.patch_size[1])

    def weights_norm_stats(self) -> Tuple[float, float]:
        """The checkpoint's ``norm_stats`` (float32 values, as the original normalises with them)."""
        mean, std = self.norm_stats.detach().float().cpu().tolist()
        return float(mean), float(std)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> "OrderedDict[str, torch.Tensor]":
        """``x [B, n_mels, T]`` (normalised, zeros past each row's length) and the rows' true frame counts ->
        ``{layer: [B, T_out, 5 * D]}``; steps past ``ceil(length / patch_t)`` of a row are not meaningful."""
        if x.ndim == 4:
            x = x[:, 0]
        B, Fq, T = x.shape
        if Fq != self.n_mels:
            raise ValueError(f"expected {self.n_mels} mel bins, got {Fq}")
        U, pt = self.unit_frames, self.patch_size[1]
        n = max(1, -(-T // U))
        # one unit: only up to whole patches (the original's short last unit); several: whole units, masked
        width = U if n > 1 else max(pt, -(-T // pt) * pt)
        x = F.pad(x, (0, n * width - T))
        u = x.view(B, Fq, n, width).permute(0, 2, 1, 3).reshape(B * n, 1, Fq, width)
        gf, w, D = self.grid[0], width // pt, self.embed_dim
        pos = self.pos_embed.to(x.dtype)
        pos_patches = pos[:, 1:].reshape(1, gf, self.grid[1], D)[:, :, :w].reshape(1, gf * w, D)
        h = self.patch_embed(u) + pos_patches
        h = torch.cat([(self.cls_token.to(h.dtype) + pos[:, :1]).expand(B * n, -1, -1), h], dim=1)
        mask = self._key_mask(lengths, B, n, T, w, x.device)
        outs: "OrderedDict[str, torch.Tensor]" = OrderedDict()

        def frames(t: torch.Tensor) -> torch.Tensor:   # [B*n, 1 + gf*w, D] -> [B, n*w, gf*D]
            return t[:, 1:].reshape(B * n, gf, w, D).permute(0, 2, 1, 3).reshape(B, n * w, gf * D)

        for i, blk in enumerate(self.blocks):
            h = blk(h, mask)
            outs[f"block{i + 1}"] = frames(h)
        outs["output"] = frames(self.norm(h))
        return outs

    def _key_mask(self, lengths: Optional[torch.Tensor], B: int, n: int, T: int, w: int,
                  device: torch.device) -> Optional[torch.Tensor]:
        """Attention key mask ``[B * n, 1, 1, 1 + gf * w]`` keeping, in each unit, the ``[CLS]`` token and the
        patch columns holding the row's frames (``None`` when every column does)."""
        pt = self.patch_size[1]
        if lengths is None:
            lengths = torch.full((B,), T, device=device)
        starts = torch.arange(n, device=device) * self.unit_frames
        real = (lengths.to(device).view(B, 1) - starts.view(1, n)).clamp(0, w * pt)      # frames in each unit
        cols = torch.div(real + pt - 1, pt, rounding_mode="floor").reshape(B * n)
        if bool((cols >= w).all()):
            return None
        valid = length_mask(cols, w)
        keys = torch.cat([valid.new_ones(B * n, 1), valid.repeat(1, self.grid[0])], dim=1)
        return keys[:, None, None, :]


# ---- checkpoints ------------------------------------------------------------------------------------------------
_ENCODER_KEY = re.compile(r"^(patch_embed\.proj\.|pos_embed$|cls_token$|blocks\.\d+\.|norm\.|norm_stats$)")
_EVAR_PREFIX = "module.ar.runtime.backbone."


def parse_run_name(name: str) -> Optional[Tuple[List[int], List[int], str, str]]:
    """``m2d_vit_base-80x608p16x16-221006-mr7`` -> ``([80, 608], [16, 16], "16k", "m2d_vit_base")``, as the
    original reads a run folder's name (a third ``p`` field is the sample rate, ``16k`` when absent); ``None``
    for a name that is not a run name."""
    parts = name.split("-")
    if len(parts) < 2:
        return None
    fields = parts[1].split("p")
    try:
        size = [int(a) for a in fields[0].split("x")]
        patch = [int(a) for a in fields[1].split("x")]
    except (IndexError, ValueError):
        return None
    if len(size) != 2 or len(patch) != 2:
        return None
    return size, patch, fields[2] if len(fields) > 2 else "16k", parts[0]


def convert_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """An M2D checkpoint -> the online encoder's state dict (with ``norm_stats``).

    Accepts the training checkpoint (``{'model': state, ...}``), a bare state dict (the encoder-only weights),
    a runtime's (``backbone.*``) or EVAR's (``module.ar.runtime.backbone.*``) prefixed one, DDP's ``module.``.
    Target encoder, decoder, offline predictor and CLAP projectors are dropped; a checkpoint without
    ``norm_stats`` gets ``[-7.1, 4.2]``, as the original gives it."""
    state = unwrap_state_dict(obj, ("model",))
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    if any(k.startswith("backbone.") for k in tensors):       # a runtime's state: its backbone only
        tensors = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
    out: Dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        name = k.replace(_EVAR_PREFIX, "")
        name = name[len("module."):] if name.startswith("module.") else name
        if _ENCODER_KEY.match(name):
            out[name] = v
    if out and "norm_stats" not in out:
        out["norm_stats"] = torch.tensor(DEFAULT_NORM_STATS, dtype=torch.float32)
    return out


def _run_name(path: Path) -> Optional[str]:
    """The run name a weights path carries: the folder's, the release zip's, or the ``.pth``'s folder (then its
    own stem), the first that parses."""
    if path.is_dir():
        candidates = [path.name]
    elif path.suffix == ".zip":
        candidates = [path.stem]
    else:
        candidates = [path.parent.name, path.stem]
    return next((c for c in candidates if parse_run_name(c) is not None), None)


def load_state(path: Union[str, Path], convert: Callable[[Mapping], Dict[str, torch.Tensor]] = convert_state_dict
               ) -> Dict[str, torch.Tensor]:
    """The encoder's weights from an official release: the ``.zip``, the run folder (its newest
    ``checkpoint-*.pth``), the ``.pth`` itself, or encoder-only weights (see :func:`convert_state_dict`);
    ``convert``: what to keep of the checkpoint (M2D-CLAP passes :func:`convert_clap_state_dict`)."""
    path = Path(path)
    state = msm_mae.load_state(path, convert=convert)
    run = _run_name(path)
    if run is not None and "pos_embed" in state and "patch_embed.proj.weight" in state:
        (n_mels, frames), (pf, pt), sr, _ = parse_run_name(run)
        if sr != "16k":
            raise WeightsError(f"{path}: {run} is a {sr}Hz M2D model; audio-repr's M2D models are the 16 kHz ones")
        kernel = tuple(state["patch_embed.proj.weight"].shape[-2:])
        tokens = state["pos_embed"].shape[1] - 1
        if kernel != (pf, pt) or pf == 0 or pt == 0 or tokens != (n_mels // pf) * (frames // pt):
            raise WeightsError(f"{path}: the run name {run} says {n_mels}x{frames} input in {pf}x{pt} patches, but "
                               f"the weights have {kernel[0]}x{kernel[1]} patches and {tokens} patch positions")
    return state


register_family(Family("m2d", build_frontend=LogMelSpectrogram, build_network=M2DEncoder, load_state=load_state))


# ---- M2D-CLAP: the joint space and the text tower ------------------------------------------------------------
class M2DClapNet(M2DEncoder, TextTower):
    """M2D-CLAP (2024): the M2D encoder plus ``audio_proj`` (Linear, ReLU, Linear, the checkpoint's names), the
    trained temperature (``logit_scale`` in the checkpoint, ``logit_scale_log`` here) and, when the checkpoint has
    one, ``text_proj`` (the 2024 model has none: its text projection is the identity).

    ``joint``: the original's ``encode_clap_audio`` (``PortableM2D(flat_features=True)``): the mean of every patch
    of every unit (the time mean of the frequency means of the ``output`` steps), through ``audio_proj``, then
    L2-normalised. ``forward`` gives the projection's input per step (the frequency mean of ``output``); the
    encoder pools it as the other layers and :meth:`apply_head` projects the pooled vector (the clip's joint
    vector, exactly the original's for a clip of any length) and each step (a 160 ms joint-space frame).

    Text (:meth:`embed_text`): the original's ``GTETextEncoder``: ``thenlper/gte-base`` (a BERT-base: WordPiece
    ``vocab.txt``, uncased; ``padding=True``, truncated to 512 tokens where the original's default would fail on a
    longer text), the mean of ``last_hidden_state`` over the attention mask, ``text_proj`` when present, then
    L2-normalised. The tokenizer and encoder weights are the card's companion files (``text_files``), fetched with
    the model by ``audio-repr download``, or given with :meth:`set_text_files`."""

    headed_layers = ("joint",)

    def __init__(self, *args, text: Optional[Mapping] = None, joint_dim: int = 768, text_proj: Optional[int] = None,
                 text_files: Tuple[str, str] = ("gte-base-vocab.txt", "gte-base-model.safetensors"),
                 context_length: int = 512, template: str = "{} can be heard", **kwargs):
        super().__init__(*args, **kwargs)
        d = self.embed_dim
        self.audio_proj = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, joint_dim))
        self.text_proj = nn.Linear(text_proj, joint_dim) if text_proj else None
        self.logit_scale_log = nn.Parameter(torch.tensor(math.log(1 / 0.07)))      # as the trainer initialises it
        self.text_arch = dict(text or {})
        self.text_files = tuple(text_files)
        self.context_length = context_length
        self.default_template = template
        self.text_dim = joint_dim
        self.layer_dims["joint"] = joint_dim
        self.layer_strides["joint"] = self.patch_size[1]
        self.__dict__["_text"] = None          # (tokenizer, BERT): loaded on first use, not part of the state dict

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> "OrderedDict[str, torch.Tensor]":
        outs = super().forward(x, lengths)
        out = outs["output"]
        B, T, _ = out.shape
        outs["joint"] = out.view(B, T, self.grid[0], self.embed_dim).mean(dim=2)     # the step's mean patch
        return outs

    def project_audio(self, x: torch.Tensor) -> torch.Tensor:
        """Mean patch vectors ``[..., D]`` -> unit vectors of the joint space (``audio_proj``, L2 normalisation)."""
        w = self.audio_proj[0].weight
        return F.normalize(self.audio_proj(x.to(w.device, w.dtype)), dim=-1)

    def apply_head(self, layer: str, x: torch.Tensor) -> torch.Tensor:
        return self.project_audio(x)

    # ---- the text tower ----
    def set_text_files(self, vocab, model) -> None:
        """Use this ``vocab.txt`` and this BERT's ``model.safetensors``/``pytorch_model.bin`` (instead of the
        cache/mirror/download of the card's companion files)."""
        bert = Bert(**self.text_arch)
        bert.load_weights(Path(model))
        self.__dict__["_text"] = (WordPieceTokenizer(Path(vocab), self.context_length), bert.eval())

    def _text_tower(self) -> Tuple[WordPieceTokenizer, Bert]:
        if self._text is None:
            from ..weights import WeightsNotFoundError, resolve

            try:
                vocab, model = (resolve(k) for k in self.text_files)
            except WeightsNotFoundError as e:
                raise WeightsNotFoundError(
                    f"text embeddings need the text encoder files {' and '.join(self.text_files)} (audio-repr "
                    f"download MODEL fetches them with the model, or enc.network.set_text_files(vocab, model)): "
                    f"{e}") from None
            self.set_text_files(vocab, model)
        return self._text

    def embed_text(self, texts: List[str]) -> torch.Tensor:
        tok, bert = self._text_tower()
        ids, mask = tok(texts)
        w = self.audio_proj[0].weight
        bert.to(w.device)
        hidden = bert(ids.to(w.device), mask.to(w.device))
        m = mask.to(w.device, hidden.dtype)[..., None]
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1)             # the mean over the text's own tokens
        if self.text_proj is not None:
            pooled = self.text_proj(pooled.to(self.text_proj.weight.dtype))
        return F.normalize(pooled, dim=-1)

    def logit_scale(self) -> float:
        """``exp(logit_scale)`` of the checkpoint: the trained temperature (at most 100, as the trainer clamps it).
        The original's zero-shot evaluation ranks by the cosine alone, which these logits keep."""
        return float(self.logit_scale_log.detach().float().exp())


_CLAP_KEYS = re.compile(r"^(audio_proj\.|text_proj\.)")


def convert_clap_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """An M2D-CLAP checkpoint -> :class:`M2DClapNet`'s state dict: the encoder's (:func:`convert_state_dict`) plus
    ``audio_proj``, ``text_proj`` (when present) and ``logit_scale`` (as ``logit_scale_log``)."""
    out = convert_state_dict(obj)
    state = unwrap_state_dict(obj, ("model",))
    for k, v in state.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            continue
        name = k[len("module."):] if k.startswith("module.") else k
        if _CLAP_KEYS.match(name):
            out[name] = v
        elif name == "logit_scale":
            out["logit_scale_log"] = v.reshape(())
    return out


def load_clap_state(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """An M2D-CLAP release (the ``.zip``, its run folder or the ``.pth``; see :func:`load_state`) with the joint
    space's projection and temperature (encoder-only weights have neither: the network's fit refuses them)."""
    return load_state(path, convert=convert_clap_state_dict)


register_family(Family("m2d_clap", build_frontend=LogMelSpectrogram, build_network=M2DClapNet,
                       load_state=load_clap_state))


# ---- the cards -------------------------------------------------------------------------------------------------
# M2D's LICENSE.pdf (not the BYOL-A/MSM-MAE evaluation agreement) grants use for non-commercial purposes
_M2D_LICENCE = ("NTT license for non-commercial use (LICENSE.pdf: use for non-commercial purposes only); "
                "https://github.com/nttcslab/m2d/blob/master/LICENSE.pdf")
_M2D_CITE = ("D. Niizumi, D. Takeuchi, Y. Ohishi, N. Harada, K. Kashino, \"Masked Modeling Duo: Towards a Universal "
             "Audio Pre-training Framework\", IEEE/ACM Trans. Audio, Speech, Language Process., vol. 32, "
             "pp. 2391-2406, 2024; and \"Masked Modeling Duo: Learning Representations by Encouraging Both Networks "
             "to Model the Input\", ICASSP 2023.")
_M2D_CLAP_CITE = ("D. Niizumi, D. Takeuchi, Y. Ohishi, N. Harada, M. Yasuda, S. Tsubaki, K. Imoto, \"M2D-CLAP: Masked "
                  "Modeling Duo Meets CLAP for Learning General-purpose Audio-Language Representation\", Interspeech "
                  "2024.")
#: the text encoder of the 2024 M2D-CLAP: thenlper/gte-base (BERT-base, uncased WordPiece), transformers' config
GTE_BASE = dict(vocab_size=30522, hidden=768, layers=12, heads=12, intermediate=3072, max_positions=512, type_vocab=2,
                pad_id=0, eps=1e-12)
GTE_FILES = ("gte-base-vocab.txt", "gte-base-model.safetensors")
_GTE_LICENCE = "; the GTE-base text encoder (thenlper/gte-base): MIT"
_TASKS = ("ESC-50", "US8K", "SPCV2", "VC1", "VoxForge", "CREMA-D", "GTZAN", "NSynth", "Surge")
_RELEASES = "https://github.com/nttcslab/m2d/releases/download/v0.1.0/"

for _name, _run, _unit, _patch, _what, _cite, _paper, _scores in [
    ("m2d-vit-base", "m2d_vit_base-80x608p16x16-221006-mr7", 608, (16, 16), "M2D/0.7", _M2D_CITE,
     "https://ieeexplore.ieee.org/document/10097236",
     # the EVAR linear evaluation (ICASSP 2023); no VoxForge, NSynth or Surge given there
     dict(zip(("ESC-50", "US8K", "SPCV2", "VC1", "CREMA-D", "GTZAN"), (89.8, 87.1, 94.5, 71.3, 71.6, 83.9)))),
    ("m2d-as-vit-base", "m2d_as_vit_base-80x608p16x16-240213", 608, (16, 16), "M2D-AS/0.7 (AudioSet-specialised)",
     _M2D_CITE, "https://ieeexplore.ieee.org/document/10502167",
     # TASLP 2024, Table V (linear evaluation)
     dict(zip(_TASKS, (96.1, 89.8, 95.7, 68.3, 98.4, 73.1, 86.9, 75.2, 41.7)))),
    ("m2d-clap-vit-base", "m2d_clap_vit_base-80x608p16x16-240128", 608, (16, 16), "M2D-CLAP/0.7 audio encoder",
     _M2D_CLAP_CITE, "https://arxiv.org/abs/2406.02032",
     # Interspeech 2024, Table 3 (linear evaluation)
     dict(zip(_TASKS, (96.3, 88.8, 95.8, 70.3, 98.3, 73.4, 84.1, 78.0, 42.4)))),
    ("m2d-vit-base-40ms", "m2d_vit_base-80x200p16x4-230529", 200, (16, 4), "M2D/0.7 with 40 ms time frames",
     _M2D_CITE, "https://ieeexplore.ieee.org/document/10502167", {}),
]:
    _hop = _patch[1] * 10
    _clap = _name == "m2d-clap-vit-base"
    _arch = dict(n_mels=80, unit_frames=_unit, patch_size=_patch, embed_dim=768, depth=12, num_heads=12,
                 mlp_ratio=4.0)
    register(ModelCard(
        name=_name, family="m2d_clap" if _clap else "m2d",
        description=(f"{_what} ViT-Base ({_run}), 80 Slaney mels in {_unit}-frame units, {_patch[0]}x{_patch[1]} "
                     f"patches, 3840-d frames every {_hop} ms"
                     + ("; GTE-base text tower, 768-d audio-text joint space (the default), zero-shot and text "
                        "search" if _clap else "")),
        sample_rate=16000, frontend=msm_mae.FRONTEND,
        arch=dict(_arch, text=GTE_BASE, joint_dim=768) if _clap else _arch,
        # the original runtime's fixed statistics: the checkpoint's norm_stats (set on loading), these when absent
        normalisation=Normalisation(*DEFAULT_NORM_STATS),
        weights=f"{_run}.zip",
        default_layer="joint" if _clap else "output",
        fusion_layers=("block7", "output"),
        companions=GTE_FILES if _clap else (),
        licence=_M2D_LICENCE + (_GTE_LICENCE if _clap else ""), citation=_cite, paper=_paper,
        # the original's audio pipeline is librosa.load(sr=16000) (wav_to_lms.py; EVAR's converter: librosa.resample)
        resampler="kaiser_best_librosa",
        published=_scores,
        cpu_batch_frames=16 * _unit,     # on a CPU 16 full units per batch, more of a shorter clip (issue 29)
    ))
