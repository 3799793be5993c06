"""Tagging: the classes a model's ``logits`` layer scores highest for a clip, with their names.

A card that can tag names the label set of its ``logits`` layer (``ModelCard.labels``; EfficientAT and PANNs:
``"audioset"``, the 527 AudioSet classes). The scores are what the originals report for a clip: the
sigmoid of the clip-level logits computed over the whole clip (EfficientAT's ``inference.py``:
``torch.sigmoid(model(mel)[0])`` on the whole file; ``panns_inference``'s ``AudioTagging``: its
``clipwise_output``, the sigmoid of ``fc_audioset`` on the whole file's embedding).

**Long audio.** A clip the model runs whole (EfficientAT mn04/mn10/DyMN up to 10 minutes, mn40 and PANNs
up to 2 minutes: the backbone's :class:`~audio_repr.models.base.Tiling`) is tagged exactly as the original
tags it. A longer clip is cut into windows of that longest whole length (the last window is the clip's last
full window, overlapping the one before it), each window is tagged as the original tags a clip, and a class's
score is its **maximum** over the windows. The maximum, not the mean: AudioSet's labels are weak labels,
"the sound occurs somewhere in the clip", and a window that hears a 5-second siren says so with a high score;
the mean over the windows of a long recording would divide that score by the number of windows (and
averaging logits, as the encoder's clip vector does, would do the same in another scale). ``Tags.windows``
says how many windows a clip was tagged in (1: whole, as the original).

The AudioSet label list (``audio_repr/data/audioset_labels.csv``) is the originals' ``class_labels_indices.csv``,
byte-identical in ``fschmid56/EfficientAT`` (``metadata/``) and ``qiuqiangkong/audioset_tagging_cnn``
(``metadata/``; ``panns_inference`` downloads the same file from Google's AudioSet release): row ``i`` is
output ``i`` of both families' classifiers. The file is part of Google's AudioSet release
(http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/class_labels_indices.csv; the AudioSet
dataset files are licensed CC BY 4.0).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import torch


__all__ = ["tag", "Tags", "TaggingError", "label_names", "label_ids", "taggers", "LABEL_SETS"]

_DATA = Path(__file__).resolve().parent.parent / "data"

#: label set name -> (file in ``audio_repr/data``, a readable name)
LABEL_SETS = {"audioset": ("audioset_labels.csv", "AudioSet")}


class TaggingError(ValueError):
    """The model cannot tag (no label set for its ``logits`` layer), or the label set does not fit it."""


@lru_cache(maxsize=None)
def _label_rows(name: str) -> Tuple[Tuple[str, str], ...]:
    if name not in LABEL_SETS:
        raise TaggingError(f"unknown label set {name!r} (known: {', '.join(sorted(LABEL_SETS))})")
    path = _DATA / LABEL_SETS[name][0]
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    if header != ["index", "mid", "display_name"]:
        raise TaggingError(f"{path}: unexpected header {header}")
    for i, r in enumerate(rows):
        if len(r) != 3 or r[0] != str(i):
            raise TaggingError(f"{path}: row {i + 1} is {r}, expected index {i}")
    return tuple((mid, display) for _, mid, display in rows)


def label_names(name: str = "audioset") -> List[str]:
    """The class names of label set ``name``, in output order (``"audioset"``: 527 AudioSet display names)."""
    return [display for _, display in _label_rows(name)]


def label_ids(name: str = "audioset") -> List[str]:
    """The classes' ontology ids (AudioSet: ``/m/09x0r`` ...), in output order."""
    return [mid for mid, _ in _label_rows(name)]


@dataclass(frozen=True)
class Tags:
    """One clip's top classes: ``labels``, ``scores`` (descending) and ``indices`` (class indices), plus every
    class's score (``probabilities``), the model, the input's name and the windows it was tagged in."""

    labels: List[str]
    scores: torch.Tensor             # [k] float32, descending
    indices: torch.Tensor            # [k] int64, class indices into the label set
    probabilities: torch.Tensor      # [n_classes] float32, every class's score
    model: str
    name: str                        # the file's path, or "audio" / "audio[i]"
    windows: int = 1                 # 1: the whole clip at once, as the original; > 1: the maximum over windows

    def items(self) -> List[Tuple[str, float]]:
        """``[(label, score), ...]``, best first."""
        return list(zip(self.labels, self.scores.tolist()))

    def __len__(self) -> int:
        return len(self.labels)

    def __str__(self) -> str:
        how = f", maximum over {self.windows} windows" if self.windows > 1 else ""
        width = max((len(lb) for lb in self.labels), default=0)
        lines = [f"{self.name} ({self.model}{how}):"]
        lines += [f"  {lb:<{width}}  {s:.3f}" for lb, s in self.items()]
        return "\n".join(lines)


