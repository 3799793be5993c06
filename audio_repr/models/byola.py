"""BYOL-A networks (v1: AudioNTT2020, v2: AudioNTT2022) with every layer exposed.

Input: normalised log-mel ``[B, n_mels, T]`` and each clip's true frame count. Output: an
ordered dict ``layer name -> [B, T_layer, D_layer]``. Frames past a clip's true length are
zeroed after every convolution block, which is exactly what the convolutions' own zero
padding does when the clip is run alone: a clip gives the same outputs alone or in a batch.

Layer features of the convolution blocks are flattened channel-major (``c * F + f``) per time
step. The fully connected stack reads the last block flattened frequency-major
(``f * C + c``) as the original does.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, Mapping, Optional

import torch
from einops import rearrange
from torch import nn

from ..frontends import LogMelSpectrogram
from ..registry import ModelCard, Normalisation, register
from ..weights import load_checkpoint, unwrap_state_dict
from . import register_family
from .base import Backbone, Family, Tiling, length_mask


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=1, padding=1), nn.BatchNorm2d(c_out),
                         nn.ReLU(), nn.MaxPool2d(2, stride=2))


def _zero_past_length(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """``x`` with time steps (last axis) at or beyond ``lengths`` [B] zeroed."""
    if lengths is None:
        return x
    keep = length_mask(lengths.to(x.device), x.shape[-1]).to(x.dtype)
    return x * keep.view(x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])


class BYOLANet(Backbone):
    """Conv blocks (Conv3x3-BN-ReLU-MaxPool2) then Linear-ReLU-Dropout-Linear-ReLU per frame.

    v1 (AudioNTT2020): ``n_conv=3``, ``hidden = out = d``; standard output ``fc2`` [T/8, d].
    v2 (AudioNTT2022): ``n_conv=2``, ``hidden = 2048``, ``out = d_total - conv_d`` and the
    standard output ``output`` = concat(conv feature, fc2) [T/4, d_total].
    """

    def __init__(self, n_mels: int = 64, n_conv: int = 3, channels: int = 64, hidden: int = 512,
                 out: int = 512, stack_output: bool = False):
        super().__init__()
        self.n_conv, self.channels, self.stack_output = n_conv, channels, stack_output
        blocks = []
        for i in range(n_conv):
            blocks.extend(_conv_block(1 if i == 0 else channels, channels))
        # channels-last: the convolutions and max-pools run 1.3-1.9x faster on CPU (oneDNN's NHWC kernels) at
        # every batch shape measured; the same arithmetic up to float32 reordering (the weights keep the layout
        # when a state dict is loaded into them)
        self.features = nn.Sequential(*blocks).to(memory_format=torch.channels_last)
        self.conv_d = channels * (n_mels // 2 ** n_conv)
        self.fc = nn.Sequential(nn.Linear(self.conv_d, hidden), nn.ReLU(), nn.Dropout(p=0.3),
                                nn.Linear(hidden, out), nn.ReLU())
        self.stride = 2 ** n_conv
        f = n_mels
        self.layer_dims: Dict[str, int] = OrderedDict()
        self.layer_strides: Dict[str, int] = OrderedDict()
        for i in range(n_conv):
            f //= 2
            self.layer_dims[f"conv{i + 1}"] = channels * f
            self.layer_strides[f"conv{i + 1}"] = 2 ** (i + 1)
        self.layer_dims["fc1"], self.layer_dims["fc2"] = hidden, out
        self.layer_strides["fc1"] = self.layer_strides["fc2"] = self.stride
        if stack_output:
            self.layer_dims["output"] = self.conv_d + out
            self.layer_strides["output"] = self.stride
        self.min_frames = self.stride
        # pieces of 1024 frames (10.24 s) with 64 frames of context each side: wider than the receptive
        # field of the conv stack, so the stitched frames equal the whole-clip computation
        self.tiling = Tiling(chunk_frames=1024, context_frames=64)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> "OrderedDict[str, torch.Tensor]":
        if x.ndim == 3:
            x = x[:, None]
        x = x.contiguous(memory_format=torch.channels_last)
        outs: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        x = _zero_past_length(x, lengths)
        for i in range(self.n_conv):
            x = self.features[4 * i: 4 * i + 4](x)
            if lengths is not None:
                lengths = torch.div(lengths, 2, rounding_mode="floor")
            x = _zero_past_length(x, lengths)
            outs[f"conv{i + 1}"] = rearrange(x, "b c f t -> b t (c f)")      # channel-major
        conv_feat = rearrange(x, "b c f t -> b t (f c)")                   # frequency-major, as the original
        h = self.fc[0:2](conv_feat)
        outs["fc1"] = h
        h = self.fc[2:](h)
        outs["fc2"] = h
        if self.stack_output:
            outs["output"] = torch.cat([conv_feat, h], dim=-1)
        return outs


_KEY = re.compile(r"(?:^|\.)((?:features|fc)\.\d+\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def convert_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """Official BYOL-A checkpoints -> our state dict.

    Accepts a plain state dict (v1: ``features.{0,1,4,5,8,9}.*``, ``fc.{0,3}.*``), or one
    wrapped in ``state_dict``/``model`` and/or with a prefix such as ``model.`` or ``body.``
    (v2 training checkpoints). Keys that are not part of the encoder (projector, predictor,
    target network) are dropped.
    """
    obj = unwrap_state_dict(obj)
    out: Dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            continue
        if k.startswith(("target_", "online_encoder.projector", "projector", "predictor")):
            continue
        m = _KEY.search(k)
        if m is None:
            continue
        name = m.group(1)
        if name in out and k != name:
            continue  # prefer an unprefixed key when both exist
        out[name] = v
    return out


def load_state(path) -> Dict[str, torch.Tensor]:
    return convert_state_dict(load_checkpoint(path))


register_family(Family("byola", build_frontend=LogMelSpectrogram, build_network=BYOLANet, load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
# the LICENSE's section 1: "use the Software internally for the purposes of testing, analyzing, and evaluating the
# methods or mechanisms as shown in the research paper"; section 4(b): no distribution to any third party
_BYOLA_LICENCE = ("NTT Software License Agreement for Evaluation (internal testing, analysing and evaluating of "
                  "the paper's methods only; no redistribution); "
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
        normalisation=Normalisation(-5.4919195, 5.0389895), default_layer="fc2",
        weights=f"AudioNTT2020-BYOLA-64x96d{_d}.pth",
        fusion_layers=("conv1", "conv2", "conv3", "fc1", "fc2"),
        licence=_BYOLA_LICENCE, citation=_BYOLA_V1_CITE, paper="https://arxiv.org/abs/2103.06695",
        published=_V1_PUBLISHED.get(_d, {}), cpu_batch_frames=1024,
    ))

register(ModelCard(
    name="byola-v2-2048", family="byola",
    description="BYOL-A v2 (AudioNTT2022), 3072-d frames (1024 conv + 2048 fc), 64 Slaney mels, 40 ms frames",
    sample_rate=16000, frontend=dict(_BYOLA_FE, mel_scale="slaney"),
    arch=dict(n_mels=64, n_conv=2, channels=64, hidden=2048, out=2048, stack_output=True),
    # The statistics of the v2 README's example (SPCV2); calibrate() computes a dataset's own.
    normalisation=Normalisation(-9.660292, 4.7219563), default_layer="output",
    weights="AudioNTT2022-BYOLA-64x96d2048.pth",
    fusion_layers=("conv1", "conv2", "fc1", "fc2"),
    licence=_BYOLA_LICENCE, citation=_BYOLA_V2_CITE, paper="https://arxiv.org/abs/2204.07402", cpu_batch_frames=1024,
    published={"ESC-50": 83.2, "US8K": 79.7, "SPCV2": 93.1, "VC1": 57.6, "VoxForge": 93.3,
               "CREMA-D": 63.8, "GTZAN": 70.1, "NSynth": 73.1, "Surge": 37.6},
))
