"""End-to-end embedding throughput, front-end share and peak memory, per model.

For each model: seconds of audio embedded per second on 10 s clips at batch sizes 1 and 32 (float32
and, when asked, bfloat16), the front end's share of the time, the same-run ratio against a peer
(VGGish: torchvggish's pipeline; AST: the transformers feature extractor + ASTModel; PANNs: panns_inference's
Cnn14 — all one clip at a time with the same weights; BYOL-A, MSM-MAE, EfficientAT: a per-clip loop over our own
modules, the way the original runtimes work: front end, normalisation and network one clip at a
time; Dasheng, CED: their original code in another Python, --peer-python), and the peak RSS growth while
embedding one long WAV file by its path (10 and 60 minutes; at
the model's rate, mono, unless --memory-sr / --memory-channels say otherwise) in a fresh process.

    python benchmarks/bench_models.py --models byola-v1-512 byola-v2-2048 --clips 32 \
        --json benchmarks/results.json --markdown docs/benchmarks.md

With ``--rounds N`` (issue 29) instead: per model and clip length (``--lengths 10 1``), ``embed`` at the default
batch, at batch 1, at the old default (``--before-batch 16``) and the original per-clip code, interleaved for N
rounds; the median seconds with their spread, the median minor page faults (``ru_minflt``) and the per-round ratios.

    python benchmarks/bench_models.py --models ast-audioset msm-mae-80x208 m2d-vit-base --rounds 5 \
        --lengths 10 1 --clips 4 --scale-clips --json benchmarks/results/cpu_transformers_issue29.json

Random weights are used (speed does not depend on them). Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import audio_repr  # noqa: E402


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn, device, repeat=3):
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def per_clip_loop(enc, clips):
    """The original runtimes' way: one clip at a time through front end, normalisation, network."""
    with torch.inference_mode():
        for c in clips:
            x = enc.frontend(c[None])
            n = enc.normalisation
            if n.per_clip:
                x = (x - x.mean()) / (n.scale * x.std())
            else:
                x = (x - n.mean) / n.divisor
            out = enc.network(x.to(enc.dtype), None)[enc.card.default_layer]
            (out.mean(1) + out.amax(1)).float().cpu()


def byola_original_loop(enc, ref, clips):
    """BYOL-A's original runtime: per clip, the log-mel front end, normalisation, the original network
    (``frames``), mean + max over time."""
    with torch.inference_mode():
        for c in clips:
            x = (enc.frontend(c[None]) - enc.normalisation.mean) / enc.normalisation.divisor
            out = ref.frames(x[:, None].to(enc.dtype))
            (out.mean(1) + out.amax(1)).float().cpu()


def torchvggish_peer(enc, clips, device):
    """torchvggish's own pipeline, one clip at a time (numpy front end + its VGG), same weights."""
    from torchvggish import vggish_input
    from torchvggish.torchvggish import VGG, make_layers

    tv = VGG(make_layers(), postprocess=False).eval()
    tv.load_state_dict(enc.network.state_dict())
    tv.to(device)
    np_clips = [c.cpu().double().numpy() for c in clips]

    def run():
        with torch.inference_mode():
            for c in np_clips:
                tv(vggish_input.waveform_to_examples(c, enc.sample_rate).to(device)).cpu()
    return run


def transformers_ast_peer(hf, clips, device):
    """The transformers pipeline, one clip at a time: ASTFeatureExtractor (numpy) + ASTModel's pooler."""
    from transformers import ASTFeatureExtractor

    fe = ASTFeatureExtractor()
    np_clips = [c.cpu().numpy() for c in clips]

    def run():
        with torch.inference_mode():
            for c in np_clips:
                hf(**fe(c, sampling_rate=16000, return_tensors="pt").to(device)).pooler_output.cpu()
    return run