def taggers() -> List[str]:
    """The registered models that can tag (their card names a label set)."""
    from ..registry import get_card, list_models

    return [n for n in list_models() if get_card(n).labels]


def _whole_windows(encoder, n_samples: int) -> List[Tuple[int, int]]:
    """``(start, stop)`` sample ranges: the whole clip when the backbone runs it whole, else windows of the
    longest length it runs whole, every such length, the last one ending at the clip's end."""
    tiling = encoder.tiling
    if not tiling.independent_windows:                    # context pieces: the stitched result is the whole-clip one
        return [(0, n_samples)]
    stride = encoder.network.max_stride
    limit = max(stride, tiling.chunk_frames // stride * stride) + tiling.overlap_frames
    fe = encoder.frontend
    if fe.frames_for(n_samples) <= limit:
        return [(0, n_samples)]
    width = fe.min_samples(limit + 1) - 1     # the most samples that give `limit` frames
    out = [(a, a + width) for a in range(0, n_samples - width, width)]
    return out + [(n_samples - width, n_samples)]


def _label_set(encoder) -> List[str]:
    """The class names of the encoder's ``logits`` (raises :class:`TaggingError` for a model that cannot tag)."""
    card = encoder.card
    if not card.labels or "logits" not in encoder.layer_dims:
        can = taggers()
        raise TaggingError(f"{card.name} cannot tag: its card names no class labels for a 'logits' layer (it is "
                           f"an embedding model). Models that can tag: {', '.join(can) if can else 'none'}")
    names = label_names(card.labels)
    n_classes = encoder.layer_dims["logits"]
    if len(names) != n_classes:
        raise TaggingError(f"{card.name}: its 'logits' layer has {n_classes} outputs but the label set "
                           f"{card.labels!r} has {len(names)} classes")
    return names


def tag(encoder, audio, sr=None, top_k: int = 5, batch_size: Optional[int] = None,
        progress: Optional[Callable[[float], None]] = None) -> Union[Tags, List[Tags]]:
    """The ``top_k`` classes of each input (a path, array or tensor, or a list of them; ``sr`` as for
    :meth:`~audio_repr.Encoder.embed`) by the encoder's clip-level ``logits``, scored as the original: sigmoid of
    the whole clip's logits (long clips: the maximum over windows, see the module doc). ``top_k`` larger than
    the number of classes gives every class. ``progress(seconds)``: called after each batch with the seconds of
    audio (of windows) it finished, so a long file reports as it goes. Returns :class:`Tags` (a list of them for
    a list input). Raises :class:`TaggingError` for a model whose card names no label set."""
    card = encoder.card
    names = _label_set(encoder)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}")
    k = min(top_k, len(names))

    single = not isinstance(audio, (list, tuple))
    items = [audio] if single else list(audio)
    wavs = encoder.waveforms(audio, sr)       # read, downmixed, resampled with the card's resampler
    if single:
        wavs = [wavs]
    shown = [str(it) if isinstance(it, (str, os.PathLike)) else ("audio" if single else f"audio[{i}]")
             for i, it in enumerate(items)]
    segments, owner = [], []
    for i, w in enumerate(wavs):
        encoder.check_min_length(shown[i], w)  # said here, with the input's own name
        for a, b in _whole_windows(encoder, w.shape[-1]):
            segments.append(w[a:b])
            owner.append(i)
    embs = encoder.embed(segments, sr=encoder.sample_rate, layers=["logits"], batch_size=batch_size,
                         progress=progress or False)
    probs = torch.sigmoid(torch.stack([e.clip for e in embs]).float())            # [segments, n_classes]
    owner_t = torch.tensor(owner)
    out = []
    for i in range(len(wavs)):
        p = probs[owner_t == i].amax(dim=0)
        scores, idx = torch.topk(p, k)
        out.append(Tags(labels=[names[j] for j in idx.tolist()], scores=scores, indices=idx, probabilities=p,
                        model=card.name, name=shown[i], windows=int((owner_t == i).sum())))
    return out[0] if single else out
