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


def _save(plt, fig, out, tight: bool = True) -> Path:
    if tight:
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
             batch_size: int = 32, limit: Optional[int] = None, file_column: str = "file",
             label_column: str = "label", audio_dir=None) -> Path:
    """PNG with a 2-D map (PCA or t-SNE) of clip embeddings of a ``file,label`` CSV, coloured by label.

    ``limit``: at most this many clips, drawn across the classes (:func:`stratified_rows`), not the CSV's
    first rows. ``file_column``, ``label_column``, ``audio_dir``: as :func:`audio_repr.evaluate.read_dataset`.
    Up to :data:`LEGEND_MAX` classes get a legend beside the map; more are named at their centroids."""
    from .evaluate import embed_dataset, read_dataset

    plt = _plt()
    files, labels, _, _ = read_dataset(csv_path, file_column=file_column, label_column=label_column,
                                       audio_dir=audio_dir)
    if limit:
        keep = stratified_rows(labels, limit)
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    X = embed_dataset(encoder, files, layers=layers, batch_size=batch_size, cache=cache)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    if method == "tsne":
        from sklearn.manifold import TSNE

        Y = TSNE(n_components=2, init="pca", random_state=0, perplexity=min(30, len(X) - 1)).fit_transform(X)
    else:
        U, S, _ = np.linalg.svd(X - X.mean(0), full_matrices=False)
        Y = U[:, :2] * S[:2]
    title = f"{encoder.name} clip embeddings of {Path(csv_path).name} ({method.upper()}, {len(X)} clips)"
    fig = map_figure(plt, Y, labels, title)
    return _save(plt, fig, out, tight=False)


#: Up to this many classes the map has a legend beside it; more are named at their centroids on the map.
LEGEND_MAX = 20


def stratified_rows(labels, limit: int, seed: int = 0):
    """Indices of at most ``limit`` rows spread over the classes: each class's rows in a seeded random order,
    then one row of every class in turn (so every class is present when ``limit`` >= the number of classes,
    and the classes keep equal shares up to their sizes). Returned in the CSV's order."""
    rng = np.random.default_rng(seed)
    labels = list(labels)
    classes = sorted(set(labels))
    per_class = {c: [] for c in classes}
    for i, lab in enumerate(labels):
        per_class[lab].append(i)
    queues = [list(rng.permutation(per_class[c])) for c in classes]
    chosen = []
    rank = 0
    while len(chosen) < min(limit, len(labels)):
        for q in queues:
            if rank < len(q) and len(chosen) < limit:
                chosen.append(int(q[rank]))
        rank += 1
    return sorted(chosen)


def map_figure(plt, Y, labels, title: str):
    """The map's figure: points ``Y [N, 2]`` coloured by ``labels``; a legend beside the axes for up to
    :data:`LEGEND_MAX` classes, else each class's name at its centroid. The layout is
    constrained, so the legend and the names stay inside the figure and the axes keep most of it."""
    from matplotlib import patheffects

    classes = sorted(set(labels))
    many = len(classes) > LEGEND_MAX
    fig, ax = plt.subplots(figsize=(9, 8) if many else (8, 6), layout="constrained")
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    labels = np.asarray(labels)
    for i, c in enumerate(classes):
        m = labels == c
        ax.scatter(Y[m, 0], Y[m, 1], s=8, color=cmap(i % cmap.N), label=c, alpha=0.75)
    if many:
        halo = [patheffects.withStroke(linewidth=2.5, foreground="white")]
        for i, c in enumerate(classes):
            cx, cy = np.median(Y[labels == c], axis=0)
            ax.text(cx, cy, c, fontsize=7, ha="center", va="center", color="0.1", path_effects=halo,
                    clip_on=True)
        ax.set_xlabel(f"{len(classes)} classes, each named at its median point")
    else:
        ax.legend(markerscale=2, fontsize=8, title="label", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0, frameon=False)
    ax.set_title(title, fontsize=10)
    return fig
