"""Write ``examples/example.wav``, the short recording the README's first command embeds.

It is synthesised here (so it carries the project's licence): 4 s at 16 kHz, 16-bit mono — two
bird-like chirps, a struck bell (inharmonic partials with exponential decay) and a burst of
band-passed noise. Deterministic: running this script again gives the same bytes.

    python examples/make_example_wav.py
"""

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def example(sr: int = SR) -> np.ndarray:
    t = np.arange(4 * sr) / sr
    x = np.zeros_like(t)
    for start, f0, f1 in ((0.2, 2500.0, 4200.0), (0.6, 3000.0, 5200.0)):         # chirps, 150 ms each
        m = (t >= start) & (t < start + 0.15)
        u = t[m] - start
        phase = 2 * np.pi * (f0 * u + 0.5 * (f1 - f0) / 0.15 * u * u)
        x[m] += 0.3 * np.sin(phase) * np.sin(np.pi * u / 0.15) ** 2
    m = t >= 1.2                                                                    # bell at 1.2 s
    u = t[m] - 1.2
    for ratio, amp, decay in ((1.0, 0.30, 1.2), (2.76, 0.15, 2.0), (5.40, 0.08, 3.5), (8.93, 0.04, 5.0)):
        x[m] += amp * np.sin(2 * np.pi * 440.0 * ratio * u) * np.exp(-decay * u)
    rng = np.random.default_rng(2022)
    noise = rng.standard_normal(len(t))
    spec = np.fft.rfft(noise)
    f = np.fft.rfftfreq(len(t), 1 / sr)
    spec[(f < 300) | (f > 2000)] = 0                                                # band 300-2000 Hz
    band = np.fft.irfft(spec, len(t))
    m = (t >= 2.8) & (t < 3.6)                                                      # noise burst at 2.8 s
    u = t[m] - 2.8
    x[m] += 0.25 * band[m] / np.abs(band).max() * np.exp(-4 * u) * np.minimum(1, u / 0.01)
    return (x / np.abs(x).max() * 0.8).astype(np.float32)


if __name__ == "__main__":
    out = Path(__file__).with_name("example.wav")
    sf.write(out, example(), SR, subtype="PCM_16")
    print(out)
