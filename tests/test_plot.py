"""The pictures' layout (issue 21: a 50-class map was a thin strip beside a legend cut off by the figure)."""

import numpy as np
import pytest

import audio_repr.evaluate as ev

pytest.importorskip("matplotlib")

from audio_repr import plot  # noqa: E402


def _geometry(fig):
    """(axes area / figure area, figure bbox, legend bbox or None, text bboxes) in display units."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    fb = fig.bbox
    (ax,) = fig.axes
    ab = ax.get_window_extent(r)
    leg = ax.get_legend()
    texts = [t.get_window_extent(r) for t in ax.texts]
    return ab.width * ab.height / (fb.width * fb.height), fb, ab, (leg.get_window_extent(r) if leg else None), texts


def _inside(inner, outer, slack=1.0):
    return (inner.x0 >= outer.x0 - slack and inner.y0 >= outer.y0 - slack and inner.x1 <= outer.x1 + slack
            and inner.y1 <= outer.y1 + slack)


def _clusters(k, per, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), per)
    return rng.normal(size=(k, 2))[y] * 30 + rng.normal(size=(len(y), 2)) * 3, y


@pytest.mark.parametrize("k", [10, 20, 50])
def test_map_keeps_the_axes_large_and_everything_inside_the_figure(k, tmp_path):
    """10 and 20 classes: a legend beside the map, inside the figure; 50: names at the centroids (a 50-entry
    legend squeezed the map into a strip and ran off the figure). The map keeps at least half the figure."""
    plt = plot._plt()
    Y, y = _clusters(k, 30)
    names = [f"class_with_a_long_name_{i}" for i in range(k)]
    fig = plot.map_figure(plt, Y, [names[i] for i in y], "title")
    frac, fb, ab, leg, texts = _geometry(fig)
    assert frac > 0.5, frac
    if k <= plot.LEGEND_MAX:
        assert leg is not None and _inside(leg, fb) and leg.x0 >= ab.x1 - 1      # beside the map, not on it
        assert len(fig.axes[0].get_legend().get_texts()) == k and not texts
    else:
        assert leg is None and len(texts) == k
        assert all(_inside(t, fb) for t in texts)
        assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(names)
    out = plot._save(plt, fig, tmp_path / "m.png", tight=False)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stratified_rows_cover_every_class():
    """FSDD's CSV is sorted by digit: the first 300 rows held only digits 0 and 1."""
    labels = [str(d) for d in range(10) for _ in range(300)]
    rows = plot.stratified_rows(labels, 300)
    assert len(rows) == 300 and rows == sorted(rows) and len(set(rows)) == 300
    assert np.bincount([int(labels[i]) for i in rows]).tolist() == [30] * 10
    assert rows == plot.stratified_rows(labels, 300)                         # reproducible
    uneven = ["a"] * 3 + ["b"] * 100 + ["c"] * 10
    got = [uneven[i] for i in plot.stratified_rows(uneven, 30)]
    assert got.count("a") == 3 and got.count("c") == 10 and got.count("b") == 17   # small classes whole
    assert len(plot.stratified_rows(uneven, 1000)) == len(uneven)


class _Enc:
    name = "fixed"


def test_plot_map_limit_samples_across_classes_and_reads_other_columns(tmp_path, monkeypatch):
    """``plot_map(limit=...)`` embeds a stratified sample; ``file_column``/``label_column``/``audio_dir`` as
    evaluate's (ESC-50's own metadata)."""
    rows = [f"clip{d}_{k}.wav,{d},cls{d}" for d in range(5) for k in range(40)]
    (tmp_path / "meta.csv").write_text("filename,target,category\n" + "\n".join(rows) + "\n")
    asked = []

    def fake_embed(enc, files, **kw):
        asked.extend(files)
        return np.random.default_rng(0).normal(size=(len(files), 8)).astype(np.float32)

    monkeypatch.setattr(ev, "embed_dataset", fake_embed)
    out = plot.plot_map(_Enc(), tmp_path / "meta.csv", tmp_path / "m.png", limit=25, file_column="filename",
                        label_column="category", audio_dir="audio")
    assert out.is_file() and len(asked) == 25
    assert all(f.parent == tmp_path / "audio" for f in asked)
    assert sorted({f.name.split("_")[0] for f in asked}) == [f"clip{d}" for d in range(5)]


def test_plot_map_of_50_classes_is_legible(tmp_path, monkeypatch):
    """End to end (as `audio-repr plot esc50.csv --map`): the figure ``plot_map`` saves keeps the map large,
    every class named on it, nothing outside the figure."""
    names = [f"category_{i:02d}" for i in range(50)]
    (tmp_path / "d.csv").write_text("file,label\n" + "\n".join(f"f{i}.wav,{names[i % 50]}" for i in range(500)) + "\n")
    Y, y = _clusters(50, 10)
    order = np.argsort(np.arange(500) % 50, kind="stable")             # rows i of class i % 50
    X = np.empty((500, 2))
    X[order] = Y
    monkeypatch.setattr(ev, "embed_dataset", lambda enc, files, **kw: X[: len(files)].astype(np.float32))
    saved = []
    monkeypatch.setattr(plot, "_save", lambda plt, fig, out, **kw: saved.append(fig) or out)
    plot.plot_map(_Enc(), tmp_path / "d.csv", tmp_path / "m.png")
    frac, fb, ab, leg, texts = _geometry(saved[0])
    assert frac > 0.5 and _inside(ab, fb)
    assert leg is None or _inside(leg, fb)
    assert sorted(t.get_text() for t in saved[0].axes[0].texts) == names and all(_inside(t, fb) for t in texts)
