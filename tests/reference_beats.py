"""The original BEATs code, for the tests: a faithful copy of the inference path of microsoft/unilm ``beats/``
(``BEATs.py``, ``backbone.py``, ``modules.py``; https://github.com/microsoft/unilm/tree/master/beats,
Copyright (c) 2022 Microsoft, MIT licence; based on fairseq, MIT), trimmed to what inference runs: dropout,
layer drop, gradient scaling, quantisation noise and fairseq's incremental-decoding state are left out (all
inactive in ``eval()``); module and parameter names, initialisation and every computation are the original's.

One change: ``BEATs.preprocess`` calls ``torchaudio.compliance.kaldi.fbank`` per clip, and torchaudio is not
installable here. :func:`kaldi_fbank` re-states that call with transformers' numpy Kaldi implementation
(``audio_utils.spectrogram`` with the Povey window, Kaldi's mel filters, pre-emphasis 0.97, DC removal, 512-point
FFT, ``log(max(mel, float32 eps))``), which is the fbank torchaudio computes (transformers'
``ASTFeatureExtractor`` uses it as the torchaudio fallback). ``preprocess`` still loops over the clips and
still computes the fbank of a padded row's zeros, as the original does.

:func:`checkpoint` writes what BEATs' trainer saved: ``{'cfg': dict, 'model': state_dict}`` (plus ``label_dict``
for the fine-tuned models); the state dict repeats layer 0's shared relative-position embedding under every
layer and holds the weight-normed positional convolution as ``weight_g`` / ``weight_v``, as the originals do.
"""

import math
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import LayerNorm

__all__ = ["BEATsConfig", "BEATs", "kaldi_fbank", "checkpoint", "random_model"]


# ---- modules.py ------------------------------------------------------------------------------------------------
class SamePad(nn.Module):
    def __init__(self, kernel_size, causal=False):
        super().__init__()
        if causal:
            self.remove = kernel_size - 1
        else:
            self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x):
        if self.remove > 0:
            x = x[:, :, : -self.remove]
        return x


def gelu(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x.float()).type_as(x)


def get_activation_fn(activation: str):
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return gelu
    raise RuntimeError("--activation-fn {} not supported".format(activation))


# ---- BEATs.py: config ---------------------------------------------------------------------------------------
class BEATsConfig:
    def __init__(self, cfg=None):
        self.input_patch_size: int = -1
        self.embed_dim: int = 512
        self.conv_bias: bool = False
        self.encoder_layers: int = 12
        self.encoder_embed_dim: int = 768
        self.encoder_ffn_embed_dim: int = 3072
        self.encoder_attention_heads: int = 12
        self.activation_fn: str = "gelu"
        self.layer_wise_gradient_decay_ratio: float = 1.0
        self.layer_norm_first: bool = False
        self.deep_norm: bool = False
        self.dropout: float = 0.1
        self.attention_dropout: float = 0.1
        self.activation_dropout: float = 0.0
        self.encoder_layerdrop: float = 0.0
        self.dropout_input: float = 0.0
        self.conv_pos: int = 128
        self.conv_pos_groups: int = 16
        self.relative_position_embedding: bool = False
        self.num_buckets: int = 320
        self.max_distance: int = 1280
        self.gru_rel_pos: bool = False
        self.finetuned_model: bool = False
        self.predictor_dropout: float = 0.1
        self.predictor_class: int = 527
        if cfg is not None:
            self.update(cfg)

    def update(self, cfg: dict):
        self.__dict__.update(cfg)


# ---- backbone.py ---------------------------------------------------------------------------------------------
def init_bert_params(module):
    def normal_(data):
        data.copy_(data.cpu().normal_(mean=0.0, std=0.02).to(data.device))

    if isinstance(module, nn.Linear):
        normal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.zero_()
    if isinstance(module, nn.Embedding):
        normal_(module.weight.data)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    if isinstance(module, MultiheadAttention):
        normal_(module.q_proj.weight.data)
        normal_(module.k_proj.weight.data)
        normal_(module.v_proj.weight.data)


