"""EfficientAT MobileNetV3 ("mn" models; Schmid, Koutini, Widmer, ICASSP 2023) with every block exposed, and the
dynamic MobileNet DyMN (``efficientat-dymn10-as``; the section "DyMN" below: the same layers and rules, each block
dynamic).

Network (``fschmid56/EfficientAT``, ``models/mn``): MobileNetV3-Large scaled by ``width_mult`` (channels
rounded to multiples of 8), one input channel, BatchNorm eps 1e-3, strides ``(2, 2, 2, 2)``: ``features[0]``
(3x3 conv stride 2, BN, hardswish), ``features[1..15]`` (inverted residual blocks: 1x1 expand, depthwise
k x k, squeeze-excitation on the channels where the block has one, 1x1 project, residual when the shape
allows), ``features[16]`` (1x1 conv to ``6 x`` the last width, BN, hardswish); head ``"mlp"``: global
average -> Linear -> hardswish -> dropout -> Linear (527 AudioSet logits). The squeeze-excitation averages
its block over frequency *and time* (the original's default ``se_dims="c"``). Parameter names are the
official checkpoints' (``features.K.block.J...``, ``classifier.2``, ``classifier.5``): they load strictly.

Layers (input: the normalised log-mel ``[B, 128, T]``, 10 ms frames at 32 kHz):

* ``block0`` .. ``block16``: ``features[K]``'s map ``[C, F, T_K]`` averaged over frequency, one frame per
  time step (stride 2, 2, 4, 4, 8, 8, 8, 16 x 6, 32 x 4 front-end frames); clip vector: the map's mean
  over frequency and time;
* ``features``: the frames of ``block16`` (one per 320 ms); clip vector: the original's pooled embedding
  ``features`` [384 for mn04] (global average of the last map);
* ``logits``: per frame, the classifier applied to that frame's ``features`` vector (frame-wise AudioSet
  logits); clip vector: the original's ``logits`` (the classifier on the pooled embedding).

A clip of ``T`` frames gives ``ceil(T / stride)`` steps per layer, as the original's padded convolutions.
In a batch, every map is zeroed past each row's own length before the next convolution and the
squeeze-excitation and global averages count only the row's own steps: a clip gives the same outputs alone
or in a batch.

Long audio: the squeeze-excitation makes every block depend on the whole input's average, so the network
has no finite receptive field and pieces with context could not reproduce the whole-clip computation.
Clips up to ``max_frames`` (60000 frames, 10 minutes; mn40: 12000, 2 minutes) therefore run whole, as the original's
``inference.py`` does (exact); longer clips are cut into independent windows of ``max_frames`` frames (each
with its own averages), frames are stitched and the clip vectors are the windows' averaged by the frames each
owns (for ``logits`` an average of the windows' logits).

Input audio is resampled as the original's ``librosa.load`` (librosa 0.9) does: resampy's ``kaiser_best``, then
cut or zero-padded to ``ceil(n * 32000 / sr)`` samples (the resampler ``"kaiser_best_librosa"`` of :mod:`audio_repr.audio`).
Tagging (the top AudioSet labels with scores, as the original's ``inference.py``: ``sigmoid`` of the clip's
``logits``) is :func:`audio_repr.inference.tagging.tag`; the cards name the label set (``labels="audioset"``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..frontends.efficientat import EfficientATMel
from ..registry import ModelCard, Normalisation, register
from ..weights import load_checkpoint, select_tensors
from . import register_family
from .base import Backbone, Family, LayerOutputs, Tiling, length_mask

__all__ = ["MobileNetV3", "DyMN", "build_network", "convert_state_dict", "load_state"]

_BN_EPS = 1e-3


def make_divisible(v: float, divisor: int = 8) -> int:
    """The TF MobileNet rounding of a channel count (never more than 10% below ``v``)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias, "same" padding) -> BatchNorm -> activation (torchvision's ConvNormActivation)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: Optional[type] = nn.Hardswish):
        layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(c_out, eps=_BN_EPS, momentum=0.01)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)
        self.stride, self.out_channels = stride, c_out

    def run(self, x: torch.Tensor, lengths: Optional[torch.Tensor]):
        """The map of ``x`` [B, C, F, T] zeroed past each row's steps (before a conv or an average reads them),
        and the rows' steps after it."""
        x = self(x)
        if self.stride > 1 and lengths is not None:
            lengths = _ceil_div(lengths, self.stride)                   # "same" padding
        return _zero_past_length(x, lengths), lengths


