"""Seeded random checkpoints in the layouts of the released Dasheng and CED files, and the test clips, made with
numpy's ``RandomState`` (the same bits on every machine and torch version), so that golden outputs computed once
by the original code in another environment (``tests/make_golden_dasheng.py``) apply to the checkpoints the tests
make here.

* Dasheng (:func:`dasheng_checkpoint`): what ``RicherMans/Dasheng``'s trainer saves through ignite's
  ``Checkpoint({'model': model.encoder, 'config': config_parameters})``: ``model`` is the encoder's whole
  ``state_dict`` (the front end's ``front_end.0.spectrogram.window`` and ``front_end.0.mel_scale.fb`` buffers, the
  batch norm ``init_bn.1.*`` with ``num_batches_tracked``, ``patch_embed.proj``, ``time_pos_embed``,
  ``freq_pos_embed``, ``blocks.N.*``, ``norm``) and ``config`` the trainer's ``MAEConfig.state_dict()`` (training
  data, optimiser, ``model_args``...), or a dict of encoder keyword arguments.
* CED (:func:`ced_checkpoint`): the same encoder layout plus ``outputlayer.0`` (LayerNorm) and ``outputlayer.1``
  (Linear), bare or under ``'model'``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

SR = 16000


def _n(rs: np.random.RandomState, *shape, scale=1.0, loc=0.0) -> torch.Tensor:
    return torch.from_numpy((loc + scale * rs.standard_normal(shape)).astype(np.float32))


def _hann(n: int) -> torch.Tensor:
    return torch.from_numpy((0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32))


def _htk_fb(n_fft=512, n_mels=64, f_min=0.0, f_max=8000.0, sr=SR) -> torch.Tensor:
    """torchaudio's ``melscale_fbanks(norm=None, mel_scale='htk')`` in numpy (only a stand-in for the saved buffer:
    the loaders under test drop it; the golden script saves the original's own)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)            # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)           # noqa: E731
    freqs = np.linspace(0, sr // 2, n_fft // 2 + 1)
    pts = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    d = np.diff(pts)
    slopes = pts[None, :] - freqs[:, None]
    down, up = -slopes[:, :-2] / d[:-1], slopes[:, 2:] / d[1:]
    return torch.from_numpy(np.maximum(0.0, np.minimum(down, up)).astype(np.float32))


def encoder_state(seed: int, embed_dim: int, depth: int, mlp_ratio: float = 4.0, n_mels: int = 64,
                  patch=(64, 4), target_length: int = 1008, init_values: Optional[float] = None,
                  qkv_bias: bool = True, num_classes: Optional[int] = None) -> "OrderedDict[str, torch.Tensor]":
    """The original encoder's ``state_dict`` with seeded random values at the scale of a trained network's
    (unit-scale activations, BN statistics of dB mels), in the original's key order."""
    rs = np.random.RandomState(seed)
    D, H = embed_dim, int(embed_dim * mlp_ratio)
    pf, pt = patch
    s: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    s["front_end.0.spectrogram.window"] = _hann(512)
    s["front_end.0.mel_scale.fb"] = _htk_fb(n_mels=n_mels)
    s["init_bn.1.weight"] = _n(rs, n_mels, scale=0.1, loc=1.0)
    s["init_bn.1.bias"] = _n(rs, n_mels, scale=0.1)
    s["init_bn.1.running_mean"] = _n(rs, n_mels, scale=8.0, loc=-40.0)
    s["init_bn.1.running_var"] = torch.from_numpy((15.0 + 3.0 * np.abs(rs.standard_normal(n_mels))).astype(np.float32)) ** 2
    s["init_bn.1.num_batches_tracked"] = torch.tensor(150000)
    s["patch_embed.proj.weight"] = _n(rs, D, 1, pf, pt, scale=1.0 / math.sqrt(pf * pt))
    s["patch_embed.proj.bias"] = _n(rs, D, scale=0.02)
    s["time_pos_embed"] = _n(rs, 1, D, 1, target_length // pt, scale=0.5)
    s["freq_pos_embed"] = _n(rs, 1, D, n_mels // pf, 1, scale=0.5)
    for i in range(depth):
        b = f"blocks.{i}."
        s[b + "norm1.weight"] = _n(rs, D, scale=0.1, loc=1.0)
        s[b + "norm1.bias"] = _n(rs, D, scale=0.1)
        s[b + "attn.qkv.weight"] = _n(rs, 3 * D, D, scale=1.0 / math.sqrt(D))
        if qkv_bias:
            s[b + "attn.qkv.bias"] = _n(rs, 3 * D, scale=0.1)
        s[b + "attn.proj.weight"] = _n(rs, D, D, scale=1.0 / math.sqrt(D))
        s[b + "attn.proj.bias"] = _n(rs, D, scale=0.1)
        if init_values:
            s[b + "ls1.gamma"] = _n(rs, D, scale=0.1, loc=init_values)
        s[b + "norm2.weight"] = _n(rs, D, scale=0.1, loc=1.0)
        s[b + "norm2.bias"] = _n(rs, D, scale=0.1)
        s[b + "mlp.fc1.weight"] = _n(rs, H, D, scale=1.0 / math.sqrt(D))
        s[b + "mlp.fc1.bias"] = _n(rs, H, scale=0.1)
        s[b + "mlp.fc2.weight"] = _n(rs, D, H, scale=1.0 / math.sqrt(H))
        s[b + "mlp.fc2.bias"] = _n(rs, D, scale=0.1)
        if init_values:
            s[b + "ls2.gamma"] = _n(rs, D, scale=0.1, loc=init_values)
    s["norm.weight"] = _n(rs, D, scale=0.1, loc=1.0)
    s["norm.bias"] = _n(rs, D, scale=0.1)
    if num_classes:
        s["outputlayer.0.weight"] = _n(rs, D, scale=0.1, loc=1.0)
        s["outputlayer.0.bias"] = _n(rs, D, scale=0.1)
        s["outputlayer.1.weight"] = _n(rs, num_classes, D, scale=1.0 / math.sqrt(D))
        s["outputlayer.1.bias"] = _n(rs, num_classes, scale=0.5, loc=-2.0)
    return s


def trainer_config(model: str = "dasheng_base", target_length: int = 1008) -> Dict:
    """``MAEConfig.state_dict()`` of the released training configs (``dasheng/train/config/*.yaml``), as the trainer
    saves it beside the encoder."""
    return dict(
        train_data=["acav100M/shards/acav_100M_split{1..1824}_0000000.tar",
                    "audioset/full/shards/full_train_16k_filenames_0000{000..190}.tar"],
        cv_data=["vggsound/test/shards/test_audio_00000{00..14}.tar"], config_file=f"config/{model}.yaml",
        logfile="train.log", outputpath="experiments", mask_ratio=0.75, use_scheduler=True, warmup_iters=None,
        warmup_epochs=3, model=model, model_args=dict(target_length=target_length, group_masking=True),
        decay_frac=0.1, optimizer="AdamW8bit", optimizer_args=dict(lr=0.0003, weight_decay=0.01), epochs=100,
        epoch_length=15000, batch_size=256, n_saved=4, num_workers=16, resampled=True, crop_shuffle=512,
        chunk_length=10.0, sample_rate=16000, valid_every=1, score_function=("Loss", -1.0),
        average_final_model=True,
        # dataclasses.asdict keeps the run folder as a pathlib object: pickled as a class, not a plain value
        outputdir=Path("experiments") / model / model / "2024-01-01_00-00_0123456789abcdef")


#: the test variants: (name, encoder_state kwargs, config, the original's variant overrides)
BASE = dict(embed_dim=768, depth=12)
BASE_HEADS = 12
#: a small configuration of the same code: 3 blocks, LayerScale, 8-patch (32-frame) chunks
SMALL = dict(embed_dim=48, depth=3, mlp_ratio=2.0, init_values=0.5, target_length=32)
SMALL_HEADS = 4
SMALL_CONFIG = dict(target_length=32, mlp_ratio=2.0, init_values=0.5, patch_size=[64, 4], patch_stride=[64, 4],
                    pooling="mean", group_masking=True)


def dasheng_checkpoint(kind: str = "base", seed: int = 11) -> Dict:
    """``{'model': state, 'config': ...}`` of the test variant ``kind`` ("base": dasheng-base's shapes with the
    trainer's config; "small": :data:`SMALL` with a config of encoder keyword arguments)."""
    if kind == "base":
        return {"model": encoder_state(seed, **BASE), "config": trainer_config()}
    return {"model": encoder_state(seed, **SMALL), "config": dict(SMALL_CONFIG)}


#: CED: (embed_dim, heads) of ced-tiny .. ced-base, and a small configuration (3 blocks) for every layer
CED_SIZES = {"tiny": (192, 3), "mini": (256, 4), "small": (384, 6), "base": (768, 12)}
CED_SMALL = dict(embed_dim=64, depth=3, patch=(16, 16), target_length=1012, num_classes=527)
CED_SMALL_HEADS = 4


def ced_checkpoint(kind: str = "small", seed: int = 21, wrapped: bool = True) -> Dict:
    if kind == "small":
        state = encoder_state(seed, **CED_SMALL)
    else:
        D, _ = CED_SIZES[kind]
        state = encoder_state(seed, embed_dim=D, depth=12, patch=(16, 16), target_length=1012, num_classes=527)
    return {"model": state} if wrapped else state


# ---- the clips ---------------------------------------------------------------------------------------------------
def clips(kind: str = "base") -> Dict[str, np.ndarray]:
    """Test clips (float32, 16 kHz). ``base``: 1 s of noise; 6.3 s of a chirp with 2 s of digital silence (the
    120 dB floor binds there); 12.5 s, past one 1008-frame chunk, quiet noise with silence for 11 s and a loud tone
    after it (the floor of the first chunk is set by the second chunk's maximum). ``small``: 0.33 s and 1.17 s
    (several 32-frame chunks). ``ced``: 1.3 s, 6.1 s with silence, 10.1 s (1011 frames: one whole 63-patch chunk)."""
    rs = np.random.RandomState({"base": 1, "small": 2, "ced": 3}[kind])
    t = lambda s: np.arange(int(s * SR)) / SR                         # noqa: E731

    def noise(s, amp):
        return amp * rs.standard_normal(int(s * SR))

    if kind == "base":
        c2 = 0.5 * np.sin(2 * np.pi * (200 * t(6.3) + 300 * t(6.3) ** 2))
        c2[int(2.0 * SR): int(4.0 * SR)] = 0.0
        c3 = noise(12.5, 1e-4)
        c3[int(3.0 * SR): int(5.0 * SR)] = 0.0
        c3[int(11.0 * SR):] = 0.8 * np.sin(2 * np.pi * 440 * t(12.5)[int(11.0 * SR):])
        out = {"c1": noise(1.0, 0.1), "c2": c2, "c3": c3}
    elif kind == "small":
        c2 = noise(1.17, 0.05)
        c2[4000:9000] = 0.0
        out = {"c1": noise(0.33, 0.1), "c2": c2}
    else:
        c2 = 0.3 * np.sin(2 * np.pi * (100 * t(6.1) + 500 * t(6.1) ** 2)) + noise(6.1, 0.01)
        c2[int(1.0 * SR): int(2.5 * SR)] = 0.0
        out = {"c1": noise(1.3, 0.1), "c2": c2, "c3": noise(10.1, 0.05)}
    return {k: v.astype(np.float32) for k, v in out.items()}


def projection(dim: int, k: int = 32) -> np.ndarray:
    """A fixed random projection ``[dim, k]`` (golden frames of wide layers are stored projected: every channel
    counts, the file stays small)."""
    return (np.random.RandomState(99).standard_normal((dim, k)) / math.sqrt(dim)).astype(np.float32)
