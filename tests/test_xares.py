"""The X-ARES adapter (audio_repr.xares) against X-ARES's own encoder check.

``check_audio_encoder`` below re-states, in behaviour, ``src/xares/audio_encoder_checker.py`` of jimbozhang/xares
(commit 161f0ef, Apache-2.0): the class name ends with ``Encoder``; it is a ``torch.nn.Module``; it has
``output_dim``, ``sampling_rate`` and ``hop_size_in_ms``; ``encoder(torch.randn(2, 50000))`` returns a tensor
``[B, T, D]`` with ``B == 2`` and ``D == output_dim``. The package itself is not a test dependency: it pins
torchaudio, transformers, webdataset and pytorch-ignite, which would replace this project's torch build.
"""

import pytest
import torch

import audio_repr
from audio_repr.xares import XaresEncoder


def check_audio_encoder(encoder) -> str:
    """'' when X-ARES's checker accepts ``encoder``, else the reason it gives."""
    if not type(encoder).__name__.endswith("Encoder"):
        return "class name must end with 'Encoder'"
    if not isinstance(encoder, torch.nn.Module):
        return "not a torch.nn.Module"
    for attr in ("output_dim", "sampling_rate", "hop_size_in_ms"):
        if not hasattr(encoder, attr):
            return f"no {attr!r} attribute"
    sample = torch.randn(2, 50000)
    try:
        out = encoder(sample)
    except Exception as e:  # noqa: BLE001 - the checker reports any failure
        return f"failed to encode: {e}"
    if not isinstance(out, torch.Tensor) or out.ndim != 3:
        return "expected a 3-D tensor [B, T, D]"
    if out.size(0) != sample.size(0) or out.size(2) != encoder.output_dim:
        return f"expected [2, T, {encoder.output_dim}], got {tuple(out.shape)}"
    return ""


class BYOLAEncoder(XaresEncoder):              # what a user writes for X-ARES's runner (no arguments)
    def __init__(self):
        super().__init__("byola-v1-512", pretrained=False)


@pytest.mark.parametrize("make", [BYOLAEncoder, lambda: XaresEncoder("efficientat-mn04-as", pretrained=False,
                                                                      layers=["block6", "features"])])
def test_the_adapter_passes_xares_checker_and_equals_embed(make):
    enc = make()
    assert check_audio_encoder(enc) == ""
    wav = torch.randn(3, enc.sampling_rate)          # 1 s
    out = enc(wav)
    ref = enc.encoder.embed(list(wav), sr=enc.sampling_rate, layers=enc.layers)
    assert out.shape == (3, ref[0].frames.shape[0], enc.output_dim)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r.frames, rtol=1e-5, atol=1e-5)
    # hop_size_in_ms as the checker explains it: input duration / output frames
    n = 20 * enc.sampling_rate
    assert enc(torch.zeros(1, n)).shape[1] == pytest.approx(20000 / enc.hop_size_in_ms, abs=1.5)


def test_a_plain_module_fails_the_restated_checker():
    class Plain(torch.nn.Module):
        sampling_rate, output_dim, hop_size_in_ms = 16000, 4, 10

        def forward(self, x):
            return torch.zeros(x.shape[0], 3, 5)

    assert "Encoder" in check_audio_encoder(Plain())
    PlainEncoder = type("PlainEncoder", (Plain,), {})
    assert "expected [2, T, 4]" in check_audio_encoder(PlainEncoder())


def test_short_and_one_dimensional_audio():
    enc = BYOLAEncoder()
    wav = torch.randn(160)                                # 10 ms, one row: padded as embed(short="pad")
    out = enc(wav)
    ref = enc.encoder.embed(wav, sr=16000, short="pad")
    assert out.shape == (1, 1, 512)
    torch.testing.assert_close(out[0], ref.frames, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        enc(torch.zeros(1, 2, 3))
