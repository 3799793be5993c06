"""Model cards: name -> family, front end, architecture, weights, layers and citation."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

__all__ = ["ModelCard", "register", "get_card", "list_models", "UnknownModelError"]


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str                      # key into audio_repr.models.FAMILIES
    description: str
    sample_rate: int
    frontend: Mapping                # keyword arguments of the family's front end
    arch: Mapping                    # keyword arguments of the family's network
    norm_stats: Tuple[float, float]  # (mean, std) of the log-mel, applied as (x - mean) / std
    default_layer: str
    fusion_layers: Tuple[str, ...]
    licence: str
    citation: str
    paper: str
    resampler: str = "sinc_hann"     # torchaudio's default windowed sinc (see audio.py)
    chunk_frames: int = 1024         # front-end frames per piece when encoding long audio
    context_frames: int = 64         # extra frames each side of a piece (>= receptive radius);
                                     # 0 = pieces are independent windows (the original's own units)
    norm: str = "fixed"              # "fixed": norm_stats (or calibrate()); "per_clip": each clip's own
    pad_value: Optional[float] = None  # frames past a clip's end: None = 0 after normalisation,
                                       # a number = that raw feature value before normalisation
    min_piece_frames: int = 0        # pad every piece's features to at least this many frames
    clip_pooling: str = "mean_max"   # clip embedding from the frames: "mean_max" (mean + max over time) or "mean";
                                     # "token": the network's own per-piece clip vectors (outputs.clip)
    overlap_frames: int = 0          # independent windows (context_frames=0) span chunk_frames + this, start
                                     # every chunk_frames, and the last one takes the rest when it fits
    cpu_batch_size: int = 16         # embed()'s default batch on a CPU (pieces per batch; measured per family:
                                     # CNNs whose activations outgrow the caches prefer small batches)
    published: Mapping = field(default_factory=dict)

    def to_dict(self) -> Dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["frontend"], d["arch"], d["published"] = dict(self.frontend), dict(self.arch), dict(self.published)
        return d


_REGISTRY: Dict[str, ModelCard] = {}


def register(card: ModelCard) -> ModelCard:
    if card.name in _REGISTRY:
        raise ValueError(f"model {card.name!r} registered twice")
    _REGISTRY[card.name] = card
    return card


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_models(family: Optional[str] = None) -> List[str]:
    """Registered model names (natural order), optionally of one family."""
    return sorted((n for n, c in _REGISTRY.items() if family is None or c.family == family), key=_natural)


def get_card(name: str) -> ModelCard:
    if name in _REGISTRY:
        return _REGISTRY[name]
    key = name.lower().replace("_", "-")
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}.{hint} Available: {', '.join(list_models())}")


# ----------------------------------------------------------------------------------------------
# BYOL-A
# ----------------------------------------------------------------------------------------------
_BYOLA_LICENCE = ("NTT Software License Agreement for Evaluation (evaluation only, no redistribution); "
                  "https://github.com/nttcslab/byol-a/blob/master/LICENSE")
_BYOLA_V1_CITE = ("D. Niizumi, D. Takeuchi, Y. Ohishi, N. Harada, K. Kashino, \"BYOL for Audio: "
                  "Self-Supervised Learning for General-Purpose Audio Representation\", IJCNN 2021.")
_BYOLA_V2_CITE = ("D. Niizumi, D. Takeuchi, Y. Ohishi, N. Harada, K. Kashino, \"BYOL for Audio: Exploring "
                  "Pre-trained General-purpose Audio Representations\", IEEE/ACM TASLP 31, 2023.")
_BYOLA_FE = dict(sample_rate=16000, n_fft=1024, win_length=1024, hop_length=160, n_mels=64,
                 f_min=60.0, f_max=7800.0)

_V1_PUBLISHED = {
    512: {"NSynth": 69.1, "US8K": 78.2, "VoxCeleb1": 33.4, "VoxForge": 83.5, "SPCV2/12": 86.5, "SPCV2": 88.9},
    2048: {"NSynth": 74.1, "US8K": 79.1, "VoxCeleb1": 40.1, "VoxForge": 90.2, "SPCV2/12": 91.0, "SPCV2": 92.2},
}

for _d in (512, 1024, 2048):
    register(ModelCard(
        name=f"byola-v1-{_d}", family="byola",
        description=f"BYOL-A v1 (AudioNTT2020), {_d}-d, 64 HTK mels, 80 ms frames",
        sample_rate=16000, frontend=dict(_BYOLA_FE, mel_scale="htk"),
        arch=dict(n_mels=64, n_conv=3, channels=64, hidden=_d, out=_d, stack_output=False),
        norm_stats=(-5.4919195, 5.0389895), default_layer="fc2",
        fusion_layers=("conv1", "conv2", "conv3", "fc1", "fc2"),
        licence=_BYOLA_LICENCE, citation=_BYOLA_V1_CITE, paper="https://arxiv.org/abs/2103.06695",
        published=_V1_PUBLISHED.get(_d, {}), cpu_batch_size=4,
    ))

register(ModelCard(
    name="byola-v2-2048", family="byola",
    description="BYOL-A v2 (AudioNTT2022), 3072-d frames (1024 conv + 2048 fc), 64 Slaney mels, 40 ms frames",
    sample_rate=16000, frontend=dict(_BYOLA_FE, mel_scale="slaney"),
    arch=dict(n_mels=64, n_conv=2, channels=64, hidden=2048, out=2048, stack_output=True),
    # The statistics of the v2 README's example (SPCV2); calibrate() computes a dataset's own.
    norm_stats=(-9.660292, 4.7219563), default_layer="output",
    fusion_layers=("conv1", "conv2", "fc1", "fc2"),
    licence=_BYOLA_LICENCE, citation=_BYOLA_V2_CITE, paper="https://arxiv.org/abs/2204.07402", cpu_batch_size=4,
    published={"ESC-50": 83.2, "US8K": 79.7, "SPCV2": 93.1, "VC1": 57.6, "VoxForge": 93.3,
               "CREMA-D": 63.8, "GTZAN": 70.1, "NSynth": 73.1, "Surge": 37.6},
))


# ----------------------------------------------------------------------------------------------
# VGGish (cards: see audio_repr/models/vggish.py for the network)
# ----------------------------------------------------------------------------------------------
_VGGISH_LICENCE = ("Apache-2.0 (tensorflow/models research/audioset/vggish; the PyTorch weights are "
                   "harritaylor/torchvggish's conversion of the TF release)")
_VGGISH_CITE = ("S. Hershey, S. Chaudhuri, D. P. W. Ellis, J. F. Gemmeke, A. Jansen, R. C. Moore, M. Plakal, "
                "D. Platt, R. A. Saurous, B. Seybold, M. Slaney, R. J. Weiss, K. Wilson, \"CNN Architectures for "
                "Large-Scale Audio Classification\", ICASSP 2017. Fusion and VGGish-4K: D. Niizumi, D. Takeuchi, "
                "Y. Ohishi, N. Harada, K. Kashino, \"Composing General Audio Representation by Fusing Multilayer "
                "Features of a Pre-trained Model\", EUSIPCO 2022.")
# TF vggish_input + mel_features: 25 ms periodic Hann frames every 10 ms (no centring), |rfft| of 512,
# 64 HTK mel bands 125-7500 Hz, log(mel + 0.01), examples of 96 frames (0.96 s) without overlap.
# tail="drop" is the original (the last partial 0.96 s is lost); enc.frontend.tail = "pad" keeps it.
_VGGISH_FE = dict(sample_rate=16000, win_length=400, hop_length=160, fft_size=512, n_mels=64, f_min=125.0,
                  f_max=7500.0, log_offset=0.01, example_frames=96, tail="drop")

for _name, _layer, _desc, _published in [
    ("vggish", "embedding",
     "VGGish (AudioSet), 128-d pre-activation embedding per 0.96 s example (TF's output)",
     {"EVAR avg (9 tasks)": 47.2, "ESC-50": 68.2, "fusion: EVAR avg": 71.3, "fusion: ESC-50": 86.5}),
    ("vggish-4k", "fc1_1_relu",
     "VGGish-4K: VGGish's first fc layer after its ReLU, 4096-d per 0.96 s example (EUSIPCO 2022)",
     {"EVAR avg (9 tasks)": 58.3, "ESC-50": 79.5, "fusion: EVAR avg": 71.3, "fusion: ESC-50": 86.5}),
]:
    register(ModelCard(
        name=_name, family="vggish", description=_desc,
        sample_rate=16000, frontend=_VGGISH_FE, arch=dict(n_mels=64, example_frames=96),
        norm_stats=(0.0, 1.0),                 # VGGish takes the log-mel as it is
        default_layer=_layer,
        # EUSIPCO 2022 "VGGish-Fusion#10#15": layers 9 and 14 (0-based), each pooled to 6 steps per example
        fusion_layers=("conv3_2_relu_pooled", "conv4_2_relu_pooled"),
        licence=_VGGISH_LICENCE, citation=_VGGISH_CITE, paper="https://arxiv.org/abs/1609.09430",
        resampler="kaiser_best",               # resampy's default, as vggish_input.waveform_to_examples
        chunk_frames=960, context_frames=0,    # pieces of 10 whole examples; examples are independent
        published=_published,
    ))


# ----------------------------------------------------------------------------------------------
# MSM-MAE
# ----------------------------------------------------------------------------------------------
_MSM_LICENCE = ("NTT Software License Agreement for Evaluation (evaluation only, no redistribution); "
                "https://github.com/nttcslab/msm-mae/blob/main/LICENSE")
_MSM_CITE = ("D. Niizumi, D. Takeuchi, Y. Ohishi, N. Harada, K. Kashino, \"Masked Spectrogram Modeling using "
             "Masked Autoencoders for Learning General-purpose Audio Representation\", HEAR: Holistic Evaluation "
             "of Audio Representations (NeurIPS 2021 Competition), PMLR 166:1-24, 2022.")
_MSM_FE = dict(sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80, f_min=50.0,
               f_max=8000.0, mel_scale="slaney")
_MSM_TASKS = ("ESC-50", "US8K", "SPCV2", "VC1", "VoxForge", "CREMA-D", "GTZAN", "NSynth", "Surge")

for _name, _unit, _release, _scores in [
    ("msm-mae-80x208", 208, "80x208p16x16_0422", (87.1, 82.2, 91.1, 49.7, 95.6, 66.9, 75.9, 76.5, 37.8)),
    ("msm-mae-80x512", 512, "80x512p16x16_0425", (88.9, 84.0, 92.4, 56.5, 96.8, 67.6, 81.4, 76.1, 37.4)),
    ("msm-mae-80x512-paper", 512, "80x512p16x16_paper", (89.1, 84.3, 93.1, 56.1, 97.5, 70.1, 79.3, 76.9, 37.5)),
]:
    register(ModelCard(
        name=_name, family="msm_mae",
        description=(f"MSM-MAE ViT-Base ({_release}), 80 Slaney mels in {_unit}-frame units, 16x16 patches, "
                     "3840-d frames every 160 ms"),
        sample_rate=16000, frontend=_MSM_FE,
        arch=dict(n_mels=80, unit_frames=_unit, patch_size=(16, 16), embed_dim=768, depth=12, num_heads=12,
                  mlp_ratio=4.0, use_cls_token=True),
        # Used only with fixed statistics (set_norm_stats/calibrate()); the default is per-clip statistics,
        # what the original runtime computes on a batch of one. These are the README's example numbers.
        norm_stats=(-5.4919195, 5.0389895), norm="per_clip",
        default_layer="output",
        # the original runtime's suggested fusion_layers [6, 11]: the 7th block and the normalised last block
        fusion_layers=("block7", "output"),
        licence=_MSM_LICENCE, citation=_MSM_CITE, paper="https://proceedings.mlr.press/v166/niizumi22a.html",
        # independent units as the original encode_lms: whole units, the last one zero-padded after normalisation
        chunk_frames=_unit, context_frames=0, min_piece_frames=_unit, pad_value=None,
        clip_pooling="mean",
        published=dict(zip(_MSM_TASKS, _scores)),
    ))


# ----------------------------------------------------------------------------------------------
# AST
# ----------------------------------------------------------------------------------------------
# The network and the long/short input rule: audio_repr/models/ast.py. Windows of `max_frames` fbank frames
# start every `hop = t0 * tstride` frames (t0 = time patches per window) and overlap by the rest.
_AST_LICENCE = "BSD-3-Clause (https://github.com/YuanGongND/ast/blob/master/LICENSE)"
_AST_CITE = ("Y. Gong, Y.-A. Chung, J. Glass, \"AST: Audio Spectrogram Transformer\", Interspeech 2021, "
             "pp. 571-575.")
_AST_FE = dict(sample_rate=16000, frame_length_ms=25.0, frame_shift_ms=10.0, n_mels=128, low_freq=20.0,
               high_freq=0.0, preemphasis=0.97, remove_dc_offset=True, window="hanning",
               round_to_power_of_two=True, subtract_clip_mean=True)


def _ast_card(name, description, stride, max_frames=1024, short="pad", stats=(-4.2677393, 4.5689974),
              published=None):
    t0 = (max_frames - 16) // stride + 1
    hop = t0 * stride
    return ModelCard(
        name=name, family="ast", description=description, sample_rate=16000, frontend=_AST_FE,
        arch=dict(n_mels=128, max_frames=max_frames, patch=16, fstride=stride, tstride=stride, dim=768,
                  depth=12, heads=12, mlp_dim=3072, eps=1e-6, short=short),
        norm_stats=(stats[0], 2.0 * stats[1]),            # AST normalises (x - mean) / (2 std)
        default_layer="block12", fusion_layers=("block5", "block12"),
        licence=_AST_LICENCE, citation=_AST_CITE, paper="https://arxiv.org/abs/2104.01778",
        chunk_frames=hop, context_frames=0, overlap_frames=max_frames - hop,
        pad_value=0.0,                                    # fbank 0 before normalising, as the originals
        min_piece_frames=max_frames if short == "pad" else 0,
        clip_pooling="token", published=published or {},
    )


register(_ast_card(
    "ast-audioset", "AST 10x10 (AudioSet, mAP 0.4593), 128 Kaldi mels, 768-d frames every 100 ms; "
    "clips under 10.24 s padded to 1024 frames", 10,
    published={"AudioSet mAP": 45.93, "EVAR avg": 65.5, "EVAR avg (fusion)": 69.8, "ESC-50": 93.5,
               "ESC-50 (fusion)": 94.2}))
register(_ast_card(
    "ast-audioset-crop", "AST 10x10 (AudioSet, mAP 0.4593) with the positional embedding centre-cropped "
    "to short clips instead of padding them to 1024 frames (faster; not the 1024-frame numbers)", 10,
    short="crop"))
for _s, _map in ((12, 44.67), (14, 44.31), (16, 44.22)):
    register(_ast_card(
        f"ast-audioset-{_s}-{_s}", f"AST {_s}x{_s} (AudioSet, mAP {_map / 100:.4f}), 128 Kaldi mels, "
        f"768-d frames every {_s * 10} ms", _s, published={"AudioSet mAP": _map}))
register(_ast_card(
    "ast-speechcommands", "AST 10x10 fine-tuned on Speech Commands V2-35 (accuracy 98.12%), windows of "
    "128 frames (1.28 s)", 10, max_frames=128, stats=(-6.845978, 5.5654526),
    published={"SPCV2-35": 98.12}))
