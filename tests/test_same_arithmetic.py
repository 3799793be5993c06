"""The float32 reordering bound of conftest.same_arithmetic_bound: it holds for reordered sums, and a
real batching bug (padding leaking into a clip through a disabled length mask) exceeds it by far."""

import math

import pytest
import torch

import audio_repr
from conftest import EPS32, accumulations, noise, same_arithmetic_bound, same_arithmetic_ratio


@pytest.mark.parametrize("fan_in", [9, 576, 3072, 12288])
def test_bound_covers_reordered_float32_sums(fan_in):
    """One layer (depth 1), mixed-sign terms: a batched product, the same rows one at a time, the
    terms in reverse order and the float64 result all agree within the bound, which is far below the
    worst case ``fan_in * EPS32 * max|y|``."""
    g = torch.Generator().manual_seed(fan_in)
    x = torch.randn(48, fan_in, generator=g)
    w = torch.randn(fan_in, 96, generator=g) / math.sqrt(fan_in)
    batched = x @ w
    rows = torch.cat([x[i: i + 1] @ w for i in range(len(x))])
    reverse = x.flip(-1) @ w.flip(0)
    exact = (x.double() @ w.double())
    for got in (rows, reverse, exact):
        assert same_arithmetic_ratio(got, batched, fan_in, 1) < 1
    worst = fan_in * EPS32 * float(batched.abs().max())
    assert same_arithmetic_bound(batched, fan_in, 1) <= worst / math.sqrt(fan_in) * 1.0001


def _alone_true_and_leaked(enc, short_s=0.8, long_s=3.1):
    """The default layer of a short clip: alone; in a padded batch with a longer clip; and in the same
    batch with the length mask disabled (the network told the padded length instead of the true one,
    so the padding's features reach the clip instead of the card's padding rule)."""
    short, long = noise(short_s, seed=31), noise(long_s, seed=32)
    wavs = torch.stack([torch.nn.functional.pad(short, (0, len(long) - len(short))), long])
    lengths = [len(short), len(long)]
    fe, layer = enc.frontend, enc.card.default_layer
    n = torch.tensor([fe.frames_for(L) for L in lengths])
    stats = None
    if enc.normalisation.per_clip:                                  # (mean, divisor) per clip
        st = [enc._clip_stats(w) for w in (short, long)]
        stats = (torch.tensor([s[0] for s in st]), torch.tensor([s[1] * enc.normalisation.scale for s in st]))
    with torch.inference_mode():
        feats = fe(wavs, lengths)
        alone = enc._network(fe(short[None], lengths[:1]), n[:1], stats and tuple(s[:1] for s in stats))
        true = enc._network(feats, n, stats)
        leaked = enc._network(feats, torch.full_like(n, int(n.max())), stats)
        T = enc.network.out_frames(int(n[0]), layer)
        return alone[layer][0, :T], true[layer][0, :T], leaked[layer][0, :T], layer


@pytest.mark.parametrize("name", ["byola-v1-512", "msm-mae-80x208", "ast-speechcommands"])
def test_bound_catches_padding_leaking_into_a_clip(name):
    """VGGish has no length mask to disable: its 0.96 s examples are independent, and a clip's
    incomplete last example (the only one that holds padding) is dropped."""
    torch.manual_seed(0)
    enc = audio_repr.load(name, pretrained=False).eval()             # real size, random weights
    alone, true, leaked, layer = _alone_true_and_leaked(enc)
    acc = accumulations(enc, layer)
    assert same_arithmetic_ratio(true, alone, *acc) <= 1                 # the real computation passes
    leak = same_arithmetic_ratio(leaked, alone, *acc)
    assert leak > 1000, f"{name}: padding leak only {leak:.3g} x the bound"  # the bug fails by far