def transformers_speech_peer(hf, extractor, clips, device, whisper):
    """The transformers pipeline, one clip at a time: the model's feature extractor (numpy) and its model
    (Whisper: the encoder on the 30-s window), the last hidden state's time mean."""
    np_clips = [c.cpu().numpy() for c in clips]

    def run():
        with torch.inference_mode():
            for c in np_clips:
                inp = extractor(c, sampling_rate=16000, return_tensors="pt").to(device)
                out = hf.encoder(inp.input_features) if whisper else hf(inp.input_values)
                out.last_hidden_state.mean(1).cpu()
    return run


def _transformers_speech(name):
    """A random transformers model of ``name``'s size (wav2vec 2.0 family or Whisper) and its feature extractor."""
    import transformers as T

    from audio_repr.models.wav2vec2 import CONV_DIM

    card = audio_repr.get_card(name)
    a = card.arch
    if card.family == "whisper":
        cfg = T.WhisperConfig(num_mel_bins=a["n_mels"], d_model=a["dim"], encoder_layers=a["depth"],
                              encoder_attention_heads=a["heads"], encoder_ffn_dim=a["ffn"], decoder_layers=1,
                              decoder_attention_heads=a["heads"], decoder_ffn_dim=a["ffn"])
        return T.WhisperModel(cfg).eval(), T.WhisperFeatureExtractor(feature_size=a["n_mels"])
    kind = ("WavLM" if a.get("relpos") else "Data2VecAudio" if a.get("pos_conv_layers") else
            "Hubert" if name.startswith("hubert") else "Wav2Vec2")
    kw = dict(hidden_size=a["dim"], num_hidden_layers=a["depth"], num_attention_heads=a["heads"],
              intermediate_size=a["mlp_dim"], feat_extract_norm=a.get("feat_extract_norm", "group"),
              conv_bias=a.get("conv_bias", False), conv_dim=CONV_DIM)
    if kind != "Data2VecAudio":
        kw["do_stable_layer_norm"] = a.get("stable_layer_norm", False)
    cfg = getattr(T, kind + "Config")(**kw)
    fe = T.Wav2Vec2FeatureExtractor(do_normalize=card.frontend.get("normalize", False))
    return getattr(T, kind + "Model")(cfg).eval(), fe


def panns_peer(ref, clips, device):
    """panns_inference's Cnn14 (the original's code: torchlibrosa front end + its network), one clip at a time,
    same weights: its clip embedding."""
    def run():
        with torch.inference_mode():
            for c in clips:
                ref(c[None].to(device))["embedding"].cpu()
    return run


def _panns_reference(card):
    """panns_inference's ``Cnn14`` for a PANNs card (its package ``__init__`` downloads a label list on import:
    load its ``models`` module alone), or None when it is not installed."""
    import importlib
    import importlib.util
    import types

    spec = importlib.util.find_spec("panns_inference")
    if spec is None:
        return None
    if "_panns_reference" not in sys.modules:
        pkg = types.ModuleType("_panns_reference")
        pkg.__path__ = [str(Path(spec.origin).parent)]
        sys.modules["_panns_reference"] = pkg
    models = importlib.import_module("_panns_reference.models")
    fe = card.frontend
    return models.Cnn14(sample_rate=card.sample_rate, window_size=fe["n_fft"], hop_size=fe["hop_length"],
                        mel_bins=fe["n_mels"], fmin=fe["f_min"], fmax=fe["f_max"], classes_num=527).eval()


