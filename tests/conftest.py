"""Shared fixtures. Tests that need ../shared (official weights, golden outputs, real recordings)
skip cleanly when it is absent; everything else runs on data the tests make themselves."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUDIO_REPR_SHARED", ROOT.parent / "shared"))
D512 = SHARED / "weights" / "AudioNTT2020-BYOLA-64x96d512.pth"
GOLDEN = SHARED / "golden" / "byola_v1_d512.npz"
AUDIO = SHARED / "audio"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's cache, never download: each test gets an empty cache, offline."""
    monkeypatch.setenv("AUDIO_REPR_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("AUDIO_REPR_OFFLINE", "1")
    monkeypatch.delenv("AUDIO_REPR_MIRROR", raising=False)


@pytest.fixture
def d512_weights():
    if not D512.is_file():
        pytest.skip(f"official weights not present ({D512})")
    return D512


@pytest.fixture(scope="session")
def golden():
    if not GOLDEN.is_file():
        pytest.skip(f"golden outputs not present ({GOLDEN})")
    return dict(np.load(GOLDEN))


@pytest.fixture
def shared_audio():
    if not (AUDIO / "cat-meow-44k.wav").is_file():
        pytest.skip(f"shared recordings not present ({AUDIO})")
    return AUDIO


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ---------------- the same arithmetic in other batch shapes ----------------

EPS32 = float(torch.finfo(torch.float32).eps)        # 2**-23 = 1.19e-7; unit roundoff u = EPS32 / 2


def same_arithmetic_bound(ref, fan_in: int, depth: int) -> float:
    """How far two float32 evaluations of the same network may differ when only the batch shape
    (batch size, padding, pieces, threads, the CPU's kernels) changes: ``depth * sqrt(fan_in) * EPS32
    * max|ref|``.

    Why. Changing the batch shape changes how the kernels (GEMM / convolution blocking, SIMD lane
    width: AVX2 vs AVX-512, FMA, how the work is split over threads) group the terms of every sum;
    the mathematical result is the same, the float32 rounding is not. One output of a layer,
    ``y = sum_k t_k`` over a fan-in of ``K`` terms, is built by ``K`` additions, each rounded with an
    error of at most ``u |s_j|`` (``u = EPS32 / 2``, ``s_j`` the running partial sum). For a layer's
    mixed-sign terms the partial sums stay at the scale of the outputs (``max|y|``), so
    * worst case (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., sec. 4.2), every
      error of the same sign: ``|y_1 - y_2| <= 2 (K - 1) u max|y| ~ K EPS32 max|y|``;
    * in practice (independent rounding errors of random sign: Higham & Mary, SIAM J. Sci. Comput.
      41(5), 2019, probabilistic error analysis): a random walk of ``K`` steps, standard deviation
      ``u sqrt(K / 2) rms(y)`` per order, ``u sqrt(K) rms(y)`` for the difference of two orders. The
      largest of ``N ~ 1e4..1e6`` compared outputs lies ``sqrt(2 ln N) ~ 4.3..5.3`` standard deviations
      out, ``~ 2.2..2.6 EPS32 sqrt(K) rms(y)``: about ``EPS32 sqrt(K) max|y|``, as ``max|y|`` is 2..8
      ``rms(y)`` for these networks' outputs.
    Through a network the errors compound: each of ``depth`` accumulating layers (convolution,
    linear, attention product, the front end's mel projection) adds its own and passes the earlier
    ones on at the relative scale of its output (BatchNorm / LayerNorm keep activations at unit scale).
    Independent layers' errors would add in quadrature (``sqrt(depth)``); adding the layers' bounds
    linearly gives a margin of ``sqrt(depth)`` (2.2..8.6 here) and room for layers that amplify a
    relative error (a LayerNorm of a low-variance token, a sharp softmax). With ``fan_in`` the
    largest fan-in along the path (see :func:`accumulations`) this gives the bound above: the
    probabilistic ``sqrt(K)``, not the worst-case ``K``, which for ``K`` in the thousands would be
    50..110 times looser and let a small leak through.

    A batching bug is of another order: padding that leaks into a clip, a missing length mask or a
    wrong row changes outputs by a fraction of their own scale, thousands of times this bound
    (``tests/test_same_arithmetic.py`` shows it fail on such a leak by 1800..18000 x). Measured on one
    CPU with AVX-512, AVX2 and baseline (``ATEN_CPU_CAPABILITY=default``) kernels, 1 and 2 threads, the
    tests' differences stay below 0.05 of it.
    Only for the same arithmetic in another batch shape or order; comparisons with original
    implementations keep their own tolerances.
    """
    ref = np.asarray(ref, dtype=np.float64)
    return depth * math.sqrt(fan_in) * EPS32 * float(np.abs(ref).max())


def accumulations(enc, layer=None):
    """``(fan_in, depth)`` of :func:`same_arithmetic_bound` for an encoder's path from the waveform to
    ``layer`` (default: its deepest layer), read from its modules: the accumulating layers (sums of
    products) in sequence and the largest number of terms one of them sums.

    * the front end's mel projection: one term per frequency bin (``fb`` rows);
    * a CNN (BYOL-A, VGGish): each convolution (in-channels x kernel height x width), each linear
      layer (in-features), up to ``layer``;
    * EfficientAT's MobileNetV3: each convolution, each squeeze-excitation (its average over frequency x
      time of a 10 s clip, its two linear layers), the classifier's linear layers (``logits``);
    * PANNs' CNN14: each convolution, then the clip's time mean (10 s clip), fc1 and fc_audioset;
    * a ViT (MSM-MAE, AST): the patch projection (16 x 16), then per block the qkv projection (width),
      the attention scores (head width), the attention-weighted sum (tokens of a window), the output
      projection (width) and the two MLP layers (width, hidden).
    """
    from torch import nn

    net = enc.network
    ks = [int(enc.frontend.fb.shape[0])]
    blocks = getattr(net, "blocks", None)
    if blocks is not None:
        n = len(blocks) if layer in (None, "output") else int(layer[len("block"):])
        if hasattr(net, "f_patches"):                                   # AST: cls + dist + patches
            tokens = net.f_patches * net.t_patches + 2
        else:                                                           # MSM-MAE: (cls) + patches
            tokens = net.grid[0] * net.grid[1] + int(net.use_cls_token)
        proj = net.patch_embed.proj
        ks.append(proj.in_channels * math.prod(proj.kernel_size))
        for blk in blocks[:n]:
            a, m = blk.attn, blk.mlp
            heads = getattr(a, "heads", None) or a.num_heads
            ks += [a.qkv.in_features, a.qkv.in_features // heads, tokens, a.proj.in_features,
                   m.fc1.in_features, m.fc2.in_features]
    elif enc.card.family == "beats":
        # BEATs: the patch projection (16 x 16), post_extract_proj, the positional convolution (channels per group x
        # kernel), then per layer the q/k/v projections (width), the scores (head width), the GRU gate (head
        # width), the attention-weighted sum (the tokens of a 62-patch window), the output projection and the two
        # MLP layers, up to ``layer``; ``logits`` (the fine-tuned model's deepest) adds the predictor
        layers_ = net.encoder.layers
        deepest = layer == "logits" or (layer is None and net.predictor is not None)
        n = len(layers_) if layer in (None, "logits") else 0 if layer == "patch_embed" else int(layer[len("block"):])
        proj = net.patch_embedding
        conv = net.encoder.pos_conv
        ks += [proj.in_channels * math.prod(proj.kernel_size), conv.weight_v.shape[1] * conv.kernel]
        if net.post_extract_proj is not None:
            ks.append(net.post_extract_proj.in_features)
        for blk in layers_[:n]:
            a = blk.self_attn
            ks += [a.embed_dim, a.head_dim, a.head_dim, net.f_patches * net.window_patches, a.embed_dim,
                   blk.fc1.in_features, blk.fc2.in_features]
        if deepest:
            ks.append(net.predictor.in_features)
    elif enc.card.family in ("wav2vec2", "whisper"):
        # the speech transformers: the wav2vec 2.0 family's convolutions (in-channels x kernel), its GroupNorm's
        # mean over time (the first convolution's steps in a 30-s piece), the projection and the positional
        # convolution (in-channels per group x kernel); Whisper's mel projection (frequency bins) and conv stem;
        # then per layer as a ViT over a 30-s piece's 1500 frames, up to ``layer``
        n = len(net.layers if enc.card.family == "whisper" else net.encoder.layers)
        last = n if layer in (None, "features") else int(layer[len("layer"):])
        if enc.card.family == "whisper":
            ks += [int(net.mel.fb.shape[0]), net.conv1.in_channels * 3, net.conv2.in_channels * 3]
            layers = [(lay.self_attn, lay.fc1, lay.fc2) for lay in net.layers[:last]]
        else:
            for i, c in enumerate(net.feature_extractor.conv_layers):
                ks.append(c.conv.in_channels * c.conv.kernel_size[0])
                if i == 0 and c.norm_kind == "group":
                    ks.append(30 * enc.sample_rate // c.conv.stride[0])
            if layer != "features":
                pc = net.encoder.pos_conv_embed
                convs = [pc.conv] if hasattr(pc, "conv") else [lay.conv for lay in pc.layers]
                ks.append(net.feature_projection.projection.in_features)
                ks += [cv.in_channels // cv.groups * cv.kernel_size[0] for cv in convs]
            layers = [(lay.attention, lay.feed_forward.intermediate_dense, lay.feed_forward.output_dense)
                      for lay in net.encoder.layers[:last]] if layer != "features" else []
        for a, fc1, fc2 in layers:
            d = a.q_proj.in_features
            heads = getattr(a, "heads", None) or a.num_heads
            ks += [d, d // heads, 1500, a.out_proj.in_features, fc1.in_features, fc2.in_features]
    elif enc.card.family in ("laion-clap", "msclap"):
        # HTS-AT: the bicubic resize (4 taps), the patch projection (4 x 4), per Swin block the qkv projection
        # (width), the scores (head width), the attention-weighted sum (the 64 tokens of a window), the output
        # projection and the two MLP layers, each patch merging (4 x width); the mean over the last 64 tokens; for
        # ``joint`` the projection's two linear layers and the L2 norm (a sum of squares over its width)
        h = net.audio_branch if enc.card.family == "laion-clap" else net.audio_encoder.base.htsat
        proj = h.patch_embed.proj
        ks += [4, proj.in_channels * math.prod(proj.kernel_size)]
        for stage in h.layers:
            for blk in stage.blocks:
                a = blk.attn
                ks += [a.qkv.in_features, a.qkv.in_features // a.heads, blk.window ** 2, a.proj.in_features,
                       blk.mlp.fc1.in_features, blk.mlp.fc2.in_features]
            if stage.downsample is not None:
                ks.append(stage.downsample.reduction.in_features)
        ks.append(64)
        if layer in (None, "joint") and enc.card.family == "laion-clap":
            ks += [net.audio_projection[0].in_features, net.audio_projection[2].in_features,
                   net.audio_projection[2].out_features]
        elif layer in (None, "joint"):      # Microsoft CLAP: linear1, linear2, the LayerNorm's moments, the L2 norm
            p = net.audio_encoder.projection
            ks += [p.linear1.in_features, p.linear2.in_features, p.linear2.out_features, p.linear2.out_features]
    elif enc.card.family == "efficientat":
        # MobileNetV3: each convolution (in-channels / groups x kernel), each squeeze-excitation's average over
        # frequency x time (counted for a 10 s clip) and its two linear layers, then the classifier's two
        # linear layers (``logits``), up to ``layer``
        deepest = len(net.features) - 1
        last = deepest if layer in (None, "features", "logits") else int(layer[len("block"):])
        steps = 1000                                                    # front-end frames of 10 s
        for i, blk in enumerate(net.features[: last + 1]):
            stride = net.layer_strides[f"block{i}"]
            for mod in blk.modules():
                if isinstance(mod, nn.Conv2d):
                    ks.append(mod.in_channels // mod.groups * math.prod(mod.kernel_size))
                elif type(mod).__name__ == "SqueezeExcitation":
                    ks.append((enc.frontend.n_mels // stride) * -(-steps // stride))
                elif isinstance(mod, nn.Linear):
                    ks.append(mod.in_features)
        if layer in (None, "logits"):
            ks += [m.in_features for m in net.classifier if isinstance(m, nn.Linear)]
    elif enc.card.family == "panns":
        # CNN14: each convolution (in-channels x 3 x 3) up to ``layer``; for ``embedding``/``logits`` also the
        # clip's time mean (counted for a 10 s clip) and fc1, and fc_audioset for ``logits``
        last = 6 if layer in (None, "embedding", "logits") else int(layer[len("conv_block"):])
        for i in range(1, last + 1):
            blk = getattr(net, f"conv_block{i}")
            ks += [blk.conv1.in_channels * math.prod(blk.conv1.kernel_size),
                   blk.conv2.in_channels * math.prod(blk.conv2.kernel_size)]
        if layer in (None, "embedding", "logits"):
            ks += [1000 // 32, net.fc1.in_features]
        if layer in (None, "logits"):
            ks.append(net.fc_audioset.in_features)
    else:
        if enc.card.family == "vggish":
            from audio_repr.models.vggish import FUSION_SOURCES, LAYER_NAMES

            seq = list(net.features) + list(net.embeddings)
            stop = len(seq) if layer is None else LAYER_NAMES.index(FUSION_SOURCES.get(layer, layer)) + 1
        else:                                                           # BYOL-A: blocks of 4, fc
            seq = list(net.features) + list(net.fc)
            conv = {f"conv{i + 1}": 4 * (i + 1) for i in range(net.n_conv)}
            stop = conv.get(layer, len(net.features) + 2 if layer == "fc1" else len(seq))
        for mod in seq[:stop]:
            if isinstance(mod, nn.Conv2d):
                ks.append(mod.in_channels // mod.groups * math.prod(mod.kernel_size))
            elif isinstance(mod, nn.Linear):
                ks.append(mod.in_features)
    return max(ks), len(ks)


def same_arithmetic_ratio(got, ref, fan_in: int, depth: int) -> float:
    """``max|got - ref| / same_arithmetic_bound(ref, fan_in, depth)``: below 1 when the two differ by
    float32 reordering only. With ``AUDIO_REPR_TOLERANCE_LOG=path`` each ratio is appended to ``path``
    (test, fan-in, depth, observed difference, bound, ratio) to see the margins on a given CPU."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    bound = same_arithmetic_bound(ref, fan_in, depth)
    diff = float(np.abs(got - ref).max()) if got.size else 0.0
    ratio = diff / bound if bound > 0 else (0.0 if diff == 0 else math.inf)
    log = os.environ.get("AUDIO_REPR_TOLERANCE_LOG")
    if log:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(log, "a") as f:
            f.write(f"{test}\t{fan_in}\t{depth}\t{diff:.3e}\t{bound:.3e}\t{ratio:.4f}\n")
    return ratio


def assert_same_arithmetic(got, ref, fan_in: int, depth: int, *, what: str = "") -> None:
    """Assert ``got`` equals ``ref`` up to float32 reordering (:func:`same_arithmetic_bound`)."""
    got, ref = (x.detach().cpu().numpy() if torch.is_tensor(x) else x for x in (got, ref))
    ratio = same_arithmetic_ratio(got, ref, fan_in, depth)
    assert ratio <= 1.0, (f"{what}: max |difference| is {ratio:.3g} x the float32 reordering bound "
                          f"(fan-in {fan_in}, depth {depth}, bound "
                          f"{same_arithmetic_bound(ref, fan_in, depth):.3g})")


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def noise(seconds, sr=16000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(int(seconds * sr), generator=g)).float()


def chirp(seconds, sr=16000, f0=100.0, f1=6000.0, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    k = (f1 - f0) / seconds
    return (amp * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t * t))).astype(np.float32)


def peak_rss_growth_mb(prepare: str, measure: str, check: str, cwd) -> int:
    """Run ``prepare`` then ``measure`` then ``check`` (Python source lines) in a fresh interpreter
    with 2 torch threads; returns how much ``measure`` grew the process's peak RSS, in MB."""
    import subprocess
    import sys
    import textwrap

    script = "\n".join([
        "import resource, torch, audio_repr", "torch.set_num_threads(2)", textwrap.dedent(prepare),
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss", textwrap.dedent(measure),
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss", textwrap.dedent(check),
        "print((peak - base) // 1024)"])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


# ---------------- checkpoints as the original trainers save them ----------------

def panns_sampler_state(classes=527, clips=2000, seed=0):
    """``BalancedTrainSampler.state_dict()`` of audioset_tagging_cnn (utils/data_generator.py), as its trainer
    (pytorch/main.py) saves it beside the model: the clip indexes of each class (numpy int64 arrays, as
    ``np.where`` gives them), the queue of classes and each class's pointer (Python ints)."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, classes, size=clips)
    return {"indexes_per_class": [np.where(labels == k)[0] for k in range(classes)],
            "queue": rng.permutation(classes).tolist(),
            "pointers_of_classes": [int(v) for v in rng.randint(0, 5, size=classes)]}


def panns_training_checkpoint(state_dict, iteration=600000):
    """What ``pytorch/main.py`` of audioset_tagging_cnn saves: ``{'iteration', 'model', 'sampler'}``."""
    return {"iteration": iteration, "model": state_dict, "sampler": panns_sampler_state()}


def adamw_state(n_params, lr=1.5e-4, seed=0):
    """An AdamW ``optimizer.state_dict()`` as MAE-style trainers save it (step tensors, moments, betas as a
    tuple, every hyper-parameter of the param group). Moments are kept for the first two parameters only, to
    keep fixtures small; the types and nesting are those of a real one (made by a real AdamW step)."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(4, 3, generator=g)), torch.nn.Parameter(torch.randn(3, generator=g))]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    opt.step()
    sd = opt.state_dict()
    sd["param_groups"][0]["params"] = list(range(n_params))
    return sd


def grad_scaler_state():
    """``torch.cuda.amp.GradScaler().state_dict()`` after some steps (MAE's NativeScaler saves it as 'scaler')."""
    return {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
            "_growth_tracker": 117}


def save_as_numpy1(obj, path):
    """``torch.save`` as a 2020 trainer did under numpy 1.x: the legacy (non-zip) format, whose pickle names
    numpy's array reconstructor ``numpy.core.multiarray._reconstruct`` (numpy 2 calls the module
    ``numpy._core.multiarray``)."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    Path(path).write_bytes(data)
    return path
