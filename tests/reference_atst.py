"""The original ATST-Frame (``Audio-WestlakeU/audiossl``, ``audiossl/methods/atstframe``: ``embedding.py``,
``audio_transformer.py``, ``model.py``, ``byol.py``; ``audiossl/modules/transformer.py``; ``audiossl/transforms/
common.py``), re-stated plainly for the tests, with torchaudio's transforms it calls re-stated from their documented
definitions (torchaudio cannot be installed beside this torch).

* :func:`mel_db`: ``MelSpectrogram(16000, f_min=60, f_max=7800, hop_length=160, win_length=1024, n_fft=1024,
  n_mels=64)`` (centred, reflect padding, periodic Hann, power 2, HTK mel without normalisation), then
  ``AmplitudeToDB(stype="power", top_db=80)`` on ``[B, 1, F, T]`` (``10 log10(max(x, 1e-10))``, floored at each
  item's maximum minus 80 dB), then ``MinMax(min=-79.6482, max=50.6842)``.
* :class:`FrameAST`: the encoder — patches by ``Rearrange('b c (h p1) (w p2) -> b (w h) (p1 p2 c)')`` and a
  ``Linear``, ``pos_embed[:, 1:T+1]`` added ("cut"), blocks with the additive ``-10000`` key mask past each row's
  ``patch_length``, hand-written attention, ``norm_frame`` on each returned block (``get_intermediate_layers``).
* :class:`TrainingFrameATST`: the Lightning module's layout (``model.student`` / ``model.teacher``, each an encoder
  plus the BYOL projector; the student also a predictor, BatchNorm buffers included), so that its ``state_dict()``
  has the released checkpoints' keys; :func:`lightning_checkpoint` wraps it the way Lightning's trainer saves.
* :func:`get_timestamp_embedding`, :func:`get_scene_embedding`: ``embedding.py`` (chunks of 1001 frames).
"""

import math
import sys
import types
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

DB_MIN, DB_MAX = -79.6482, 50.6842