def load_with_peer(name, device, dtype=None):
    """(our encoder, peer description, peer callable factory). VGGish and AST are compared with their
    reference pipelines (same weights on both sides); BYOL-A and MSM-MAE with a per-clip loop of our
    own modules, the way the original runtimes work."""
    family = audio_repr.get_card(name).family
    if family == "ast":
        try:
            import transformers  # noqa: F401
        except ImportError:
            pass
        else:
            import tempfile

            from transformers import ASTConfig, ASTModel
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            card = audio_repr.get_card(name)
            torch.manual_seed(0)
            hf = ASTModel(ASTConfig(frequency_stride=card.arch["fstride"], time_stride=card.arch["tstride"],
                                    max_length=card.arch["max_frames"])).eval()
            with tempfile.TemporaryDirectory() as d:
                hf.save_pretrained(d)
                enc = audio_repr.load(name, weights=d, device=device, dtype=dtype)
            hf.to(device)
            return enc, "transformers pipeline, per clip", lambda clips: transformers_ast_peer(hf, clips, device)
    if family in ("wav2vec2", "whisper"):
        try:
            import transformers  # noqa: F401
        except ImportError:
            pass
        else:
            import tempfile

            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            torch.manual_seed(0)
            hf, extractor = _transformers_speech(name)
            with tempfile.TemporaryDirectory() as d:
                hf.save_pretrained(d)
                enc = audio_repr.load(name, weights=d, device=device, dtype=dtype)
            hf.to(device)
            return enc, "transformers pipeline, per clip", lambda clips: transformers_speech_peer(
                hf, extractor, clips, device, family == "whisper")
    if family == "panns":
        card = audio_repr.get_card(name)
        ref = _panns_reference(card)
        if ref is not None:
            import tempfile

            torch.manual_seed(0)
            with tempfile.TemporaryDirectory() as d:
                torch.save({"model": ref.state_dict()}, Path(d) / "cnn14.pth")     # the released layout
                enc = audio_repr.load(name, weights=Path(d) / "cnn14.pth", device=device, dtype=dtype)
            ref.to(device)
            return enc, "panns_inference Cnn14, per clip", lambda clips: panns_peer(ref, clips, device)
    enc = audio_repr.load(name, pretrained=False, device=device, dtype=dtype)
    if family == "byola":
        # the original network (the official module layout, NCHW: tests/reference_byola.py) with the same weights
        sys.path.insert(0, str(ROOT / "tests"))
        from reference_byola import OriginalV1, OriginalV2

        ref = OriginalV2() if enc.network.stack_output else OriginalV1(enc.network.layer_dims["fc2"])
        ref.load_state_dict(enc.network.state_dict())
        ref.to(device=device, dtype=enc.dtype).eval()
        return enc, "original network, per clip", lambda clips: (lambda: byola_original_loop(enc, ref, clips))
    if family == "vggish":
        try:
            import torchvggish  # noqa: F401
        except ImportError:
            pass
        else:
            return enc, "torchvggish, per clip", lambda clips: torchvggish_peer(enc, clips, device)
    return enc, "per-clip loop of our modules", lambda clips: (lambda: per_clip_loop(enc, clips))


# The originals of Dasheng (the ``dasheng`` package) and CED (RicherMans/CED, GPL-3.0, run from a checkout) need
# torchaudio, which has no release for every torch: they run in another Python (--peer-python), timed there on the
# same clips, one clip at a time as their own entry points do (``model(wav[None])``), with their own random weights.
PEER_SCRIPT = """
import sys, time, torch
torch.set_num_threads({threads})
clips = torch.load({clips!r})
kind, cfg = {kind!r}, {cfg!r}
if kind == "dasheng":
    from dasheng.pretrained.pretrained import Dasheng
    model = Dasheng(**cfg).eval()
else:
    sys.path.insert(0, {checkout!r})
    from models.audiotransformer import AudioTransformer
    model = AudioTransformer(outputdim=527, patch_size=16, mlp_ratio=4, **cfg).eval()
def run():
    with torch.inference_mode():
        for c in clips:
            model(c[None])
run()
best = float("inf")
for _ in range({repeat}):
    t = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - t)
print(best)
"""


