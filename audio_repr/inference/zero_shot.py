"""Audio-text: :func:`zero_shot` (per-clip probabilities over labels, as the originals score them),
:func:`similarity` (cosine similarities) and :func:`search` (the texts' nearest clips of an embedded corpus).
Re-exported as ``audio_repr.zero_shot``, ``audio_repr.similarity`` and ``audio_repr.search``."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["zero_shot", "similarity", "search", "check_corpus", "prompts"]


def _matrix(x, what: str) -> torch.Tensor:
    from .embedding import Embedding

    if isinstance(x, Embedding):
        x = x.clip
    elif isinstance(x, (list, tuple)) and x and all(isinstance(e, Embedding) for e in x):
        x = torch.stack([torch.as_tensor(e.clip) for e in x])
    t = torch.as_tensor(np.asarray(x) if isinstance(x, (list, tuple)) else x)
    if not (t.is_floating_point()):
        raise ValueError(f"similarity: {what} must hold floating-point vectors, got {t.dtype}")
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"similarity: {what} must be a vector [D] or a matrix [N, D], got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"similarity: {what} holds NaN or infinite values")
    return t.to(torch.float32)


def similarity(a, b) -> torch.Tensor:
    """Cosine similarities ``[N, M]`` between the rows of ``a`` ``[N, D]`` and of ``b`` ``[M, D]`` (vectors ``[D]``,
    arrays, tensors, or :class:`Embedding`\\ s, whose clip vectors are used); each row is L2-normalised first, so
    clip vectors that average several windows compare as the originals compare unit vectors."""
    x, y = _matrix(a, "a"), _matrix(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"similarity: the vectors have different sizes ({x.shape[1]} and {y.shape[1]}): "
                         f"compare embeddings of one joint space (an audio-text model's 'joint' layer and its texts)")
    x = torch.nn.functional.normalize(x, dim=-1)
    y = torch.nn.functional.normalize(y, dim=-1)
    return x @ y.T


def prompts(labels: Sequence[str], template: str) -> List[str]:
    """``template`` filled with each label (``{}`` marks where it goes)."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"template must contain '{{}}' once, where the label goes (e.g. 'This is a sound of {{}}.'), "
                         f"got {template!r}")
    return [template.replace("{}", label) for label in labels]


def _check_labels(labels) -> List[str]:
    if isinstance(labels, str):
        raise ValueError("labels must be a list of strings (one per class), not one string")
    labels = list(labels)
    if len(labels) < 2:
        raise ValueError(f"zero-shot classification needs at least two labels, got {len(labels)}")
    bad = [x for x in labels if not isinstance(x, str) or not x.strip()]
    if bad:
        raise ValueError(f"labels must be non-empty strings, got {bad[0]!r}")
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"a label is repeated: {dup[0]!r}")
    return labels


def zero_shot(enc, audio, labels: Sequence[str], *, template: Optional[str] = None, sr=None,
              batch_size: Optional[int] = None) -> torch.Tensor:
    """Zero-shot classification: each clip's probabilities over ``labels`` ``[N_clips, N_labels]`` (one input:
    ``[N_labels]``), the softmax of ``logit_scale * cos(audio, text)`` as the original scores it.

    ``enc``: an encoder with a text tower (``enc.has_text``); ``audio``: what :meth:`Encoder.embed` takes;
    ``template``: the prompt, ``{}`` for the label (default: the model's, e.g. ``'This is a sound of {}.'``).
    The texts are embedded first, so a missing tokenizer or a bad label fails before the audio is read."""
    if not getattr(enc, "has_text", False):
        raise ValueError(f"{getattr(enc, 'name', enc)!r} has no text tower: zero-shot classification needs an "
                         f"audio-text model (e.g. laion-clap-htsat)")
    labels = _check_labels(labels)
    template = enc.network.default_template if template is None else template
    text = enc.embed_text(prompts(labels, template))
    embs = enc.embed(audio, sr=sr, layers="joint", batch_size=batch_size)
    single = not isinstance(embs, list)
    clips = torch.stack([torch.as_tensor(e.clip) for e in ([embs] if single else embs)])
    logits = enc.network.logit_scale() * similarity(clips, text)
    probs = logits.softmax(dim=-1)
    return probs[0] if single else probs


def search(enc, clips, texts: Union[str, Sequence[str]], *, top_k: int = 10) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``top_k`` clips nearest each text: ``(scores [N_texts, k], indices [N_texts, k])``, cosine similarity
    between ``enc.embed_text(texts)`` and the clip vectors, best first; ties keep the corpus order.

    ``clips``: a matrix ``[N, D]`` of the model's ``joint`` clip vectors, or what
    :func:`audio_repr.read_embeddings` returns for a folder ``audio-repr embed`` wrote — which is checked first:
    embedded by the same model (``enc.name``), with the ``joint`` layer alone."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive whole number, got {top_k!r}")
    if hasattr(clips, "model") and hasattr(clips, "layers") and hasattr(clips, "clip"):
        check_corpus(enc.name, clips)
        clips = clips.clip
    sims = similarity(enc.embed_text(texts), clips)
    k = min(top_k, sims.shape[1])
    order = torch.argsort(-sims, dim=1, stable=True)[:, :k]
    return torch.gather(sims, 1, order), order


def check_corpus(model: str, corpus, where: str = "the embeddings") -> None:
    """Refuse a corpus (``read_embeddings``) that the texts of ``model`` cannot be compared with, in one line."""
    if corpus.model != model:
        raise ValueError(f"{where} were made by model {corpus.model!r}, not {model!r}: text search compares "
                         f"texts with the audio embeddings of the same model (embed the audio with --model {model}, "
                         f"or search with --model {corpus.model})")
    if list(corpus.layers) != ["joint"]:
        raise ValueError(f"{where} hold the layers {list(corpus.layers)}, not the joint space: text search needs the "
                         f"'joint' layer alone (audio-repr embed --model {model} without --layers)")