# ---- torchaudio, re-stated ---------------------------------------------------------------------------------------
def htk_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate):
    """``torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk")`` ``[n_freqs, n_mels]``."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_min = 2595.0 * math.log10(1.0 + f_min / 700.0)
    m_max = 2595.0 * math.log10(1.0 + f_max / 700.0)
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down, up))


def mel_power(audio):
    """``MelSpectrogram`` of ``audio [B, 1, N]`` -> ``[B, 1, 64, T]``."""
    spec = torch.stft(audio.reshape(-1, audio.shape[-1]), 1024, hop_length=160, win_length=1024,
                      window=torch.hann_window(1024), center=True, pad_mode="reflect", normalized=False,
                      onesided=True, return_complex=True).abs().pow(2.0)
    mel = torch.matmul(spec.transpose(-1, -2), htk_fbanks(513, 60.0, 7800.0, 64, 16000)).transpose(-1, -2)
    return mel.reshape(*audio.shape[:-1], 64, -1)


def amplitude_to_db(x, top_db=80.0):
    """``AmplitudeToDB(stype="power", top_db=80)`` of ``[B, 1, F, T]``: the floor per item (channel, freq, time)."""
    x_db = 10.0 * torch.log10(torch.clamp(x, min=1e-10))
    x_db = x_db - 10.0 * math.log10(max(1e-10, 1.0))
    shape = x_db.shape
    packed = x_db.reshape(-1, shape[-3], shape[-2], shape[-1])
    packed = torch.max(packed, (packed.amax(dim=(-3, -2, -1)) - top_db).view(-1, 1, 1, 1))
    return packed.reshape(shape)


def minmax(x):
    return (x - DB_MIN) / (DB_MAX - DB_MIN) * 2.0 - 1.0


def mel_db(audio):
    """The original transform: MelSpectrogram -> AmplitudeToDB(top_db=80) -> MinMax, ``[B, 1, 64, T]``."""
    return minmax(amplitude_to_db(mel_power(audio)))


# ---- the encoder -----------------------------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            attn = attn + mask
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, length):
        B, L, _ = x.shape
        pad = torch.arange(L).expand(B, L) >= length[:, None]
        mask = (-10000.0 * pad[:, None, None, :]).expand(B, 1, L, L)
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class PatchEmbedV2(nn.Module):
    def __init__(self, patch_h=64, patch_w=4, dim=768):
        super().__init__()
        self.patch_height, self.patch_width = patch_h, patch_w
        self.patch_embed = nn.Linear(patch_h * patch_w, dim)

    def forward(self, mel, length):
        h = mel.shape[2] - mel.shape[2] % self.patch_height
        w = mel.shape[3] - mel.shape[3] % self.patch_width
        B, c = mel.shape[0], mel.shape[1]
        x = mel[:, :, :h, :w].reshape(B, c, h // self.patch_height, self.patch_height, w // self.patch_width,
                                      self.patch_width)
        # 'b c (h p1) (w p2) -> b (w h) (p1 p2 c)'
        x = x.permute(0, 4, 2, 3, 5, 1).reshape(B, (w // self.patch_width) * (h // self.patch_height), -1)
        patch_length = (h // self.patch_height) * ((length - length % self.patch_width) // self.patch_width)
        return self.patch_embed(x), patch_length


class FrameAST(nn.Module):
    def __init__(self, spec_h=64, spec_w=1001, patch_h=64, patch_w=4, dim=768, depth=12, heads=12):
        super().__init__()
        self.patch_embed = PatchEmbedV2(patch_h, patch_w, dim)
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, dim))
        n = (spec_h // patch_h) * (spec_w // patch_w)
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm_frame = nn.LayerNorm(dim, eps=1e-6)

    def get_intermediate_layers(self, x, length, n=1, scene=True):
        x, patch_length = self.patch_embed(x, length)
        x = x + self.pos_embed[:, 1: x.shape[1] + 1].expand(x.shape[0], -1, -1)
        out = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, patch_length)
            if len(self.blocks) - i <= n:
                norm_x = self.norm_frame(x)
                if scene:
                    keep = torch.arange(x.shape[1]) < patch_length.unsqueeze(1)
                    out.append(torch.sum(norm_x * keep.unsqueeze(-1), dim=1) / (patch_length.unsqueeze(-1) + 1e-6))
                else:
                    out.append(norm_x)
        return torch.cat(out, dim=-1)


def build_mlp(num_layers, input_dim, mlp_dim, output_dim):
    layers = []
    for i in range(num_layers):
        d1 = input_dim if i == 0 else mlp_dim
        d2 = output_dim if i == num_layers - 1 else mlp_dim
        layers.append(nn.Linear(d1, d2, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d2), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Wrapper(nn.Module):
    def __init__(self, encoder, dim, predictor):
        super().__init__()
        self.encoder = encoder
        self.projector = build_mlp(2, dim, 64, 16)
        self.predictor = build_mlp(2, 16, 64, 16) if predictor else nn.Identity()


class FrameATST(nn.Module):
    def __init__(self, **arch):
        super().__init__()
        dim = arch.get("dim", 768)
        self.student = Wrapper(FrameAST(**arch), dim, predictor=True)
        self.teacher = Wrapper(FrameAST(**arch), dim, predictor=False)


class TrainingFrameATST(nn.Module):
    """``FrameATSTLightningModule``'s layout: ``model.{student,teacher}.{encoder,projector[,predictor]}``."""

    def __init__(self, seed=0, **arch):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.model = FrameATST(**arch)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if "norm" in name and name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
            for b in self.model.buffers():
                if b.dtype.is_floating_point:
                    b.copy_(torch.rand(b.shape, generator=g) + 0.5)
        for p in self.model.teacher.parameters():
            p.requires_grad = False

    @property
    def teacher(self):
        return self.model.teacher.encoder


# ---- Lightning's checkpoint ---------------------------------------------------------------------------------------
@contextmanager
def lightning_attribute_dict(module="lightning_fabric.utilities.data"):
    """A stand-in ``AttributeDict`` importable under Lightning's module name while the checkpoint is pickled, so the
    file names the class a real Lightning checkpoint names (Lightning itself is not installed here)."""
    parts = module.split(".")
    saved = {n: sys.modules.get(n) for n in (".".join(parts[: i + 1]) for i in range(len(parts)))}
    cls = type("AttributeDict", (dict,), {"__module__": module, "__getattr__": dict.get})
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        if sys.modules.get(name) is None:
            sys.modules[name] = types.ModuleType(name)
    sys.modules[module].AttributeDict = cls
    try:
        yield cls
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


