"""Pictures: a file's log-mel spectrogram with its frame embeddings, and a 2-D map of a labelled
dataset's clip embeddings. Needs matplotlib (``pip install audio-repr[plot]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover
        raise ImportError("plots need matplotlib: pip install 'audio-repr[plot]'") from e
    return plt


def _save(plt, fig, out) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_file(encoder, path, out, *, layers=None) -> Path:
    """PNG with the log-mel spectrogram (top) and the frame embeddings on the same time axis (bottom)."""
    plt = _plt()
    wav = encoder.waveforms(str(path))
    feats = encoder._features(wav).cpu().numpy()
    emb = encoder.embed(wav, sr=encoder.sample_rate, layers=layers)
    hop_s = encoder.frontend.hop_length / encoder.sample_rate
    dur = wav.shape[-1] / encoder.sample_rate
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [1, 1.3]})
    a1.imshow(feats, origin="lower", aspect="auto", cmap="magma", extent=[0, feats.shape[1] * hop_s, 0, feats.shape[0]])
    a1.set_ylabel("mel bin")
    a1.set_title(f"{Path(path).name}: front end of {encoder.name}")
    fr = emb.frames.numpy()
    ts = emb.timestamps_ms.numpy() / 1000.0
    step = (ts[1] - ts[0]) if len(ts) > 1 else dur
    z = (fr - fr.mean(0)) / (fr.std(0) + 1e-8)
    a2.imshow(z.T, origin="lower", aspect="auto", cmap="coolwarm", vmin=-3, vmax=3,
              extent=[ts[0] - step / 2, ts[-1] + step / 2, 0, fr.shape[1]])
    a2.set_ylabel(f"dimension ({'+'.join(emb.layers)})")
    a2.set_xlabel("time (s)  —  frame embeddings standardised per dimension, at their timestamps")
    a2.set_xlim(0, dur)
    return _save(plt, fig, out)


def plot_map(encoder, csv_path, out, *, layers=None, method: str = "pca", cache: Optional[Path] = None,
             batch_size: int = 32, limit: Optional[int] = None) -> Path:
    """PNG with a 2-D map (PCA or t-SNE) of clip embeddings of a ``file,label`` CSV, coloured by label."""
    from .evaluate import embed_dataset, read_dataset

    plt = _plt()
    files, labels, _, _ = read_dataset(csv_path)
    if limit:
        files, labels = files[:limit], labels[:limit]
    X = embed_dataset(encoder, files, layers=layers, batch_size=batch_size, cache=cache)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    if method == "tsne":
        from sklearn.manifold import TSNE

        Y = TSNE(n_components=2, init="pca", random_state=0, perplexity=min(30, len(X) - 1)).fit_transform(X)
    else:
        U, S, _ = np.linalg.svd(X - X.mean(0), full_matrices=False)
        Y = U[:, :2] * S[:2]
    classes = sorted(set(labels))
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        m = np.array([l == c for l in labels])
        ax.scatter(Y[m, 0], Y[m, 1], s=8, color=cmap(i % cmap.N), label=c, alpha=0.75)
    ax.legend(markerscale=2, fontsize=8, title="label", loc="best")
    ax.set_title(f"{encoder.name} clip embeddings of {Path(csv_path).name} ({method.upper()}, {len(X)} clips)")
    return _save(plt, fig, out)
