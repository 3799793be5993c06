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
        published=_V1_PUBLISHED.get(_d, {}),
    ))

register(ModelCard(
    name="byola-v2-2048", family="byola",
    description="BYOL-A v2 (AudioNTT2022), 3072-d frames (1024 conv + 2048 fc), 64 Slaney mels, 40 ms frames",
    sample_rate=16000, frontend=dict(_BYOLA_FE, mel_scale="slaney"),
    arch=dict(n_mels=64, n_conv=2, channels=64, hidden=2048, out=2048, stack_output=True),
    # The statistics of the v2 README's example (SPCV2); calibrate() computes a dataset's own.
    norm_stats=(-9.660292, 4.7219563), default_layer="output",
    fusion_layers=("conv1", "conv2", "fc1", "fc2"),
    licence=_BYOLA_LICENCE, citation=_BYOLA_V2_CITE, paper="https://arxiv.org/abs/2204.07402",
    published={"ESC-50": 83.2, "US8K": 79.7, "SPCV2": 93.1, "VC1": 57.6, "VoxForge": 93.3,
               "CREMA-D": 63.8, "GTZAN": 70.1, "NSynth": 73.1, "Surge": 37.6},
))


# ----------------------------------------------------------------------------------------------
# VGGish (cards: see audio_repr/models/vggish.py for the network)
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# MSM-MAE
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# AST
# ----------------------------------------------------------------------------------------------
