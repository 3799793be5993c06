"""The original EAT (``cwx-worst-one/EAT``: ``models/EAT_pretraining.py``, ``models/images.py``, ``models/base.py``,
``models/modules.py``, ``models/mae.py``, ``feature_extract/feature_extract.py``), re-stated plainly for the tests.

* :class:`Data2VecMulti`: the pre-training model's module layout (``modality_encoders.IMAGE.{local_encoder.proj,
  extra_tokens, fixed_positional_encoder.positions, context_encoder.norm, decoder.*}``, ``blocks.N.*``) and, in
  ``state_dict()``, the EMA teacher under ``_ema`` as data2vec 2.0 saves it; :meth:`Data2VecMulti.extract_features`
  is ``extract_features(x, padding_mask=None, mask=False, remove_extra_tokens=False)``: patch ``Conv2d`` of the
  ``[B, 1, T, 128]`` image, the positional table cut to the tokens, the extra token prepended, the context encoder's
  LayerNorm, post-norm ``AltBlock``s with hand-written attention (``padding_mask`` filled with ``-inf``), no final
  norm. ``layers=True`` also returns each block's output.
* :func:`fairseq_checkpoint`: what fairseq's trainer saves (``args``, ``cfg`` as plain dicts, ``model``,
  ``criterion``, ``optimizer_history``, ``task_state``, ``extra_state``, ``last_optimizer_state``).
* :func:`hub_state`: the Hub's ``EATModel`` state dict (``model.local_encoder`` ... ``model.pre_norm``).
* :func:`preprocess`: ``feature_extract.py``'s input (mean removed, Kaldi fbank via transformers' numpy port
  (torchaudio is not installable here), zero-padded to a multiple of 16 frames, ``(x + 4.268) / (2 * 4.569)``).
"""

import warnings

import numpy as np
import torch
from torch import nn

EPS = float(np.finfo(np.float32).eps)


# ---- mae.py ------------------------------------------------------------------------------------------------------
def get_1d_sincos(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float32)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_flexible(embed_dim, grid_size):
    grid_h = np.arange(grid_size[0], dtype=np.float32)
    grid_w = np.arange(grid_size[1], dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size[0], grid_size[1]])
    return np.concatenate([get_1d_sincos(embed_dim // 2, grid[0]), get_1d_sincos(embed_dim // 2, grid[1])], axis=1)


# ---- modules.py --------------------------------------------------------------------------------------------------
class AltAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, padding_mask=None):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if padding_mask is not None and padding_mask.any():
            attn = attn.masked_fill(padding_mask.unsqueeze(1).unsqueeze(2).to(torch.bool), float("-inf"))
        attn = attn.softmax(dim=-1, dtype=torch.float32)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class AltBlock(nn.Module):
    """``layer_norm_first=False``."""

    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = AltAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, padding_mask=None):
        x = x + self.attn(x, padding_mask)
        r = x = self.norm1(x)
        x = self.mlp(x)
        return self.norm2(r + x)


class PatchEmbedNew(nn.Module):
    def __init__(self, dim, patch=16):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class FixedPositionalEncoder(nn.Module):
    def __init__(self, positions):
        super().__init__()
        self.positions = positions


class BlockEncoder(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.norm = nn.LayerNorm(dim, eps=1e-6)


class Decoder2d(nn.Module):
    """The CNN decoder's parameter layout (pre-training only)."""

    def __init__(self, dim, decoder_dim=32, layers=2):
        super().__init__()
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(dim if i == 0 else decoder_dim, decoder_dim, 3,
                                                              padding=1, groups=16), nn.LayerNorm(decoder_dim))
                                      for i in range(layers)])
        self.proj = nn.Linear(decoder_dim, dim)


class ImageEncoder(nn.Module):
    def __init__(self, dim, max_length=768, mel_bins=128, patch=16):
        super().__init__()
        W = mel_bins // patch
        self.local_encoder = PatchEmbedNew(dim, patch)
        self.project_features = nn.Identity()
        pos = nn.Parameter(torch.zeros(1, max_length * W, dim), requires_grad=False)
        pos.data.copy_(torch.from_numpy(get_2d_sincos_flexible(dim, (max_length, W))[: max_length * W]).float()[None])
        self.fixed_positional_encoder = FixedPositionalEncoder(pos)
        self.context_encoder = BlockEncoder(dim)
        self.decoder = Decoder2d(dim)
        self.extra_tokens = nn.Parameter(torch.zeros(1, 1, dim))


class Data2VecMulti(nn.Module):
    def __init__(self, dim=768, depth=12, heads=12, max_length=768, seed=0):
        super().__init__()
        self.modality_encoders = nn.ModuleDict({"IMAGE": ImageEncoder(dim, max_length)})
        self.blocks = nn.ModuleList([AltBlock(dim, heads) for _ in range(depth)])
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("positions"):
                    continue
                if "norm" in name and name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                elif name.endswith("proj.weight") and p.ndim == 4:
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
        # the EMA teacher (a perturbed copy, without the decoder), saved as the ``_ema`` entry
        self._ema = {k: v + 0.01 for k, v in super().state_dict().items() if ".decoder." not in k}

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        state["_ema"] = dict(self._ema)
        return state

    @torch.no_grad()
    def extract_features(self, source, padding_mask=None, layers=False):
        enc = self.modality_encoders["IMAGE"]
        x = enc.local_encoder(source)
        x = x + enc.fixed_positional_encoder.positions[:, : x.size(1), :]
        x = torch.cat([enc.extra_tokens.expand(x.size(0), -1, -1), x], dim=1)
        if padding_mask is not None:
            padding_mask = torch.nn.functional.pad(padding_mask, (1, 0))
        x = enc.context_encoder.norm(x)
        outs = []
        for blk in self.blocks:
            x = blk(x, padding_mask)
            outs.append(x)
        return (x, outs) if layers else x