def original_in_other_python(name, clips, args):
    """Seconds the original takes for ``clips`` (best of ``args.repeat``), timed in ``args.peer_python``."""
    import tempfile

    card = audio_repr.get_card(name)
    a = card.arch
    cfg = dict(embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"])
    with tempfile.TemporaryDirectory() as d:
        torch.save([c.cpu() for c in clips], Path(d) / "clips.pt")
        script = PEER_SCRIPT.format(threads=torch.get_num_threads(), clips=str(Path(d) / "clips.pt"),
                                    kind=card.family, cfg=cfg, checkout=args.ced_checkout or "", repeat=args.repeat)
        out = subprocess.run([args.peer_python, "-c", script], capture_output=True, text=True, timeout=7200)
    if out.returncode:
        raise RuntimeError(f"the original {card.family} failed in {args.peer_python}: {out.stderr[-2000:]}")
    return float(out.stdout.split()[-1])


def frontend_only(enc, clips):
    with torch.inference_mode():
        for i in range(0, len(clips), 32):
            b = torch.stack(clips[i: i + 32])
            enc.frontend(b)


# The peak is VmHWM, the high-water RSS of this process image (Linux; reset by exec), not ru_maxrss: a child
# started by fork/vfork + exec inherits its parent's ru_maxrss, so after the throughput runs (a bench process of
# 1-2 GB) every growth below the parent's peak read 0 MB (EfficientAT's 0.84 GB for 10 minutes) and larger ones
# were understated. Elsewhere ru_maxrss (kB on Linux) is the fallback.
MEM_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {root!r})
import audio_repr


def peak_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


torch.set_num_threads({threads})
enc = audio_repr.load({name!r}, pretrained=False)
enc.embed(torch.randn(enc.sample_rate * 2), sr=enc.sample_rate)      # warm-up
base = peak_mb()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
e = enc.embed({path!r}, batch_size={batch})
print(peak_mb() - base, e.frames.shape[0], resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def write_long_file(path, minutes, sr, channels=1):
    """A WAV of ``minutes`` of noise (16-bit PCM), written in blocks."""
    import numpy as np
    import soundfile as sf

    g = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=channels, subtype="PCM_16") as f:
        left = int(minutes * 60 * sr)
        while left:
            n = min(left, sr * 60)
            f.write((0.1 * g.standard_normal((n, channels))).astype("float32"))
            left -= n
    return path


def peak_memory_mb(name, minutes, threads, sr=None, channels=1, batch=8, faults=None):
    """Peak RSS growth of a fresh process embedding a ``minutes``-long WAV file by its path (reading,
    downmix, resampling, front end, network, output) at ``batch_size=batch`` (``None``: the library's default),
    past a warm-up on 2 s. The run's minor page faults are appended to ``faults`` (a list) when given."""
    import tempfile

    sr = sr or audio_repr.get_card(name).sample_rate
    with tempfile.TemporaryDirectory() as d:
        path = write_long_file(Path(d) / "long.wav", minutes, sr, channels)
        out = subprocess.run([sys.executable, "-c", MEM_SCRIPT.format(root=str(ROOT), name=name, path=str(path), batch=batch,
                                                                      threads=threads)],
                             capture_output=True, text=True, timeout=3600)
    if out.returncode:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    words = out.stdout.split()
    if faults is not None:
        faults.append(int(words[2]))
    return float(words[0])


def bench_model(name, args):
    rows = []
    enc, peer_name, make_peer = load_with_peer(name, args.device)
    family = enc.card.family
    if args.peer_python and args.device == "cpu" and (family == "dasheng" or (family == "ced" and args.ced_checkout)):
        peer_name = f"the original {'dasheng package' if family == 'dasheng' else 'CED code'}, per clip"
        make_peer = lambda clips: (lambda: original_in_other_python(name, clips, args))   # noqa: E731
    sr = enc.sample_rate
    g = torch.Generator().manual_seed(0)
    clips = [(0.1 * torch.randn(int(sr * args.seconds), generator=g)).to(args.device) for _ in range(args.clips)]
    audio_s = args.clips * args.seconds
    peer = make_peer(clips)
    t_peer = peer() if peer_name.startswith("the original") else timeit(peer, args.device, args.repeat)
    t_fe = timeit(lambda: frontend_only(enc, clips), args.device, args.repeat)
    for dtype in args.dtypes:
        e = enc if dtype == "float32" else load_with_peer(name, args.device, getattr(torch, dtype))[0]
        for bs in args.batch_sizes:
            t = timeit(lambda: e.embed(clips, sr=sr, batch_size=bs), args.device, args.repeat)
            rows.append({"model": name, "device": args.device, "dtype": dtype, "batch_size": bs or "default",
                         "audio_s_per_s": audio_s / t, "seconds": t,
                         "frontend_share": t_fe / t if dtype == "float32" else None,
                         "peer": peer_name, "peer_audio_s_per_s": audio_s / t_peer,
                         "ratio_vs_peer": t_peer / t})
    mem = {m: peak_memory_mb(name, m, torch.get_num_threads(), args.memory_sr, args.memory_channels)
           for m in args.memory_minutes}
    for r in rows:
        r["peak_rss_growth_mb"] = {f"{m} min": v for m, v in mem.items()}
    return rows