class SqueezeExcitation(nn.Module):
    """Channel attention: mean over frequency and time -> fc1 -> ReLU -> fc2 -> sigmoid -> scale."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(mean))))
        return x * s[:, :, None, None]


class ConcurrentSE(nn.Module):
    """The original's ``ConcurrentSEBlock`` with its default single squeeze-excitation (on the channels)."""

    def __init__(self, channels: int, r: int = 4):
        super().__init__()
        self.conc_se_layers = nn.ModuleList([SqueezeExcitation(channels, make_divisible(channels // r, 8))])


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, kernel: int, c_exp: int, c_out: int, use_se: bool, hardswish: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers: List[nn.Module] = []
        if c_exp != c_in:
            layers.append(ConvBNAct(c_in, c_exp, 1, act=act))
        layers.append(ConvBNAct(c_exp, c_exp, kernel, stride, groups=c_exp, act=act))
        if use_se:
            layers.append(ConcurrentSE(c_exp))
        layers.append(ConvBNAct(c_exp, c_out, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and c_in == c_out
        self.stride, self.out_channels = stride, c_out

    def run(self, x: torch.Tensor, lengths: Optional[torch.Tensor]):
        h = x
        for sub in self.block:
            if isinstance(sub, ConcurrentSE):
                h = sub.conc_se_layers[0](h, _mean_ft(h, lengths))
            else:
                h, lengths = sub.run(h, lengths)
        return (_zero_past_length(h + x, lengths) if self.use_res_connect else h), lengths


def adjust_channels(channels: int, width_mult: float) -> int:
    """A MobileNetV3-Large channel count at width ``width_mult`` (rounded to a multiple of 8)."""
    return make_divisible(channels * width_mult, 8)


@dataclass(frozen=True)
class BlockConfig:
    """One inverted residual block of MobileNetV3-Large at width 1 (as torchvision's ``InvertedResidualConfig``):
    channels in, depthwise kernel, expanded and out channels, squeeze-excitation, hardswish (else ReLU), and the
    stride: ``stride_index`` into the network's ``strides`` (``None``: stride 1)."""

    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    use_hardswish: bool
    stride_index: Optional[int] = None

    def channels(self, width_mult: float) -> Tuple[int, int, int]:
        """(in, expanded, out) channels at width ``width_mult``."""
        return (adjust_channels(self.input_channels, width_mult), adjust_channels(self.expanded_channels, width_mult),
                adjust_channels(self.out_channels, width_mult))

    def stride(self, strides: Tuple[int, int, int, int]) -> int:
        return 1 if self.stride_index is None else strides[self.stride_index]


#: features[1..15] of MobileNetV3-Large
BLOCKS: Tuple[BlockConfig, ...] = (
    BlockConfig(16, 3, 16, 16, False, False), BlockConfig(16, 3, 64, 24, False, False, 0),
    BlockConfig(24, 3, 72, 24, False, False), BlockConfig(24, 5, 72, 40, True, False, 1),
    BlockConfig(40, 5, 120, 40, True, False), BlockConfig(40, 5, 120, 40, True, False),
    BlockConfig(40, 3, 240, 80, False, True, 2), BlockConfig(80, 3, 200, 80, False, True),
    BlockConfig(80, 3, 184, 80, False, True), BlockConfig(80, 3, 184, 80, False, True),
    BlockConfig(80, 3, 480, 112, True, True), BlockConfig(112, 3, 672, 112, True, True),
    BlockConfig(112, 5, 672, 160, True, True, 3), BlockConfig(160, 5, 960, 160, True, True),
    BlockConfig(160, 5, 960, 160, True, True),
)

#: builds one block from its config, the network's width and strides
BlockBuilder = Callable[[BlockConfig, float, Tuple[int, int, int, int]], nn.Module]


def _inverted_residual(cfg: BlockConfig, width_mult: float, strides: Tuple[int, int, int, int]) -> nn.Module:
    c_in, c_exp, c_out = cfg.channels(width_mult)
    return InvertedResidual(c_in, cfg.kernel, c_exp, c_out, cfg.use_se, cfg.use_hardswish, cfg.stride(strides))


def _zero_past_length(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """``x`` [B, C, F, T] with time steps (last axis) at or beyond ``lengths`` [B] zeroed."""
    if lengths is None or bool((lengths >= x.shape[-1]).all()):   # nothing to zero: x * 1 would be x
        return x
    keep = length_mask(lengths.to(x.device), x.shape[-1])
    return x * keep[:, None, None, :].to(x.dtype)


def _ceil_div(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    return -torch.div(-lengths, stride, rounding_mode="floor")


def _mean_ft(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``x`` [B, C, F, T] (zero past ``lengths``) over frequency and each row's own steps: [B, C]."""
    if lengths is None:
        return x.mean(dim=(2, 3))
    return x.sum(dim=(2, 3)) / (lengths.to(x.dtype)[:, None] * x.shape[2])


class MobileNetV3(Backbone):
    """EfficientAT's ``MN`` with ``head_type="mlp"`` (see the module doc). ``forward`` -> :class:`LayerOutputs`."""

    clip_pooling = "token"

    def __init__(self, width_mult: float = 0.4, strides: Tuple[int, int, int, int] = (2, 2, 2, 2),
                 num_classes: int = 527, max_frames: int = 60000, *, block: BlockBuilder = _inverted_residual):
        """``block`` builds each of :data:`BLOCKS` (DyMN: a dynamic block). Modules are made in the original's
        order (the blocks, the first and last convs, the classifier), so a seeded random init is the original's."""
        super().__init__()
        blocks = [block(cfg, width_mult, strides) for cfg in BLOCKS]
        last_in = adjust_channels(160, width_mult)
        last = 6 * last_in
        layers: List[nn.Module] = [ConvBNAct(1, adjust_channels(16, width_mult), 3, 2), *blocks,
                                   ConvBNAct(last_in, last, 1)]
        self.features = nn.Sequential(*layers)
        hidden = adjust_channels(1280, width_mult)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(start_dim=1), nn.Linear(last, hidden),
                                        nn.Hardswish(), nn.Dropout(p=0.2), nn.Linear(hidden, num_classes))
        self.layer_dims: Dict[str, int] = OrderedDict()
        self.layer_strides: Dict[str, int] = OrderedDict()
        stride = 1
        for i, m in enumerate(layers):
            stride *= m.stride
            self.layer_dims[f"block{i}"], self.layer_strides[f"block{i}"] = m.out_channels, stride
        self.layer_dims["features"], self.layer_strides["features"] = last, stride
        self.layer_dims["logits"], self.layer_strides["logits"] = num_classes, stride
        self.min_frames = 1
        # the squeeze-excitation averages over the whole input: clips up to max_frames run whole (exact);
        # longer ones in independent windows of max_frames frames
        self.tiling = Tiling(chunk_frames=max_frames - max_frames % stride)

    def out_frames(self, n: int, layer: str) -> int:
        return -(-n // self.layer_strides[layer])

    def _maps(self, x: torch.Tensor, lengths: Optional[torch.Tensor]):
        """``(K, features[K]'s map [B, C, F, T_K], each row's steps)`` in turn."""
        if x.ndim == 3:
            x = x[:, None]
        x = _zero_past_length(x, lengths)
        for i, layer in enumerate(self.features):
            x, lengths = layer.run(x, lengths)
            yield i, x, lengths

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> LayerOutputs:
        outs, clips = LayerOutputs(), OrderedDict()
        last = None
        for i, m, lens in self._maps(x, lengths):
            outs[f"block{i}"] = m.mean(dim=2).transpose(1, 2)                 # [B, T_k, C]
            clips[f"block{i}"] = _mean_ft(m, lens)
            last = f"block{i}"
        outs["features"], clips["features"] = outs[last], clips[last]
        head = self.classifier[2:]
        outs["logits"], clips["logits"] = head(outs["features"]), head(clips["features"])
        outs.clip = clips
        return outs

    def feature_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Every ``features[K]`` map ``[B, C, F, T_K]`` of normalised features ``x`` [B, F, T] (whole clips):
        the original's ``return_fmaps``."""
        return [m for _, m, _ in self._maps(x, None)]


# ---- DyMN: the dynamic MobileNet -----------------------------------------------------------------------------------
# (``models/dymn`` of fschmid56/EfficientAT; Schmid, Koutini, Widmer, "Dynamic Convolutional Neural Networks as
# Efficient Pre-trained Audio Models", TASLP 2024.) The MobileNetV3 above with every inverted residual block
# replaced by a dynamic one, whose three convolutions, activation and attention are set per clip by a context
# computed from the block's input.

class DynamicConv(nn.Module):
    """``k`` kernels mixed per clip: ``softmax(residuals(context) / temperature)`` weighs them (the original's
    ``DynamicConv``, one attention group, no bias). ``weight`` keeps the original's layout
    ``[1, 1, k, out * in / groups * kernel * kernel]``."""

    def __init__(self, c_in: int, c_out: int, context: int, kernel: int, stride: int = 1, groups: int = 1,
                 k: int = 4, temperature: float = 1.0):
        super().__init__()
        self.c_in, self.c_out, self.kernel, self.stride, self.groups = c_in, c_out, kernel, stride, groups
        self.k, self.temperature = k, float(temperature)
        self.residuals = nn.Sequential(nn.Linear(context, k))
        w = torch.empty(k, c_out, c_in // groups, kernel, kernel)
        for i in range(k):
            nn.init.kaiming_normal_(w[i], mode="fan_out")
        self.weight = nn.Parameter(w.reshape(1, 1, k, -1))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, f, t = x.shape
        attention = F.softmax(self.residuals(context) / self.temperature, dim=-1)            # [B, k]
        w = attention @ self.weight.reshape(self.k, -1)                                      # [B, out * in/g * kk]
        if self.kernel == 1 and self.groups == 1:                                            # per clip: a matmul
            return torch.matmul(w.view(b, self.c_out, self.c_in), x.reshape(b, self.c_in, f * t)).view(b, -1, f, t)
        w = w.view(b * self.c_out, self.c_in // self.groups, self.kernel, self.kernel)
        y = F.conv2d(x.reshape(1, b * self.c_in, f, t), w, None, self.stride, (self.kernel - 1) // 2, 1,
                     self.groups * b)                                                        # per clip: its group
        return y.view(b, self.c_out, y.shape[-2], y.shape[-1])


class DyReLU(nn.Module):
    """Per clip and channel the maximum of ``m`` lines ``a_j x + b_j`` (the original's ``DyReLUB``):
    ``theta = 2 sigmoid(coef_net(context)) - 1``, slopes ``1 + theta`` / ``theta``, intercepts ``theta / 2``
    (``theta * lambdas + init_v``)."""

    def __init__(self, channels: int, context: int, m: int = 2):
        super().__init__()
        self.channels, self.m = channels, m
        self.coef_net = nn.Sequential(nn.Linear(context, 2 * m * channels))
        self.register_buffer("lambdas", torch.tensor([1.0] * m + [0.5] * m))
        self.register_buffer("init_v", torch.tensor([1.0] + [0.0] * (2 * m - 1)))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        theta = 2 * torch.sigmoid(self.coef_net(context)) - 1
        coef = theta.view(x.shape[0], self.channels, 2 * self.m) * self.lambdas + self.init_v     # [B, C, 2m]
        coef = coef[:, :, :, None, None]
        out = x * coef[:, :, 0] + coef[:, :, self.m]
        for j in range(1, self.m):
            out = torch.maximum(out, x * coef[:, :, j] + coef[:, :, self.m + j])
        return out


class ContextGen(nn.Module):
    """The block's context (the original's ``ContextGen``): the input averaged over time (one vector per frequency)
    and over frequency (one per time step), both through a shared 1x1 conv + BatchNorm + hardswish; their mean over
    all frequencies and time steps is the context vector (``[B, H]``) that sets the dynamic convolutions and the
    DyReLU; the frequency and time sequences (average-pooled by 3 with the block's stride) give the coordinate
    attention's ``conv_f`` / ``conv_t`` logits."""

    def __init__(self, context: int, c_in: int, c_exp: int, stride: int):
        super().__init__()
        self.joint_conv = nn.Conv2d(c_in, context, 1, bias=False)
        self.joint_norm = nn.BatchNorm2d(context, eps=_BN_EPS, momentum=0.01)
        self.conv_f = nn.Conv2d(context, c_exp, 1)
        self.conv_t = nn.Conv2d(context, c_exp, 1)
        self.stride = stride

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor]):
        """``x`` [B, C, F, T] (zero past ``lengths``) -> (context [B, H], frequency logits [B, E, F', 1], time
        logits [B, E, 1, T'])."""
        n_f = x.shape[2]
        if lengths is None:
            cf = x.mean(dim=3, keepdim=True)                                                 # [B, C, F, 1]
        else:
            cf = x.sum(dim=3, keepdim=True) / lengths.to(x.dtype)[:, None, None, None]
        ct = x.mean(dim=2, keepdim=True).transpose(2, 3)                                     # [B, C, T, 1]
        g = F.hardswish(self.joint_norm(self.joint_conv(torch.cat([cf, ct], dim=2))))         # [B, H, F + T, 1]
        h_f, h_t = g[:, :, :n_f], _zero_past_length(g[:, :, n_f:].transpose(2, 3), lengths)              # [B, H, 1, T]
        if lengths is None:
            context = g.mean(dim=(2, 3))
        else:
            context = (h_f.sum(dim=(2, 3)) + h_t.sum(dim=(2, 3))) / (n_f + lengths.to(x.dtype))[:, None]
        if self.stride > 1:                        # zero padding counted, as the original's AvgPool2d
            h_f = F.avg_pool2d(h_f, (3, 1), (self.stride, 1), (1, 0))
            h_t = F.avg_pool2d(h_t, (1, 3), (1, self.stride), (0, 1))
        return context, self.conv_f(h_f), self.conv_t(h_t)


class DynamicInvertedResidual(nn.Module):
    """The original's ``DY_Block``: context -> [dynamic 1x1 expand, BN, ReLU/hardswish] -> dynamic depthwise
    k x k (stride), BN, DyReLU -> coordinate attention (``x * sigmoid(freq) * sigmoid(time)``) -> dynamic 1x1
    project, BN (+ the input when the shape allows)."""

    def __init__(self, c_in: int, kernel: int, c_exp: int, c_out: int, hardswish: bool, stride: int,
                 width_mult: float, temperature: float = 1.0, k: int = 4, m: int = 2, context_ratio: int = 4,
                 min_context: int = 32, max_context: int = 128):
        super().__init__()
        context = min(max(make_divisible(c_exp // context_ratio, 8), make_divisible(min_context * width_mult, 8)),
                      make_divisible(max_context * width_mult, 8))
        self.act = F.hardswish if hardswish else F.relu
        if c_exp != c_in:
            self.exp_conv = DynamicConv(c_in, c_exp, context, 1, k=k, temperature=temperature)
            self.exp_norm = nn.BatchNorm2d(c_exp, eps=_BN_EPS, momentum=0.01)
        else:
            self.exp_conv = self.exp_norm = None
        self.depth_conv = DynamicConv(c_exp, c_exp, context, kernel, stride, groups=c_exp, k=k,
                                      temperature=temperature)
        self.depth_norm = nn.BatchNorm2d(c_exp, eps=_BN_EPS, momentum=0.01)
        self.depth_act = DyReLU(c_exp, context, m)
        self.proj_conv = DynamicConv(c_exp, c_out, context, 1, k=k, temperature=temperature)
        self.proj_norm = nn.BatchNorm2d(c_out, eps=_BN_EPS, momentum=0.01)
        self.context_gen = ContextGen(context, c_in, c_exp, stride)
        self.use_res_connect = stride == 1 and c_in == c_out
        self.stride, self.out_channels = stride, c_out

    def run(self, x: torch.Tensor, lengths: Optional[torch.Tensor]):
        context, att_f, att_t = self.context_gen(x, lengths)
        h = x
        if self.exp_conv is not None:                   # zero past the steps before the depthwise conv reads them
            h = _zero_past_length(self.act(self.exp_norm(self.exp_conv(h, context))), lengths)
        h = self.depth_norm(self.depth_conv(h, context))
        if self.stride > 1 and lengths is not None:
            lengths = _ceil_div(lengths, self.stride)
        h = self.depth_act(h, context) * torch.sigmoid(att_f) * torch.sigmoid(att_t)
        h = self.proj_norm(self.proj_conv(h, context))
        return _zero_past_length(h + x if self.use_res_connect else h, lengths), lengths


class DyMN(MobileNetV3):
    """EfficientAT's ``DyMN`` (every block dynamic, ``head_type="mlp"``), as :class:`MobileNetV3` otherwise: the
    same layers (``block0`` .. ``block16``, ``features``, ``logits``), masking and long-audio rule (the contexts
    average over the whole input: no finite receptive field). ``temperature``: the kernels' attention temperature,
    1 for the AudioSet weights (the original's ``pretrain_final_temp``)."""

    def __init__(self, width_mult: float = 1.0, strides: Tuple[int, int, int, int] = (2, 2, 2, 2),
                 num_classes: int = 527, max_frames: int = 60000, temperature: float = 1.0):
        def block(cfg: BlockConfig, width: float, block_strides: Tuple[int, int, int, int]) -> nn.Module:
            c_in, c_exp, c_out = cfg.channels(width)
            return DynamicInvertedResidual(c_in, cfg.kernel, c_exp, c_out, cfg.use_hardswish,
                                           cfg.stride(block_strides), width, temperature)

        super().__init__(width_mult, strides, num_classes, max_frames, block=block)


def build_network(network: str = "mn", **kwargs) -> MobileNetV3:
    """``network="mn"``: :class:`MobileNetV3`; ``"dymn"``: :class:`DyMN` (a card's ``arch``)."""
    if network not in ("mn", "dymn"):
        raise ValueError(f"unknown EfficientAT network {network!r} (expected 'mn' or 'dymn')")
    if network == "dymn":
        return DyMN(**kwargs)          # channels-last measured no faster for DyMN's per-clip kernels
    # channels-last: MobileNetV3's convolutions run 1.1-1.7x faster on CPU (oneDNN NHWC; mn04 at batch 4 x 10 s:
    # 1.7x), the same arithmetic up to float32 reordering; loading a state dict keeps the layout
    return MobileNetV3(**kwargs).to(memory_format=torch.channels_last)


_DYMN_NAMES = re.compile(r"^(?:in_c\.|layers\.(\d+)\.|out_c\.)")


def convert_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """An EfficientAT checkpoint -> our state dict, optionally wrapped in ``state_dict``/``model`` or behind a
    ``module.``/``model.``/``net.`` prefix: ``mn`` (``features.*``, ``classifier.*``: the same names) or DyMN
    (``in_c.*``, ``layers.N.*``, ``out_c.*``, ``classifier.*``: ``features.0.*``, ``features.N+1.*``,
    ``features.16.*``)."""
    sd = select_tensors(obj, ("features.", "classifier.", "in_c.", "layers.", "out_c."),
                        strip=r"^(?:module\.|model\.|net\.)+")
    if not any(_DYMN_NAMES.match(k) for k in sd):
        return sd
    last = 1 + len(BLOCKS)

    def rename(k: str) -> str:
        m = _DYMN_NAMES.match(k)
        if m is None:
            return k
        head = "features.0." if k.startswith("in_c.") else \
            f"features.{last}." if k.startswith("out_c.") else f"features.{int(m.group(1)) + 1}."
        return head + k[m.end():]

    return {rename(k): v for k, v in sd.items()}

def load_state(path) -> Dict[str, torch.Tensor]:
    return convert_state_dict(load_checkpoint(path))


register_family(Family("efficientat", build_frontend=EfficientATMel, build_network=build_network,
                       load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
_LICENCE = "MIT (Copyright (c) 2022 Florian Schmid; https://github.com/fschmid56/EfficientAT/blob/main/LICENSE)"
_CITE = ("F. Schmid, K. Koutini, G. Widmer, \"Efficient Large-Scale Audio Tagging via Transformer-to-CNN "
         "Knowledge Distillation\", ICASSP 2023.")
_FE = dict(sample_rate=32000, n_fft=1024, win_length=800, hop_length=320, n_mels=128, f_min=0.0, f_max=15000.0)

# max_frames: the longest clip run whole (exact); memory of a whole 10-minute clip on a CPU: mn04 0.7 GB,
# mn10 1.3 GB, mn40 ~5.4 GB, hence mn40's 2-minute windows (~1.1 GB; `enc.tiling = Tiling(60000)` for 10 minutes)
for _name, _w, _map, _file, _max in (("mn04", 0.4, 0.432, "mn04_as_mAP_432.pt", 60000),
                                     ("mn10", 1.0, 0.471, "mn10_as_mAP_471.pt", 60000),
                                     ("mn40", 4.0, 0.484, "mn40_as_mAP_484.pt", 12000)):
    register(ModelCard(
        name=f"efficientat-{_name}-as", family="efficientat",
        description=(f"EfficientAT MobileNetV3 {_name} (width {_w}, AudioSet mAP {_map}), 128 Kaldi mels at 32 kHz; "
                     f"frames every 320 ms = the last map averaged over frequency, clip = the original's pooled "
                     f"embedding"),
        sample_rate=32000, frontend=_FE,
        arch=dict(width_mult=_w, strides=(2, 2, 2, 2), num_classes=527, max_frames=_max),
        normalisation=Normalisation(-4.5, 5.0),       # the original's "fast normalisation" (x + 4.5) / 5
        default_layer="features", fusion_layers=("block1", "block3", "block6", "block12", "features"),
        weights=_file, licence=_LICENCE, citation=_CITE, paper="https://arxiv.org/abs/2211.04772",
        resampler="kaiser_best_librosa", cpu_batch_frames=4096, published={"AudioSet mAP": round(100 * _map, 1)},
        labels="audioset",                            # logits: the 527 AudioSet classes (tagging)
    ))

# the dynamic MobileNet: memory of a whole 10-minute clip on a CPU ~1.4 GB (measured: 0.68 GB for 5 minutes)
register(ModelCard(
    name="efficientat-dymn10-as", family="efficientat",
    description=("EfficientAT dynamic MobileNet DyMN10 (width 1.0, AudioSet mAP 0.477), 128 Kaldi mels at 32 kHz; "
                 "frames every 320 ms = the last map averaged over frequency, clip = the original's pooled embedding"),
    sample_rate=32000, frontend=_FE,
    arch=dict(network="dymn", width_mult=1.0, strides=(2, 2, 2, 2), num_classes=527, max_frames=60000,
              temperature=1.0),
    normalisation=Normalisation(-4.5, 5.0),
    default_layer="features", fusion_layers=("block1", "block3", "block6", "block12", "features"),
    weights="dymn10_as.pt", licence=_LICENCE,
    citation=("F. Schmid, K. Koutini, G. Widmer, \"Dynamic Convolutional Neural Networks as Efficient Pre-trained "
              "Audio Models\", IEEE/ACM Transactions on Audio, Speech, and Language Processing, 2024."),
    paper="https://arxiv.org/abs/2310.15648",
    resampler="kaiser_best_librosa", cpu_batch_frames=1024, published={"AudioSet mAP": 47.7},
    labels="audioset",
))