# ---- checkpoints ------------------------------------------------------------------------------------------------
def model_cfg(dim=768, depth=12, heads=12, **image):
    return {"_name": "data2vec_multi", "depth": depth, "embed_dim": dim, "num_heads": heads, "mlp_ratio": 4.0,
            "norm_eps": 1e-6, "layer_norm_first": False, "average_top_k_layers": depth, "clone_batch": 16,
            "ema_decay": 0.9998, "ema_end_decay": 0.99999, "cls_loss": 1.0, "supported_modality": "IMAGE",
            "modalities": {"image": dict({"in_chans": 1, "inverse_mask": True, "mask_prob": 0.8, "mask_length": 5,
                                          "prenet_depth": 0, "num_extra_tokens": 1, "init_extra_token_zero": False,
                                          "use_alibi_encoder": False, "target_length": 1024, "max_length": 768,
                                          "patch_size": 16, "embed_dim": dim,
                                          "decoder": {"decoder_dim": 768, "decoder_layers": 6}}, **image)}}


def fairseq_checkpoint(model: Data2VecMulti, path, cfg=None):
    """What fairseq's ``Trainer.save_checkpoint`` writes (``cfg`` converted to plain containers, as fairseq does)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=5e-4, betas=(0.9, 0.95))
    for p in params:
        p.grad = torch.full_like(p, 1e-4)
    opt.step()
    for p in params:
        p.grad = None
    ckpt = {
        "args": None,
        "cfg": cfg if cfg is not None else {
            "common": {"fp16": True, "seed": 1, "user_dir": "/work/EAT"},
            "task": {"_name": "mae_image_pretraining", "data": "/data/audioset", "target_length": 1024,
                     "audio_mae": True, "downsr_16hz": True},
            "model": model_cfg(), "optimization": {"max_update": 400000, "lr": [0.0005]},
            "checkpoint": {"save_interval_updates": 10000}},
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "ModelCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 400000}],
        "task_state": {},
        "extra_state": {"epoch": 30, "train_iterator": {"epoch": 30, "iterations_in_epoch": 0, "shuffle": True},
                        "previous_training_time": np.float64(123456.7),
                        "metrics": {"train": [("loss", 0, "AverageMeter", {"val": 0.5, "sum": 10.0, "count": 20})]}},
        "last_optimizer_state": opt.state_dict(),
    }
    torch.save(ckpt, path)
    return ckpt


def hub_state(model: Data2VecMulti):
    """The Hub's ``EATModel`` state dict for the same weights."""
    enc = model.modality_encoders["IMAGE"]
    out = {"model.local_encoder.proj.weight": enc.local_encoder.proj.weight,
           "model.local_encoder.proj.bias": enc.local_encoder.proj.bias,
           "model.extra_tokens": enc.extra_tokens,
           "model.fixed_positional_encoder.positions": enc.fixed_positional_encoder.positions,
           "model.pre_norm.weight": enc.context_encoder.norm.weight,
           "model.pre_norm.bias": enc.context_encoder.norm.bias}
    out.update({f"model.{k}": v for k, v in model.blocks.state_dict(prefix="blocks.").items()})
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


# ---- feature_extract.py ----------------------------------------------------------------------------------------
def kaldi_fbank(waveform):
    """``ta_kaldi.fbank(waveform [1, N], htk_compat=True, sample_frequency=16000, use_energy=False,
    window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)`` -> ``[frames, 128]``, via transformers."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mel = mel_filter_bank(num_frequency_bins=257, num_mel_filters=128, min_frequency=20, max_frequency=8000,
                              sampling_rate=16000, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    wav = waveform.reshape(-1).detach().double().numpy()
    fb = spectrogram(wav, window_function(400, "hann", periodic=False), frame_length=400, hop_length=160,
                     fft_length=512, power=2.0, center=False, preemphasis=0.97, mel_filters=mel, log_mel="log",
                     mel_floor=EPS, remove_dc_offset=True, dtype=np.float64).T
    return torch.from_numpy(fb).float()


def preprocess(waveform, norm_mean=-4.268, norm_std=4.569):
    """One clip -> the model input ``[1, 1, T', 128]`` (T' = frames rounded up to a multiple of 16)."""
    waveform = waveform - waveform.mean()
    mel = kaldi_fbank(waveform[None])[None]
    n = mel.shape[1]
    target = ((n + 15) // 16) * 16
    mel = torch.nn.ZeroPad2d((0, 0, 0, target - n))(mel)
    mel = (mel - norm_mean) / (norm_std * 2)
    return mel[None]


def frames_and_cls(tokens, f_patches=8):
    """Tokens ``[1, 1 + 8 T, D]`` -> (frames ``[T, D]``: the mean over frequency of each step, the ``[CLS]``)."""
    return tokens[0, 1:].reshape(-1, f_patches, tokens.shape[-1]).mean(dim=1), tokens[0, 0]