def _run_counted(fn):
    """(wall seconds, minor page faults) of one call of ``fn`` in this process."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    return dt, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0


def _median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def bench_interleaved(name, args):
    """Issue 29's rows: per clip length in ``args.lengths``, ``embed`` at the default batch, at batch 1, at the
    batch the default was before (``--before-batch``: 16 pieces) and the original's per-clip code, run A, B, C,
    D, then B, C, D, A, ... (each round starts one side later, so no side always runs first or after the
    same one) for ``args.rounds`` rounds after one warm-up round, so the machine's load hits every side alike;
    each row: the median seconds, their spread (max - min), the median minor page faults (``ru_minflt``, which
    the load does not move) and the medians of the per-round ratios."""
    enc, peer_name, make_peer = load_with_peer(name, args.device)
    sr = enc.sample_rate
    rows = []
    for seconds in args.lengths:
        g = torch.Generator().manual_seed(0)
        n = max(1, round(args.clips * 10 / seconds)) if args.scale_clips else args.clips
        clips = [(0.1 * torch.randn(int(sr * seconds), generator=g)).to(args.device) for _ in range(n)]
        sides = {"default": lambda: enc.embed(clips, sr=sr),
                 "1": lambda: enc.embed(clips, sr=sr, batch_size=1),
                 f"{args.before_batch} (before)": lambda: enc.embed(clips, sr=sr, batch_size=args.before_batch),
                 "original": make_peer(clips)}
        times = {k: [] for k in sides}
        faults = {k: [] for k in sides}
        keys = list(sides)
        for r in range(args.rounds + 1):
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:    # each round starts with the next side
                fn = sides[k]
                dt, f = _run_counted(fn)
                if r:                                     # round 0 warms every side up
                    times[k].append(dt)
                    faults[k].append(f)
        audio_s = n * seconds
        for k in sides:
            t = times[k]
            rows.append({"model": name, "clip_s": seconds, "clips": n, "batch": k,
                         "default_batch": enc.default_batch_size() if k == "default" else None,
                         "budget_frames": enc.batch_budget(), "seconds_median": _median(t),
                         "seconds_spread": max(t) - min(t), "audio_s_per_s": audio_s / _median(t),
                         "minor_faults_median": _median(faults[k]),
                         "vs_batch1": _median([a / b for a, b in zip(times["1"], t)]),
                         "vs_original": _median([a / b for a, b in zip(times["original"], t)]),
                         "original": peer_name, "rounds": args.rounds, "load": os.getloadavg()[0]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown_interleaved(rows):
    lines = ["| model | clips | batch | audio s / s (median, spread) | minor faults | vs batch 1 | vs original |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        t, sp = r["seconds_median"], r["seconds_spread"]
        batch = r["batch"] if r["batch"] != "default" else (
            f"default ({r['default_batch']} full)" if r["budget_frames"] is None
            else f"default ({r['budget_frames']} frames)")
        lines.append(f"| {r['model']} | {r['clips']} x {r['clip_s']:g} s | {batch} | "
                     f"{r['clips'] * r['clip_s'] / t:.1f} ({t:.2f} s ±{sp / 2:.2f}) | {r['minor_faults_median']:,.0f} | "
                     f"{r['vs_batch1']:.2f}x | {r['vs_original']:.2f}x |")
    return "\n".join(lines) + "\n"


def markdown(results, meta):
    lines = ["# Benchmarks", "",
             f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['threads']} threads; device {meta['device']}.",
             f"Command: `{meta['command']}`", "",
             "Throughput is seconds of audio embedded per second of wall time (10 s clips, random weights, best of "
             f"{meta['repeat']}). The peer is measured in the same run; the ratio is peer time / our time.", "",
             "| model | dtype | batch | audio s / s | front-end share | peer (audio s / s) | ratio vs peer | peak RSS growth |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        mem = ", ".join(f"{k}: {v:.0f} MB" if v is not None else f"{k}: n/a" for k, v in r["peak_rss_growth_mb"].items())
        fe = f"{100 * r['frontend_share']:.0f}%" if r["frontend_share"] is not None else "-"
        lines.append(f"| {r['model']} | {r['dtype']} | {r['batch_size']} | {r['audio_s_per_s']:.0f} | {fe} | "
                     f"{r['peer_audio_s_per_s']:.0f} ({r['peer']}) | {r['ratio_vs_peer']:.2f}x | {mem} |")
    return "\n".join(lines) + "\n"


def _batch(text):
    return None if text == "default" else int(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["byola-v1-512", "byola-v2-2048"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", nargs="+", default=["float32"])
    p.add_argument("--batch-sizes", nargs="+", type=_batch, default=[None, 1, 32],
                   help="pieces per batch; 'default' is the library's own choice (embed's batch_size=None)")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--memory-minutes", nargs="*", type=float, default=[10, 60])
    p.add_argument("--memory-sr", type=int, default=None, help="sample rate of the long file (default: the model's)")
    p.add_argument("--memory-channels", type=int, default=1, help="channels of the long file (default 1)")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None, help="append the table to this file (docs/benchmarks.md)")
    p.add_argument("--memory-only", action="store_true", help="only the long-file memory measurement")
    p.add_argument("--memory-batch", type=_batch, default=8,
                   help="batch_size of the long-file measurement (default 8; 'default': the library's)")
    p.add_argument("--rounds", type=int, default=0, help="issue 29's interleaved rows instead: default batch vs "
                   "batch 1 vs --before-batch vs the original, median of this many rounds with the spread and faults")
    p.add_argument("--lengths", nargs="+", type=float, default=[10.0, 1.0], help="clip lengths of --rounds (s)")
    p.add_argument("--before-batch", type=int, default=16, help="the default batch before issue 29 (--rounds)")
    p.add_argument("--scale-clips", action="store_true",
                   help="--rounds: --clips 10-s clips' worth of audio at every length (more short clips)")
    p.add_argument("--peer-python", default=None, help="a Python with the original dasheng package and torchaudio "
                   "(Dasheng's and CED's peers; see tests/make_golden_dasheng.py)")
    p.add_argument("--ced-checkout", default=None, help="a checkout of RicherMans/CED (its models/ folder), for CED")
    args = p.parse_args(argv)
    results = []
    if args.memory_only:
        for name in args.models:
            faults = []
            mem = {f"{m} min": peak_memory_mb(name, m, torch.get_num_threads(), args.memory_sr, args.memory_channels,
                                              args.memory_batch, faults)
                   for m in args.memory_minutes}
            row = {"model": name, "file": f"{args.memory_sr or audio_repr.get_card(name).sample_rate} Hz, "
                   f"{args.memory_channels} channel(s), 16-bit WAV", "batch_size": args.memory_batch or "default",
                   "peak_rss_growth_mb": mem, "minor_faults": dict(zip(mem, faults))}
            print(json.dumps(row))
            results.append(row)
        if args.json:
            Path(args.json).write_text(json.dumps({"command": "python " + " ".join(
                [os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])), "results": results}, indent=2))
        return 0
    if args.rounds:
        for name in args.models:
            results.extend(bench_interleaved(name, args))
        meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
                "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:]))}
        if args.json:
            Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        print(markdown_interleaved(results))
        return 0
    for name in args.models:
        rows = bench_model(name, args)
        for r in rows:
            print(json.dumps(r))
        results.extend(rows)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
            "repeat": args.repeat, "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:]))}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
