"""PANNs CNN14 (Kong et al., TASLP 2020) with every conv block exposed: ``panns-cnn14`` (32 kHz) and
``panns-cnn14-16k`` (16 kHz).

Network (``qiuqiangkong/audioset_tagging_cnn``, ``pytorch/models.py``, ``Cnn14`` and ``Cnn14_16k``: the same
network on different front ends), on the log-mel ``[B, 64, T]`` (10 ms frames at either rate):

* ``bn0``: a BatchNorm over the 64 mel bands (the original transposes the mel axis into the channels), part of
  the network: the cards' normalisation is the identity;
* ``conv_block1`` .. ``conv_block6``: each two 3x3 convolutions (padding 1, no bias) + BatchNorm + ReLU, then a
  2x2 average pool (floor) — the last block's pool is 1x1 — on the map ``[C, T, F]`` (channels 64 .. 2048);
* head: the last map averaged over frequency, then over time its maximum plus its mean, ``fc1`` + ReLU
  (the original's 2048-d ``embedding``), ``fc_audioset`` + sigmoid (its ``clipwise_output``; 527 classes).

Parameter names are the official checkpoints' (``bn0``, ``conv_block1.conv1.weight``, ..., ``fc1``,
``fc_audioset``); their ``spectrogram_extractor.*``/``logmel_extractor.*`` buffers (the STFT kernels and the mel
matrix of the front end) are dropped on loading: :class:`~audio_repr.frontends.panns.PANNsLogMel` rebuilds them.

Layers:

* ``conv_block1`` .. ``conv_block6``: the block's map averaged over frequency, one vector per time step (stride
  2, 4, 8, 16, 32, 32 front-end frames); clip vector: the map's mean over frequency and the row's steps;
* ``embedding``: frames: per time step of the last map (averaged over frequency), the original's framewise
  path (``Cnn14_DecisionLevelMax``): a max-pool plus an average-pool over time (kernel 3, stride 1, padding 1),
  then ``fc1`` + ReLU; clip vector: the original's ``embedding`` (``fc1`` on the time maximum plus time mean);
* ``logits``: ``fc_audioset`` on each ``embedding`` frame; clip vector: the original's clip logits
  (``sigmoid`` of them is its ``clipwise_output``).

A clip of ``T`` frames gives ``T // 32`` steps (the original's floor pooling); it needs at least 32 frames
(0.31 s), as the original (shorter input leaves no time step to pool). In a batch every map is zeroed past each
row's own length before every convolution, the max-pools see ``-inf`` there and the time averages count only
the row's own steps: a clip gives the same outputs alone or in a batch.

Long audio: the convolutions have a finite receptive field, but the clip ``embedding`` takes the maximum and
mean over the whole clip. Clips up to ``max_frames`` (12000 frames, 2 minutes; the first block's maps of a
2-minute clip are 64 x 12000 x 64 floats, 200 MB each) therefore run whole (exact, as the original's ``inference.py``); longer clips are cut into
independent windows of ``max_frames`` frames, each also reading the next 32 frames (so that the last window
always has a time step), frames are stitched and the clip vectors are the windows' averaged by the frames each
owns.

Input audio is resampled as the original's ``librosa.load(path, sr=32000)`` (or 16000) does with the librosa it
pins (0.6.3, ``res_type="kaiser_best"``: resampy's ``kaiser_best``, then cut or zero-padded to
``ceil(n * sr_new / sr)`` samples): the resampler ``"kaiser_best_librosa"`` (librosa >= 0.10 would use
``soxr_hq`` instead).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..frontends.panns import PANNsLogMel
from ..registry import ModelCard, Normalisation, register
from ..weights import load_checkpoint, select_tensors
from . import register_family
from .base import Backbone, Family, LayerOutputs, Tiling, length_mask

__all__ = ["Cnn14", "convert_state_dict", "load_state"]


_WIDTHS = (64, 128, 256, 512, 1024, 2048)


class ConvBlock(nn.Module):
    """Two 3x3 convolutions (padding 1, no bias), each followed by BatchNorm and ReLU; the pool is the caller's."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)


