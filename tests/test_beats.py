"""BEATs against the original code (tests/reference_beats.py, a faithful copy of microsoft/unilm ``beats/``) on
seeded random weights saved in the original checkpoint layout, and the shared gated relative-position layers
(audio_repr/layers/relpos.py) against both of their originals: BEATs' and transformers' WavLM."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audio_repr.layers.relpos import RelPosEncoderLayer, deep_norm_alpha, relative_position_bucket  # noqa: E402
from conftest import rel_err  # noqa: E402
from reference_beats import random_model  # noqa: E402

#: a small BEATs (2 layers, 64-d patches, 96-d transformer): every switch of the real configuration on
SMALL = dict(input_patch_size=16, embed_dim=64, conv_bias=False, encoder_layers=2, encoder_embed_dim=96,
             encoder_ffn_embed_dim=192, encoder_attention_heads=4, activation_fn="gelu", layer_norm_first=False,
             deep_norm=True, conv_pos=16, conv_pos_groups=4, relative_position_embedding=True, num_buckets=320,
             max_distance=800, gru_rel_pos=True, finetuned_model=False, dropout=0.0, attention_dropout=0.0,
             encoder_layerdrop=0.05, layer_wise_gradient_decay_ratio=0.6)


# ---------------------------------------------------------------------------------------------------------------
# layers/relpos.py
# ---------------------------------------------------------------------------------------------------------------
def test_buckets_are_the_originals_at_every_distance():
    ref = random_model(SMALL).encoder.layers[0].self_attn
    rel = torch.arange(-5000, 5001)
    for buckets, distance in ((320, 800), (32, 128), (64, 1280)):
        ref.num_buckets, ref.max_distance = buckets, distance
        assert torch.equal(relative_position_bucket(rel, buckets, distance), ref._relative_positions_bucket(rel))
    b = relative_position_bucket(rel, 320, 800)
    assert b.min() == 0 and b.max() == 319 and b[5000] == 0 and b[4999] == 1 and b[5001] == 161  # d = 0, -1, +1


def _our_layers(n, dim, ffn, heads, **kw):
    return torch.nn.ModuleList([RelPosEncoderLayer(dim, ffn, heads, has_relative_attention_bias=i == 0, **kw)
                                for i in range(n)]).eval()


def test_beats_layers_equal_the_original_with_a_padding_mask():
    """Deep norm, GRU gate on the query projection, layer 0's bias reused: the original layer stack (its
    state dict, the shared embedding repeated under every layer, loads after dropping the repeats)."""
    ref = random_model(SMALL, seed=1)
    ours = _our_layers(2, 96, 192, 4, deep_norm_alpha=deep_norm_alpha(2), gru_rel_pos=True, gate_source="query")
    state = {k[len("encoder.layers."):]: v for k, v in ref.state_dict().items() if k.startswith("encoder.layers.")}
    state = {k: v for k, v in state.items() if k.startswith("0.") or "relative_attention_bias" not in k}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(3, 70, 96, generator=torch.Generator().manual_seed(0))
    pad = torch.zeros(3, 70, dtype=torch.bool)
    pad[1, 41:] = True
    with torch.no_grad():
        h, pb = x.transpose(0, 1), None
        for layer in ref.encoder.layers:
            h, _, pb = layer(h, self_attn_padding_mask=pad, pos_bias=pb)
        y, pb = x, None
        for layer in ours:
            y, pb = layer(y, pad, pb)
    want = h.transpose(0, 1)
    assert rel_err(y[~pad], want[~pad]) < 1e-5
    assert pb.shape == (4, 70, 70)


@pytest.mark.parametrize("stable", [False, True])
def test_wavlm_layers_equal_transformers(stable):
    """The same layers in WavLM's form: the gate on the layer's input, post-norm (Base) or pre-norm (Large)."""
    tr = pytest.importorskip("transformers")
    from transformers.models.wavlm import modeling_wavlm as W

    cfg = tr.WavLMConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_buckets=320,
                         max_bucket_distance=800, hidden_act="gelu", do_stable_layer_norm=stable)
    Layer = W.WavLMEncoderLayerStableLayerNorm if stable else W.WavLMEncoderLayer
    torch.manual_seed(2)
    hf = torch.nn.ModuleList([Layer(cfg, has_relative_position_bias=i == 0) for i in range(3)]).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    ours = _our_layers(3, 64, 128, 4, layer_norm_first=stable, gru_rel_pos=True, gate_source="input")
    names = {"attention.rel_attn_embed": "self_attn.relative_attention_bias", "attention.gru_rel_pos_linear":
             "self_attn.grep_linear", "attention.gru_rel_pos_const": "self_attn.grep_a", "attention.": "self_attn.",
             "layer_norm": "self_attn_layer_norm", "feed_forward.intermediate_dense": "fc1",
             "feed_forward.output_dense": "fc2", "final_self_attn_layer_norm": "final_layer_norm"}
    state = {}
    for k, v in hf.state_dict().items():
        for a, b in names.items():
            k = k.replace(a, b)
        state[k] = v
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 50, 64, generator=g)
    mask = torch.ones(2, 50, dtype=torch.long)
    mask[0, 33:] = 0
    with torch.no_grad():
        h, pb = x, None
        for i, layer in enumerate(hf):
            h, pb = layer(h, attention_mask=mask, position_bias=pb, index=i)
        y, pb = x, None
        for layer in ours:
            y, pb = layer(y, mask == 0, pb)
    keep = mask.bool()
    assert rel_err(y[keep], h[keep]) < 1e-5
