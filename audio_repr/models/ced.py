"""CED (Dinkel et al., "CED: Consistent Ensemble Distillation for Audio Tagging", ICASSP 2024; ``RicherMans/CED``):
ViT audio taggers distilled from an ensemble of AudioSet teachers, ``ced-tiny`` (5.5 M parameters, AudioSet mAP 48.1),
``ced-mini`` (9.6 M, 49.0), ``ced-small`` (22 M, 49.6) and ``ced-base`` (86 M, 50.0), with the 527 AudioSet logits
and ``tag()``.

Written from the paper and from the observed behaviour of the released models (the original repository's code is
GPL-3.0 and is not part of this package; the tests compare against it run in a separate environment). The network
is the audio ViT this package uses for Dasheng, by the same authors (:class:`~audio_repr.models.dasheng.
AudioTransformer`) with 16 x 16 patches and a classifier:

* front end: the same dB mel spectrogram as Dasheng (64 HTK mels 0-8000 Hz, 512-point FFT, hop 10 ms, centred,
  ``top_db`` 120 below the clip's maximum: :class:`~audio_repr.frontends.decibel.DecibelMelSpectrogram`), then the
  network's batch norm over mels;
* 16 x 16 patches (4 frequency x one time patch per 160 ms), a time positional embedding of 63 columns (a
  1012-frame input) and a frequency one of 4 rows, tokens frequency-major; 12 pre-norm blocks (``qkv`` with bias,
  exact GELU, LayerNorm eps 1e-6) and a final LayerNorm;
* the classifier (``outputlayer``): LayerNorm (eps 1e-5) then Linear to 527, on the mean of all tokens: the
  logits. The released models' scores are their sigmoid.

Layers: ``block1`` .. ``block12`` (the residual stream after each block), ``output`` (after the final LayerNorm: the
standard embedding) and ``logits``. Frames: the tokens of each 160 ms step averaged over the 4 frequency patches,
timestamp the centre of the step's 16 frames (``75 + 160 i`` ms); for ``logits`` the classifier on that mean (the
original's frame-wise ``dm`` pooling before its sigmoid). Clip vectors (``clip_pooling = "token"``): the mean of the
window's tokens (``logits``: the classifier on it, the original's clip logits); a clip of several windows averages
its windows' vectors weighted by their frames. ``layers="fusion"``: ``block7`` + ``output``.

Length. A clip of up to 1012 frames (10.11 s) is encoded whole at its own length (``floor(frames / 16)`` time
patches, the positional embedding's first columns), as the original does. Longer audio is cut into windows of 63
patches (1008 frames) of one continuous patch grid, each encoded alone (the last one at its own length), so frames
keep one 160-ms grid. The original's ``forward`` instead cuts the spectrogram into 1012-frame pieces (the 4 frames
past each piece's 63 patches are not read), zero-pads the last piece to 1012 frames and encodes the padding, and
averages the pieces' sigmoid scores; its ``inference.py`` runs 10-s pieces of the waveform alone. ``tag()`` scores
long audio as the maximum over whole windows (see :mod:`audio_repr.inference.tagging`). In a batch, each row's
padded patches are masked as keys: a clip gives its alone numbers in any batch.

Checkpoints (:func:`load_state`): the released files (Zenodo record 8275319,
``audiotransformer_{tiny,mini,small,base}_mAP_*.pt``: the model's state dict, bare or under ``'model'``, as the
original's loader accepts) and the Hugging Face ports' state dicts (``mispeech/ced-*``: ``encoder.`` or ``ced.``
prefixes, ``init_bn.*``). The front end's buffers are dropped. The classes are AudioSet's in
``audio_repr/data/audioset_labels.csv`` order (the original's ``class_labels_indices.csv``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

import torch

from ..registry import ModelCard, Normalisation, register
from ..weights import WeightsError, load_checkpoint, unwrap_state_dict
from . import register_family
from .base import Family
from .dasheng import FRONTEND, AudioTransformer, build_frontend, convert_state

__all__ = ["CEDNet", "convert_checkpoint", "load_state"]


class CEDNet(AudioTransformer):
    """CED's network: :class:`~audio_repr.models.dasheng.AudioTransformer` with 16 x 16 patches, a 1012-frame
    positional table and the AudioSet classifier; clip vectors from the tokens (``clip_pooling = "token"``)."""

    clip_pooling = "token"

    def __init__(self, n_mels: int = 64, patch_size: Sequence[int] = (16, 16), embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, target_length: int = 1012, num_classes: int = 527):
        super().__init__(n_mels=n_mels, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, qkv_bias=True, init_values=None, target_length=target_length,
                         num_classes=num_classes)


_PREFIXES = ("encoder.", "ced.")


def convert_checkpoint(obj: Any) -> Dict[str, torch.Tensor]:
    """A CED checkpoint (the released state dict, bare or under ``'model'``; a Hugging Face port's) -> the state
    dict of :class:`CEDNet`."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"expected a CED state dict, got {type(obj).__name__}")
    state = unwrap_state_dict(obj, ("model",))
    out = convert_state(state, _PREFIXES)
    if not any(k.startswith("blocks.") for k in out):
        raise WeightsError("not a CED checkpoint: no blocks.* tensors")
    if not any(k.startswith("outputlayer.") for k in out):
        raise WeightsError("this checkpoint has no classifier (outputlayer.*): a Dasheng or MAE-pretrained encoder, "
                           "not a CED tagger")
    if "cls_token" in out:
        raise WeightsError("this checkpoint has a [CLS] token (pooling='token'); the released CED models pool by "
                           "the mean of the tokens")
    return out


def load_state(path) -> Dict[str, torch.Tensor]:
    """A CED weights file (``.pt`` / ``.bin`` / ``.safetensors``) or a Hugging Face folder -> :class:`CEDNet`'s
    state dict."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return convert_checkpoint(load_checkpoint(path / name, inert_others=True))
        raise WeightsError(f"{path}: no model.safetensors or pytorch_model.bin in this folder")
    return convert_checkpoint(load_checkpoint(path, inert_others=True))


register_family(Family("ced", build_frontend=build_frontend, build_network=CEDNet, load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
_LICENCE = ("Apache-2.0 (the weights as published on the Hugging Face Hub, mispeech/ced-*; the same models as Zenodo "
            "record 8275319). The original training code (RicherMans/CED) is GPL-3.0 and is not used here.")
_CITE = ("H. Dinkel, Y. Wang, Z. Yan, J. Zhang, Y. Wang, \"CED: Consistent Ensemble Distillation for Audio Tagging\", "
         "ICASSP 2024, pp. 291-295.")

for _name, _file, _dim, _heads, _params, _map, _as20k in [
    ("ced-tiny", "audiotransformer_tiny_mAP_4814.pt", 192, 3, "5.5 M", 48.1, 36.5),
    ("ced-mini", "audiotransformer_mini_mAP_4896.pt", 256, 4, "9.6 M", 49.0, 38.5),
    ("ced-small", "audiotransformer_small_mAP_4958.pt", 384, 6, "22 M", 49.6, 41.6),
    ("ced-base", "audiotransformer_base_mAP_4999.pt", 768, 12, "86 M", 50.0, 44.0),
]:
    register(ModelCard(
        name=_name, family="ced",
        description=(f"CED {_name[4:]} ({_params} parameters; ViT distilled from AudioSet ensembles, mAP {_map}), "
                     f"64 mels in dB, 16x16 patches, {_dim}-d frames every 160 ms, 527 AudioSet logits"),
        sample_rate=16000, frontend=FRONTEND,
        arch=dict(n_mels=64, patch_size=(16, 16), embed_dim=_dim, depth=12, num_heads=_heads, mlp_ratio=4.0,
                  target_length=1012, num_classes=527),
        normalisation=Normalisation(0.0, 1.0),        # none: the network's batch norm over mels normalises
        weights=_file, default_layer="output", fusion_layers=("block7", "output"),
        licence=_LICENCE, citation=_CITE, paper="https://arxiv.org/abs/2308.11957",
        published={"AudioSet mAP": _map, "AS-20K mAP": _as20k}, labels="audioset",
        cpu_batch_frames=16384,          # on a CPU 16 ~1000-frame windows per batch, more of shorter clips (issue 29)
    ))