def _zero_past_length(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """``x`` [B, C, T, F] with time steps (axis 2) at or beyond ``lengths`` [B] zeroed."""
    if lengths is None:
        return x
    keep = length_mask(lengths.to(x.device), x.shape[2])
    return x * keep[:, None, :, None].to(x.dtype)


class Cnn14(Backbone):
    """PANNs' ``Cnn14`` in eval mode (see the module doc). ``forward`` -> :class:`LayerOutputs`."""

    clip_pooling = "token"

    def __init__(self, n_mels: int = 64, num_classes: int = 527, max_frames: int = 12000):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(n_mels)
        c_in = 1
        for i, c in enumerate(_WIDTHS, start=1):
            setattr(self, f"conv_block{i}", ConvBlock(c_in, c))
            c_in = c
        self.fc1 = nn.Linear(c_in, c_in, bias=True)
        self.fc_audioset = nn.Linear(c_in, num_classes, bias=True)
        self.layer_dims: Dict[str, int] = OrderedDict()
        self.layer_strides: Dict[str, int] = OrderedDict()
        for i, c in enumerate(_WIDTHS, start=1):
            self.layer_dims[f"conv_block{i}"] = c
            self.layer_strides[f"conv_block{i}"] = 2 ** min(i, 5)
        self.layer_dims["embedding"], self.layer_strides["embedding"] = c_in, 32
        self.layer_dims["logits"], self.layer_strides["logits"] = num_classes, 32
        self.min_frames = 32
        # the clip embedding is a maximum and mean over the whole clip: clips up to max_frames run whole (exact);
        # longer ones in independent windows, each reading 32 frames past its own so the last one has a step
        self.tiling = Tiling(chunk_frames=max_frames - max_frames % 32, overlap_frames=32)

    def _maps(self, x: torch.Tensor, lengths: Optional[torch.Tensor]):
        """``(K, conv_blockK's map [B, C, T_K, F_K], each row's steps)`` in turn."""
        if x.ndim == 3:
            x = x[:, None]
        x = x.transpose(2, 3)                                                  # [B, 1, T, F] as the original
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)                        # BatchNorm over the mel bands
        for i in range(1, len(_WIDTHS) + 1):
            blk = getattr(self, f"conv_block{i}")
            x = F.relu(blk.bn1(blk.conv1(_zero_past_length(x, lengths))))
            x = F.relu(blk.bn2(blk.conv2(_zero_past_length(x, lengths))))
            if i < len(_WIDTHS):
                x = F.avg_pool2d(x, kernel_size=2)
                if lengths is not None:
                    lengths = torch.div(lengths, 2, rounding_mode="floor")
            x = _zero_past_length(x, lengths)
            yield i, x, lengths

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> LayerOutputs:
        outs, clips = LayerOutputs(), OrderedDict()
        last = lens = None
        for i, m, lens in self._maps(x, lengths):
            f = m.mean(dim=3)                                                  # [B, C, T_k]
            outs[f"conv_block{i}"] = f.transpose(1, 2)
            clips[f"conv_block{i}"] = f.mean(dim=2) if lens is None else \
                f.sum(dim=2) / lens.to(f.dtype)[:, None]
            last = f
        keep = None if lens is None else length_mask(lens.to(last.device), last.shape[-1])[:, None, :]
        neg = last if keep is None else last.masked_fill(~keep, float("-inf"))
        # the clip: the original's maximum plus mean over time (the row's own steps), fc1 + ReLU
        clip = neg.amax(dim=2) + clips[f"conv_block{len(_WIDTHS)}"]
        clips["embedding"] = F.relu(self.fc1(clip))
        # frames: the original's framewise path, max-pool + average-pool over 3 steps (zero / -inf past the end)
        smooth = F.max_pool1d(neg, 3, 1, 1) + F.avg_pool1d(last, 3, 1, 1)
        outs["embedding"] = F.relu(self.fc1(smooth.transpose(1, 2)))
        outs["logits"], clips["logits"] = self.fc_audioset(outs["embedding"]), self.fc_audioset(clips["embedding"])
        outs.clip = clips
        return outs

    def feature_maps(self, x: torch.Tensor):
        """Every conv block's map ``[B, C, T_K, F_K]`` (the original's layout) of log-mel ``x`` [B, F, T]."""
        return [m for _, m, _ in self._maps(x, None)]


_KEEP = ("bn0.", "conv_block", "fc1.", "fc_audioset.")


def convert_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """A PANNs checkpoint (``{"model": state dict, "iteration": ...}`` as released, or the state dict itself;
    optionally behind a ``module.`` prefix) -> our state dict (the same names). The front end's buffers
    (``spectrogram_extractor.*``, ``logmel_extractor.*``) are dropped: our front end rebuilds them."""
    return select_tensors(obj, _KEEP)


def load_state(path) -> Dict[str, torch.Tensor]:
    return convert_state_dict(load_checkpoint(path))


register_family(Family("panns", build_frontend=PANNsLogMel, build_network=Cnn14, load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
_LICENCE = "MIT (Copyright (c) 2018-2020 Qiuqiang Kong; https://github.com/qiuqiangkong/audioset_tagging_cnn/blob/master/LICENSE.MIT)"
_CITE = ("Q. Kong, Y. Cao, T. Iqbal, Y. Wang, W. Wang, M. D. Plumbley, \"PANNs: Large-Scale Pretrained Audio "
         "Neural Networks for Audio Pattern Recognition\", IEEE/ACM Transactions on Audio, Speech, and Language "
         "Processing, vol. 28, pp. 2880-2894, 2020.")

for _name, _sr, _fft, _hop, _fmax, _map, _file in (
        ("panns-cnn14", 32000, 1024, 320, 14000.0, 0.431, "Cnn14_mAP=0.431.pth"),
        ("panns-cnn14-16k", 16000, 512, 160, 8000.0, 0.438, "Cnn14_16k_mAP=0.438.pth")):
    register(ModelCard(
        name=_name, family="panns",
        description=(f"PANNs CNN14 (AudioSet mAP {_map}), 64 Slaney mels {50}-{int(_fmax)} Hz at {_sr // 1000} kHz; "
                     f"frames every 320 ms = fc1 on the last map's frequency mean (the original's framewise path), "
                     f"clip = the original's 2048-d embedding"),
        sample_rate=_sr,
        frontend=dict(sample_rate=_sr, n_fft=_fft, hop_length=_hop, n_mels=64, f_min=50.0, f_max=_fmax),
        arch=dict(n_mels=64, num_classes=527, max_frames=12000),
        normalisation=Normalisation(0.0, 1.0),        # bn0 (part of the network) normalises the log-mel
        default_layer="embedding",
        fusion_layers=("conv_block2", "conv_block4", "conv_block5", "conv_block6", "embedding"),
        weights=_file, licence=_LICENCE, citation=_CITE, paper="https://arxiv.org/abs/1912.10211",
        resampler="kaiser_best_librosa", cpu_batch_frames=2048, published={"AudioSet mAP": round(100 * _map, 1)},
        labels="audioset",                            # logits: the 527 AudioSet classes (tagging)
    ))