HPARAMS = dict(save_path="/data/atst/frame_base", nproc=6, patch_h=64, patch_w=4, arch="base", symmetric=True,
               nprompt=0, learning_rate=8e-5 * 6 * 144 / 256, ema=0.9996, warmup_steps=19900, max_steps=398000,
               pos_type="cut", avg_blocks=0, patch_embed="Linear", data_path="/data/audioset", batch_size_per_gpu=144,
               num_workers=10, subset=3000000, win_length=1024, aug_tea=False, aug_stu=True, freq_wrap=True,
               mix_up=True, anchor_len=10.0, mask_ratio=0.65, mask_len=5, min_mask_len=2, n_mels=64,
               mask_type="block", spec_h=64)


def lightning_checkpoint(module: TrainingFrameATST, hparams=None, attribute_dict_module="lightning_fabric.utilities.data",
                         path=None):
    """Save what Lightning's ``trainer.save_checkpoint`` writes for the training run (``ModelCheckpoint``
    state, loops, an AdamW state after one step, hyper-parameters as an ``AttributeDict``) to ``path``."""
    student = [p for p in module.model.student.parameters()]
    opt = torch.optim.AdamW(student, lr=1e-4, weight_decay=0.0)
    for p in student:
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    for p in student:
        p.grad = None
    with lightning_attribute_dict(attribute_dict_module) as AttributeDict:
        hp = AttributeDict(dict(HPARAMS, **(hparams or {})))
        dm = AttributeDict(data_path="/data/audioset", batch_size_per_gpu=144, num_workers=10, n_mels=64)
        ckpt = {
            "epoch": 199, "global_step": 398000, "pytorch-lightning_version": "1.9.4",
            "state_dict": module.state_dict(),
            "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 398000},
                                   "epoch_loop.batch_progress": {"total": {"ready": 398000, "completed": 398000},
                                                                 "is_last_batch": False}}},
            "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, "
                          "'every_n_epochs': 20, 'train_time_interval': None}": {
                              "monitor": None, "best_model_score": None, "best_model_path": "",
                              "current_score": None, "dirpath": "/data/atst/frame_base", "best_k_models": {},
                              "kth_best_model_path": "", "kth_value": torch.tensor(float("inf")),
                              "last_model_path": "/data/atst/frame_base/last.ckpt"}},
            "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
            "hparams_name": "kwargs", "hyper_parameters": hp,
            "datamodule_hparams_name": "kwargs", "datamodule_hyper_parameters": dm,
            "sampler_state": np.arange(4, dtype=np.int64),
        }
        if path is not None:
            torch.save(ckpt, path)
    return ckpt


# ---- embedding.py ----------------------------------------------------------------------------------------------
def _chunks(mel):
    chunk_len = 1001
    total = mel.shape[-1]
    for i in range(total // chunk_len + 1):
        start, end = i * chunk_len, min((i + 1) * chunk_len, total)
        if end > start:
            yield mel[:, :, :, start:end]


@torch.no_grad()
def get_timestamp_embedding(audio, encoder, n_blocks=12):
    """``audio [B, N]`` -> ``[B, T, n_blocks * D]`` (each block through ``norm_frame``, the last ``n_blocks``)."""
    mel = mel_db(audio[:, None])
    out = []
    for chunk in _chunks(mel):
        length = torch.tensor([chunk.shape[-1]]).expand(mel.shape[0])
        out.append(encoder.get_intermediate_layers(chunk, length, n=n_blocks, scene=False))
    return torch.cat(out, dim=1)


@torch.no_grad()
def get_scene_embedding(audio, encoder, n_blocks=12):
    mel = mel_db(audio[:, None])
    out = []
    for chunk in _chunks(mel):
        length = torch.tensor([chunk.shape[-1]]).expand(mel.shape[0])
        out.append(encoder.get_intermediate_layers(chunk, length, n=n_blocks, scene=True))
    return torch.stack(out).mean(dim=0)