class TransformerEncoder(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.dropout = args.dropout
        self.embedding_dim = args.encoder_embed_dim
        self.pos_conv = nn.Conv1d(self.embedding_dim, self.embedding_dim, kernel_size=args.conv_pos,
                                  padding=args.conv_pos // 2, groups=args.conv_pos_groups)
        dropout = 0
        std = math.sqrt((4 * (1.0 - dropout)) / (args.conv_pos * self.embedding_dim))
        nn.init.normal_(self.pos_conv.weight, mean=0, std=std)
        nn.init.constant_(self.pos_conv.bias, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch's notice that weight_norm moved to parametrizations
            self.pos_conv = nn.utils.weight_norm(self.pos_conv, name="weight", dim=2)
        self.pos_conv = nn.Sequential(self.pos_conv, SamePad(args.conv_pos), nn.GELU())

        if hasattr(args, "relative_position_embedding"):
            self.relative_position_embedding = args.relative_position_embedding
            self.num_buckets = args.num_buckets
            self.max_distance = args.max_distance
        else:
            self.relative_position_embedding = False
            self.num_buckets = 0
            self.max_distance = 0

        self.layers = nn.ModuleList([
            TransformerSentenceEncoderLayer(
                embedding_dim=self.embedding_dim, ffn_embedding_dim=args.encoder_ffn_embed_dim,
                num_attention_heads=args.encoder_attention_heads, activation_fn=args.activation_fn,
                layer_norm_first=args.layer_norm_first, deep_norm=args.deep_norm,
                has_relative_attention_bias=self.relative_position_embedding, num_buckets=self.num_buckets,
                max_distance=self.max_distance, gru_rel_pos=args.gru_rel_pos, encoder_layers=args.encoder_layers)
            for i in range(args.encoder_layers)])
        if self.relative_position_embedding:
            for i in range(1, args.encoder_layers):
                del self.layers[i].self_attn.relative_attention_bias
                self.layers[i].self_attn.relative_attention_bias = self.layers[0].self_attn.relative_attention_bias

        self.layer_norm_first = args.layer_norm_first
        self.layer_norm = LayerNorm(self.embedding_dim)
        self.apply(init_bert_params)

        if args.deep_norm:
            deep_norm_beta = math.pow(8 * args.encoder_layers, -1 / 4)
            for i in range(args.encoder_layers):
                nn.init.xavier_normal_(self.layers[i].self_attn.k_proj.weight, gain=1)
                nn.init.xavier_normal_(self.layers[i].self_attn.v_proj.weight, gain=deep_norm_beta)
                nn.init.xavier_normal_(self.layers[i].self_attn.q_proj.weight, gain=1)
                nn.init.xavier_normal_(self.layers[i].self_attn.out_proj.weight, gain=deep_norm_beta)
                nn.init.xavier_normal_(self.layers[i].fc1.weight, gain=deep_norm_beta)
                nn.init.xavier_normal_(self.layers[i].fc2.weight, gain=deep_norm_beta)

    def forward(self, x, padding_mask=None, layer=None):
        x, layer_results = self.extract_features(x, padding_mask, layer)
        if self.layer_norm_first and layer is None:
            x = self.layer_norm(x)
        return x, layer_results

    def extract_features(self, x, padding_mask=None, tgt_layer=None):
        if padding_mask is not None:
            x[padding_mask] = 0
        x_conv = self.pos_conv(x.transpose(1, 2))
        x_conv = x_conv.transpose(1, 2)
        x = x + x_conv
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = x.transpose(0, 1)                      # B x T x C -> T x B x C
        layer_results = []
        z = None
        if tgt_layer is not None:
            layer_results.append((x, z))
        r = None
        pos_bias = None
        for i, layer in enumerate(self.layers):
            x, z, pos_bias = layer(x, self_attn_padding_mask=padding_mask, need_weights=False, pos_bias=pos_bias)
            if tgt_layer is not None:
                layer_results.append((x, z))
            if i == tgt_layer:
                r = x
                break
        if r is not None:
            x = r
        x = x.transpose(0, 1)
        return x, layer_results


class TransformerSentenceEncoderLayer(nn.Module):
    def __init__(self, embedding_dim=768, ffn_embedding_dim=3072, num_attention_heads=8, activation_fn="relu",
                 layer_norm_first=False, deep_norm=False, has_relative_attention_bias=False, num_buckets=0,
                 max_distance=0, rescale_init=False, gru_rel_pos=False, encoder_layers=0):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.activation_name = activation_fn
        self.activation_fn = get_activation_fn(activation_fn)
        self.self_attn = MultiheadAttention(
            self.embedding_dim, num_attention_heads, self_attention=True,
            has_relative_attention_bias=has_relative_attention_bias, num_buckets=num_buckets,
            max_distance=max_distance, rescale_init=rescale_init, gru_rel_pos=gru_rel_pos)
        self.layer_norm_first = layer_norm_first
        self.self_attn_layer_norm = LayerNorm(self.embedding_dim)
        self.fc1 = nn.Linear(self.embedding_dim, ffn_embedding_dim)
        self.fc2 = nn.Linear(ffn_embedding_dim, self.embedding_dim)
        self.final_layer_norm = LayerNorm(self.embedding_dim)
        self.deep_norm = deep_norm
        self.deep_norm_alpha = math.pow(2 * encoder_layers, 1 / 4) if deep_norm else 1

    def forward(self, x, self_attn_mask=None, self_attn_padding_mask=None, need_weights=False, pos_bias=None):
        residual = x
        if self.layer_norm_first:
            x = self.self_attn_layer_norm(x)
            x, attn, pos_bias = self.self_attn(query=x, key=x, value=x, key_padding_mask=self_attn_padding_mask,
                                               need_weights=False, attn_mask=self_attn_mask, position_bias=pos_bias)
            x = residual + x
            residual = x
            x = self.final_layer_norm(x)
            x = self.activation_fn(self.fc1(x))
            x = self.fc2(x)
            x = residual + x
        else:
            x, attn, pos_bias = self.self_attn(query=x, key=x, value=x, key_padding_mask=self_attn_padding_mask,
                                               need_weights=need_weights, attn_mask=self_attn_mask,
                                               position_bias=pos_bias)
            x = residual * self.deep_norm_alpha + x
            x = self.self_attn_layer_norm(x)
            residual = x
            x = self.activation_fn(self.fc1(x))
            x = self.fc2(x)
            x = residual * self.deep_norm_alpha + x
            x = self.final_layer_norm(x)
        return x, attn, pos_bias


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, self_attention=False,
                 has_relative_attention_bias=False, num_buckets=32, max_distance=128, gru_rel_pos=False,
                 rescale_init=False):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.has_relative_attention_bias = has_relative_attention_bias
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        if self.has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(num_buckets, num_heads)
        self.head_dim = embed_dim // num_heads
        self.q_head_dim = self.head_dim
        self.k_head_dim = self.head_dim
        assert self.head_dim * num_heads == self.embed_dim
        self.scaling = self.head_dim ** -0.5
        self.self_attention = self_attention
        k_bias = not rescale_init
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=k_bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.gru_rel_pos = gru_rel_pos
        if self.gru_rel_pos:
            self.grep_linear = nn.Linear(self.q_head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.k_proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.v_proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.q_proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.out_proj.weight)
        if self.out_proj.bias is not None:
            nn.init.constant_(self.out_proj.bias, 0.0)
        if self.has_relative_attention_bias:
            nn.init.xavier_normal_(self.relative_attention_bias.weight)

    def _relative_positions_bucket(self, relative_positions, bidirectional=True):
        num_buckets = self.num_buckets
        max_distance = self.max_distance
        relative_buckets = 0
        if bidirectional:
            num_buckets = num_buckets // 2
            relative_buckets += (relative_positions > 0).to(torch.long) * num_buckets
            relative_positions = torch.abs(relative_positions)
        else:
            relative_positions = -torch.min(relative_positions, torch.zeros_like(relative_positions))
        max_exact = num_buckets // 2
        is_small = relative_positions < max_exact
        relative_postion_if_large = max_exact + (
            torch.log(relative_positions.float() / max_exact) / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)).to(torch.long)
        relative_postion_if_large = torch.min(
            relative_postion_if_large, torch.full_like(relative_postion_if_large, num_buckets - 1))
        relative_buckets += torch.where(is_small, relative_positions, relative_postion_if_large)
        return relative_buckets

    def compute_bias(self, query_length, key_length):
        context_position = torch.arange(query_length, dtype=torch.long)[:, None]
        memory_position = torch.arange(key_length, dtype=torch.long)[None, :]
        relative_position = memory_position - context_position
        relative_position_bucket = self._relative_positions_bucket(relative_position, bidirectional=True)
        relative_position_bucket = relative_position_bucket.to(self.relative_attention_bias.weight.device)
        values = self.relative_attention_bias(relative_position_bucket)
        values = values.permute([2, 0, 1])
        return values

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                position_bias=None):
        tgt_len, bsz, embed_dim = query.size()
        src_len = tgt_len
        if self.has_relative_attention_bias and position_bias is None:
            position_bias = self.compute_bias(tgt_len, src_len)
            position_bias = position_bias.unsqueeze(0).repeat(bsz, 1, 1, 1).view(bsz * self.num_heads, tgt_len,
                                                                                  src_len)
        q = self.q_proj(query)
        k = self.k_proj(query)
        v = self.v_proj(query)
        q *= self.scaling
        alpha = 32
        q *= 1 / alpha
        q = q.contiguous().view(tgt_len, bsz * self.num_heads, self.q_head_dim).transpose(0, 1)
        k = k.contiguous().view(-1, bsz * self.num_heads, self.k_head_dim).transpose(0, 1)
        v = v.contiguous().view(-1, bsz * self.num_heads, self.head_dim).transpose(0, 1)
        if key_padding_mask is not None and key_padding_mask.dim() == 0:
            key_padding_mask = None

        attn_weights = torch.bmm(q, k.transpose(1, 2))
        attn_weights = (attn_weights - attn_weights.max(dim=-1, keepdim=True)[0]) * alpha
        if attn_mask is not None:
            attn_weights += attn_mask.unsqueeze(0)
        if key_padding_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len)
            attn_weights = attn_weights.masked_fill(key_padding_mask.unsqueeze(1).unsqueeze(2).to(torch.bool),
                                                    float("-inf"))
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        if position_bias is not None:
            attn_mask_rel_pos = position_bias
            if self.gru_rel_pos == 1:
                query_layer = q.view(bsz, self.num_heads, tgt_len, self.q_head_dim) * alpha / self.scaling
                _B, _H, _L, __ = query_layer.size()
                gate_a, gate_b = torch.sigmoid(self.grep_linear(query_layer).view(
                    _B, _H, _L, 2, 4).sum(-1, keepdim=False)).chunk(2, dim=-1)
                gate_a_1 = gate_a * (gate_b * self.grep_a - 1.0) + 2.0
                attn_mask_rel_pos = gate_a_1.view(bsz * self.num_heads, tgt_len, 1) * position_bias
            attn_mask_rel_pos = attn_mask_rel_pos.view(attn_weights.size())
            attn_weights = attn_weights + attn_mask_rel_pos
        attn_weights_float = F.softmax(attn_weights, dim=-1)
        attn_probs = attn_weights_float.type_as(attn_weights)
        attn = torch.bmm(attn_probs, v)
        attn = attn.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
        attn = self.out_proj(attn)
        return attn, None, position_bias


