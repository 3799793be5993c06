"""audio-repr: pretrained general-purpose audio encoders behind one faithful, batched API.

>>> import audio_repr
>>> "byola-v1-512" in audio_repr.list_models()
True
"""

from __future__ import annotations

from . import models  # noqa: F401  (every family module: registers the cards and networks)
from ._version import __version__  # noqa: F401  (the version, also in pyproject.toml)
from .audio import AudioError, TruncatedAudioWarning, load_audio
from .corpus import CorpusEmbeddings, read_embeddings
from .corpus_run import CorpusSummary, embed_corpus
from .inference import Embedding, Encoder
from .inference.loader import check_device, load
from .inference.zero_shot import search, similarity, zero_shot
from .registry import ModelCard, Normalisation, UnknownModelError, get_card, list_models
from .weights import HashMismatchError, WeightsError, WeightsNotFoundError


__all__ = ["load", "check_device", "list_models", "Encoder", "Embedding", "load_audio", "read_embeddings",
           "CorpusEmbeddings", "embed_corpus", "CorpusSummary", "get_card", "ModelCard", "Normalisation",
           "AudioError", "TruncatedAudioWarning", "UnknownModelError", "WeightsError", "WeightsNotFoundError",
           "HashMismatchError", "zero_shot", "similarity", "search"]