# ---- BEATs.py: the model -----------------------------------------------------------------------------------
EPS = float(np.finfo(np.float32).eps)


def kaldi_fbank(waveform: torch.Tensor) -> torch.Tensor:
    """``ta_kaldi.fbank(waveform [1, N], num_mel_bins=128, sample_frequency=16000, frame_length=25,
    frame_shift=10)`` (torchaudio's defaults otherwise: Povey window, dither 0, pre-emphasis 0.97, DC offset
    removed, snip edges, 512-point FFT, power, low 20 Hz, high Nyquist) -> ``[frames, 128]``, via transformers."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # its notice that a mel filter is all zero (Kaldi's have a zero one too)
        mel = mel_filter_bank(num_frequency_bins=257, num_mel_filters=128, min_frequency=20, max_frequency=8000,
                              sampling_rate=16000, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    wav = waveform.reshape(-1).detach().double().numpy()
    fb = spectrogram(wav, window_function(400, "povey", periodic=False), frame_length=400, hop_length=160,
                     fft_length=512, power=2.0, center=False, preemphasis=0.97, mel_filters=mel, log_mel="log",
                     mel_floor=EPS, remove_dc_offset=True, dtype=np.float64).T
    return torch.from_numpy(fb).float()


class BEATs(nn.Module):
    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = cfg.embed_dim
        self.post_extract_proj = (nn.Linear(self.embed, cfg.encoder_embed_dim)
                                  if self.embed != cfg.encoder_embed_dim else None)
        self.input_patch_size = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(1, self.embed, kernel_size=self.input_patch_size,
                                         stride=self.input_patch_size, bias=cfg.conv_bias)
        assert not cfg.deep_norm or not cfg.layer_norm_first
        self.encoder = TransformerEncoder(cfg)
        self.layer_norm = LayerNorm(self.embed)
        if cfg.finetuned_model:
            self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class)
        else:
            self.predictor = None

    def forward_padding_mask(self, features, padding_mask):
        extra = padding_mask.size(1) % features.size(1)
        if extra > 0:
            padding_mask = padding_mask[:, :-extra]
        padding_mask = padding_mask.view(padding_mask.size(0), features.size(1), -1)
        padding_mask = padding_mask.all(-1)
        return padding_mask

    def preprocess(self, source, fbank_mean=15.41663, fbank_std=6.55582):
        fbanks = []
        for waveform in source:
            waveform = waveform.unsqueeze(0) * 2 ** 15
            fbank = kaldi_fbank(waveform)          # the original: ta_kaldi.fbank(waveform, num_mel_bins=128, ...)
            fbanks.append(fbank)
        fbank = torch.stack(fbanks, dim=0)
        fbank = (fbank - fbank_mean) / (2 * fbank_std)
        return fbank

    def extract_features(self, source, padding_mask=None, fbank_mean=15.41663, fbank_std=6.55582,
                         fbank: Optional[torch.Tensor] = None, layers: bool = False):
        """The original's ``extract_features``. Test additions: ``fbank`` skips ``preprocess`` (the network on
        given normalised features ``[B, T, 128]``); ``layers=True`` also returns the input of layer 1 and every
        layer's output ``[B, tokens, D]`` (what ``encoder(..., layer=N)`` collects as ``layer_results``)."""
        if fbank is None:
            fbank = self.preprocess(source, fbank_mean=fbank_mean, fbank_std=fbank_std)
        if padding_mask is not None:
            padding_mask = self.forward_padding_mask(fbank, padding_mask)
        fbank = fbank.unsqueeze(1)
        features = self.patch_embedding(fbank)
        features = features.reshape(features.shape[0], features.shape[1], -1)
        features = features.transpose(1, 2)
        features = self.layer_norm(features)
        if padding_mask is not None:
            padding_mask = self.forward_padding_mask(features, padding_mask)
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        x = features
        x, layer_results = self.encoder(x, padding_mask=padding_mask,
                                        layer=len(self.encoder.layers) - 1 if layers else None)
        hidden = [h.transpose(0, 1) for h, _ in layer_results]
        if self.predictor is not None:
            logits = self.predictor(x)
            if padding_mask is not None and padding_mask.any():
                logits[padding_mask] = 0
                logits = logits.sum(dim=1)
                logits = logits / (~padding_mask).sum(dim=1).unsqueeze(-1).expand_as(logits)
            else:
                logits = logits.mean(dim=1)
            lprobs = torch.sigmoid(logits)
            return (lprobs, padding_mask, hidden) if layers else (lprobs, padding_mask)
        return (x, padding_mask, hidden) if layers else (x, padding_mask)


# ---- checkpoints -------------------------------------------------------------------------------------------
def random_model(cfg: dict, seed: int = 0) -> BEATs:
    """The original model at ``cfg`` with the original initialisation (seeded), then every LayerNorm, bias, the
    gate parameters and the positional convolution's gains moved off their initial constants (so that the
    tests see each of them act), in ``eval()``."""
    torch.manual_seed(seed)
    model = BEATs(BEATsConfig(cfg))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "grep_a" in name or name.endswith("weight_g"):
                p.add_(0.1 * torch.randn(p.shape, generator=g) * (p.abs().mean() + 0.1))
    return model.eval()


def checkpoint(model: BEATs, path, label_dict=None) -> dict:
    """Save ``model`` as BEATs' trainer did: ``{'cfg': cfg dict, 'model': state_dict}`` (+ ``label_dict``)."""
    ckpt = {"cfg": dict(model.cfg.__dict__), "model": model.state_dict()}
    if label_dict is not None:
        ckpt["label_dict"] = label_dict
    torch.save(ckpt, path)
    return ckpt
