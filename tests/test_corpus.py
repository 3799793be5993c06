"""The corpus path: the streaming pipeline, --format npz|parquet, resume, --shard, read_embeddings, on real
audio (FSDD's spoken digits when ../shared is present, else clips cut from examples/example.wav)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audio_repr
from audio_repr.cli import main
from audio_repr.corpus import read_embeddings
from audio_repr.inference.pipeline import Reader, embed_files, length_groups, stream
from conftest import ROOT, accumulations, assert_same_arithmetic

FSDD = ROOT.parent / "shared" / "audio" / "fsdd" / "recordings"
MODEL = "byola-v1-512"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder of 14 real recordings in two sub-folders, of different lengths and rates."""
    root = tmp_path_factory.mktemp("corpus")
    if FSDD.is_dir():
        src = sorted(FSDD.glob("*.wav"))[::200][:14]
        for i, f in enumerate(src):
            sub = root / ("a" if i % 2 else "b")
            sub.mkdir(exist_ok=True)
            shutil.copy(f, sub / f.name)
    else:
        wav, sr = sf.read(ROOT / "examples" / "example.wav", dtype="float32")
        for i in range(14):
            sub = root / ("a" if i % 2 else "b")
            sub.mkdir(exist_ok=True)
            n = int(sr * (0.4 + 0.25 * i))
            sf.write(sub / f"clip{i:02d}.wav", wav[(i * 997) % 4000:][:n], sr)
    return root


@pytest.fixture(scope="module")
def enc():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)                      # the CLI's --random-init draw
        return audio_repr.load(MODEL, pretrained=False)


def files_of(folder):
    return sorted(str(p) for p in Path(folder).rglob("*.wav"))


def embed_cli(*args):
    return main(["embed", *map(str, args), "--model", MODEL, "--random-init", "-q"])


def test_length_groups():
    secs = [1.0, 5.0, 0.5, 700.0, 5.0, 2.0]
    groups = length_groups(secs, group_files=2, group_seconds=600)
    assert groups == [[3], [1, 4], [5, 0], [2]]           # longest first, a long file alone, ties by index
    assert sorted(i for g in groups for i in g) == list(range(6))


@pytest.mark.parametrize("workers", [0, 1])
def test_stream_equals_embed_file_by_file(corpus, enc, workers):
    files = files_of(corpus)
    alone = {f: enc.embed(f, batch_size=1) for f in files}
    # the same batch composition (one piece per batch): bit-identical, the reader processes included
    got = {r.source: r for r in stream(enc, files, batch_size=1, num_workers=workers)}
    assert sorted(got) == files and all(r.error is None for r in got.values())
    for f in files:
        assert torch.equal(got[f].embedding.frames, alone[f].frames), f
        assert torch.equal(got[f].embedding.clip, alone[f].clip), f
        assert torch.equal(got[f].embedding.timestamps_ms, alone[f].timestamps_ms), f
    # the default batching (clips of similar lengths together): within the batch-invariance bound
    acc = accumulations(enc)
    for r in stream(enc, files, num_workers=workers):
        assert_same_arithmetic(r.embedding.frames, alone[r.source].frames, *acc, what=r.source)
        assert_same_arithmetic(r.embedding.clip, alone[r.source].clip, *acc, what=r.source)


def test_reader_reports_a_bad_file_and_the_others_go_on(tmp_path, corpus, enc):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(100, np.float32), 16000)          # 6 ms: too short for the model
    files = files_of(corpus)[:3] + [str(bad), str(short)]
    assert type(Reader([str(bad)], 16000, "sinc_hann")[0][2]) is audio_repr.AudioError     # the exception itself
    written = []
    n, failures = embed_files(enc, files, written.append, num_workers=1)
    assert n == 3 and sorted(r.source for r in written) == sorted(files[:3])
    assert dict(failures).keys() == {str(bad), str(short)}
    assert "too short" in dict(failures)[str(short)]


def test_parquet_and_npz_hold_the_same_embeddings(tmp_path, corpus):
    pytest.importorskip("pyarrow")
    npz, pq = tmp_path / "npz", tmp_path / "pq"
    assert embed_cli(corpus, "--out", npz) == 0
    assert embed_cli(corpus, "--out", pq, "--format", "parquet", "--rows-per-file", "5") == 0
    parts = sorted(pq.glob("part-*.parquet"))
    assert len(parts) == 3                                   # 14 rows in files of at most 5
    a, b = read_embeddings(npz), read_embeddings(pq)
    rels = sorted(Path(f).relative_to(corpus).as_posix() for f in files_of(corpus))
    assert a.names == b.names == rels
    assert a.sources == b.sources == [str(corpus / n) for n in rels]
    assert a.model == b.model == MODEL and a.layers == b.layers == ["fc2"]
    np.testing.assert_array_equal(a.clip, b.clip)             # same pipeline, same batches: identical
    for x, y, s, t in zip(a.frames, b.frames, a.timestamps_ms, b.timestamps_ms):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(s, t)
    np.testing.assert_allclose(a.duration_s, b.duration_s)
    # the run's settings travel with every shard
    import pyarrow.parquet as pq_

    meta = json.loads(pq_.read_schema(parts[0]).metadata[b"audio_repr"])
    assert meta == json.loads((pq / "_audio-repr-run.json").read_text()) and meta["format"] == "parquet"


def test_parquet_loads_in_pandas_and_datasets(tmp_path, corpus):
    pd = pytest.importorskip("pandas")
    out = tmp_path / "pq"
    assert embed_cli(corpus, "--out", out, "--format", "parquet") == 0
    ref = read_embeddings(out)
    df = pd.read_parquet(out).sort_values("name").reset_index(drop=True)
    assert list(df["name"]) == ref.names and list(df.columns)[:4] == ["name", "source", "duration_s", "model"]
    np.testing.assert_array_equal(np.stack(df["clip"].to_numpy()), ref.clip)
    np.testing.assert_array_equal(np.stack(df["frames"][0]), ref.frames[0])
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in out.glob("part-*.parquet")),
                               split="train", cache_dir=str(tmp_path / "hf"))
    ds = ds.sort("name")
    assert list(ds["name"]) == ref.names
    np.testing.assert_array_equal(np.array(ds["clip"], dtype=np.float32), ref.clip)
    np.testing.assert_array_equal(np.array(ds[0]["frames"], dtype=np.float32), ref.frames[0])


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_resume_per_file_and_other_settings_refused(tmp_path, corpus, fmt, capsys):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / "out"
    some = files_of(corpus / "a")[:3] + files_of(corpus / "b")[:3]   # named from the same root as the folder's
    assert embed_cli(*some, "--out", out, "--format", fmt) == 0
    first = read_embeddings(out)
    capsys.readouterr()
    assert embed_cli(corpus, "--out", out, "--format", fmt) == 0        # only the others are new
    assert 0 < len(first) < len(files_of(corpus))
    assert f"skipped {len(first)} already done" in capsys.readouterr().err
    both = read_embeddings(out)
    assert len(both) == len(files_of(corpus)) and len(set(both.names)) == len(both)
    # a resumed run keeps the first run's rows as they were (names now relative to the common folder)
    for n, c in zip(first.names, first.clip):
        np.testing.assert_array_equal(both.clip[both.names.index(n)], c)
    other = "parquet" if fmt == "npz" else "npz"
    assert embed_cli(corpus, "--out", out, "--format", other) == 1
    assert "format: " in capsys.readouterr().err
    assert embed_cli(corpus, "--out", out, "--format", fmt, "--layers", "fusion") == 1
    assert "layers" in capsys.readouterr().err
    assert embed_cli(corpus, "--out", out, "--format", fmt, "--layers", "fusion", "--overwrite") == 0
    again = read_embeddings(out)
    fusion = list(audio_repr.get_card(MODEL).fusion_layers)
    assert again.names == both.names and again.layers == fusion and again.settings["layers"] == fusion


def test_shards_into_one_folder_equal_one_run(tmp_path, corpus, enc, capsys):
    pytest.importorskip("pyarrow")
    one, many = tmp_path / "one", tmp_path / "many"
    assert embed_cli(corpus, "--out", one, "--format", "parquet") == 0
    for i in range(3):
        assert embed_cli(corpus, "--out", many, "--format", "parquet", "--shard", f"{i}/3") == 0
    assert sorted(p.name.split("-")[1] for p in many.glob("part-*.parquet")) == ["0of3", "1of3", "2of3"]
    a, b = read_embeddings(one), read_embeddings(many)
    assert a.names == b.names
    acc = accumulations(enc)
    for x, y in zip(a.frames, b.frames):                      # other batch compositions: within the bound
        assert_same_arithmetic(y, x, *acc, what="frames")
    assert_same_arithmetic(b.clip, a.clip, *acc, what="clip")
    # at one piece per batch the batch composition is the same everywhere: identical, shard by shard
    one1, many1 = tmp_path / "one1", tmp_path / "many1"
    assert embed_cli(corpus, "--out", one1, "--format", "parquet", "--batch-size", "1") == 0
    for i in range(2):
        assert embed_cli(corpus, "--out", many1, "--shard", f"{i}/2", "--batch-size", "1") == 0     # npz
    a1, b1 = read_embeddings(one1), read_embeddings(many1)
    assert a1.names == b1.names
    np.testing.assert_array_equal(a1.clip, b1.clip)
    for x, y in zip(a1.frames, b1.frames):
        np.testing.assert_array_equal(x, y)
    # the split is a partition of the inputs, whatever order they are given in
    from audio_repr.corpus_run import collect_inputs as _collect, shard_files

    files = _collect([str(corpus)])
    parts = [shard_files(list(reversed(files)), (i, 3)) for i in range(3)]
    assert sorted(rel.as_posix() for p in parts for _, rel in p) == a.names
    assert all(abs(len(p) - len(files) / 3) < 1 for p in parts)
    # torchrun's variables
    capsys.readouterr()
    auto = tmp_path / "auto"
    os.environ.update(RANK="1", WORLD_SIZE="2")
    try:
        assert embed_cli(corpus, "--out", auto, "--shard", "auto") == 0
    finally:
        del os.environ["RANK"], os.environ["WORLD_SIZE"]
    assert len(list(auto.rglob("*.npz"))) == len(files) // 2


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/3"], "expected 0 <= i < N"),
    (["--shard", "one/3"], "expected i/N"),
    (["--shard", "auto"], "no RANK/WORLD_SIZE"),
    (["--format", "parquet", "--consolidate", "all.npz"], "Parquet shards already are one table"),
    (["--shard", "0/2", "--consolidate", "all.npz"], "consolidate once all shards are done"),
    (["--address", "ray://x:10001"], "use it with --engine ray"),
    (["--engine", "ray"], "--format parquet"),
])
def test_corpus_mistakes_are_one_line_errors_before_any_work(tmp_path, corpus, args, message, capsys, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    out = tmp_path / "out"
    assert embed_cli(corpus, "--out", out, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("audio-repr: error:") and message in err and "Traceback" not in err
    assert not out.exists()                                  # nothing left behind


def test_workers_option_is_checked_by_the_parser(tmp_path, corpus, capsys):
    with pytest.raises(SystemExit) as e:
        embed_cli(corpus, "--out", tmp_path / "o", "--workers", "-1")
    assert e.value.code == 2 and "must be 0 or more" in capsys.readouterr().err


# ---- audio_repr.embed_corpus: the CLI's run as one Python call --------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory, corpus):
    """Six of the corpus's files: two pairs with the same name in two sub-folders, and a bad file."""
    root = tmp_path_factory.mktemp("small")
    srcs = sorted(Path(corpus).rglob("*.wav"))[:4]
    for sub in ("a", "b"):
        (root / sub).mkdir()
        for j, f in enumerate(srcs[:2] if sub == "a" else srcs[2:4]):
            shutil.copy(f, root / sub / f"clip{j}.wav")          # a/clip0.wav and b/clip0.wav: same name
    (root / "b" / "broken.wav").write_bytes(b"RIFF not really a wav file" * 4)
    return root


def test_embed_corpus_names_below_the_common_folder_and_reports_a_bad_file(tmp_path, small, enc):
    out = tmp_path / "out"
    s = audio_repr.embed_corpus(small, MODEL, out, random_init=True, batch_size=1)
    assert (s.embedded, s.skipped, s.out_dir) == (4, 0, out)
    assert [f for f, _ in s.failed] == [str(small / "b" / "broken.wav")] and "Error" in s.failed[0][1]
    assert s.failures_log == out / "_failures.log" and "broken.wav" in s.failures_log.read_text()
    got = read_embeddings(out)
    assert got.names == ["a/clip0.wav", "a/clip1.wav", "b/clip0.wav", "b/clip1.wav"]
    ref = enc.embed(str(small / "b" / "clip0.wav"), batch_size=1)
    assert torch.equal(torch.from_numpy(got.clip[2]), ref.clip)             # b/clip0, not a/clip0
    assert not torch.equal(torch.from_numpy(got.clip[0]), ref.clip)

    # the same call again: nothing is embedded again (only the bad file is tried again)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    s2 = audio_repr.embed_corpus(small, MODEL, out, random_init=True, batch_size=1)
    assert (s2.embedded, s2.skipped, len(s2.failed)) == (0, 4, 1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == before

    # other settings: refused, naming what differs; nothing touched
    with pytest.raises(ValueError, match=r"other settings \(layers: .*"):
        audio_repr.embed_corpus(small, MODEL, out, random_init=True, layers="fusion")
    with pytest.raises(ValueError, match=r"other settings \(format: npz -> parquet"):
        audio_repr.embed_corpus(small, MODEL, out, random_init=True, format="parquet")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == before


def test_embed_corpus_equals_the_cli_byte_for_byte(tmp_path, small, capsys):
    """The CLI is a shell over embed_corpus: the same inputs and options give the same bytes."""
    assert embed_cli(small, "--out", tmp_path / "cli", "--batch-size", "2") == 2     # 2: the bad file
    s = audio_repr.embed_corpus([str(small)], MODEL, tmp_path / "py", random_init=True, batch_size=2)
    assert s.embedded == 4
    files = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "py") for p in (tmp_path / "py").rglob("*") if p.is_file())
    assert len(files) == 6                              # 4 outputs, the run record, the failures log
    for f in files:
        assert (tmp_path / "cli" / f).read_bytes() == (tmp_path / "py" / f).read_bytes(), f


def test_embed_corpus_two_shards_into_one_folder_and_parquet(tmp_path, small, enc):
    pytest.importorskip("pyarrow")
    one = audio_repr.embed_corpus(small, enc, tmp_path / "one", batch_size=1)         # an Encoder, loaded
    assert one.embedded == 4
    got = [audio_repr.embed_corpus(small, MODEL, tmp_path / "two", random_init=True, shard=(i, 2), batch_size=1)
           for i in range(2)]                      # 5 inputs by name: 3 (the bad one among them) and 2
    assert [(s.embedded, len(s.failed)) for s in got] == [(2, 1), (2, 0)]
    assert got[0].failures_log == tmp_path / "two" / "_failures-0of2.log" and got[1].failures_log is None
    pq = audio_repr.embed_corpus(f"{small}/*/*.wav", MODEL, tmp_path / "pq", random_init=True, format="parquet",
                                 rows_per_file=3, batch_size=1)
    assert pq.embedded == 4 and len(list((tmp_path / "pq").glob("part-*.parquet"))) == 2
    a, b, c = (read_embeddings(tmp_path / k) for k in ("one", "two", "pq"))
    assert a.names == b.names == c.names
    assert np.array_equal(a.clip, b.clip) and np.array_equal(a.clip, c.clip)
    assert a.settings["weights"] == b.settings["weights"]       # the Encoder given: the same draw (seed 0)
    with pytest.raises(ValueError, match=r"shard \(2, 2\): expected \(i, N\) with whole numbers, 0 <= i < N"):
        audio_repr.embed_corpus(small, enc, tmp_path / "x", shard=(2, 2))
    with pytest.raises(ValueError, match="weights, random_init and device are its own"):
        audio_repr.embed_corpus(small, enc, tmp_path / "x", random_init=True)
    assert not (tmp_path / "x").exists()


def test_rows_per_file_with_npz_is_refused(tmp_path, small, capsys):
    assert embed_cli(small, "--out", tmp_path / "o", "--rows-per-file", "5") == 1
    err = capsys.readouterr().err
    assert err.startswith("audio-repr: error: --rows-per-file") and "--format parquet" in err
    assert not (tmp_path / "o").exists()


def test_a_model_clash_with_the_output_folder_is_found_before_any_weights_are_fetched(tmp_path, small, monkeypatch,
                                                                                       capsys):
    """A folder made with another model is refused at once: no weights are looked for (none are cached here,
    and the network is off), so the message is the clash, not a missing-weights error."""
    out = tmp_path / "o"
    (out / "a").mkdir(parents=True)
    audio_repr.embed_corpus(small / "a", MODEL, out, random_init=True)
    monkeypatch.setenv("AUDIO_REPR_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("AUDIO_REPR_OFFLINE", "1")
    monkeypatch.delenv("AUDIO_REPR_MIRROR", raising=False)
    assert main(["embed", str(small / "a"), "--model", "panns-cnn14", "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "other settings (model: byola-v1-512 -> panns-cnn14" in err, err
    assert not (tmp_path / "empty-cache").exists()


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, small):
    """Writes beyond the file-size limit fail as a full disk does (an OSError without a file name): the error
    names the output."""
    import subprocess
    import sys

    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
            "from audio_repr.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "embed", str(small / "a"), "--model", MODEL, "--random-init",
                        "-q", "--layers", "all", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("audio-repr: error: File too large") and ".wav.npz" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not list((tmp_path / "o").rglob(".*.part"))


def test_progress_bar_ends_at_every_file(tmp_path, small, capsys):
    """The bar's last line says files=N/N (failed ones counted, and said) and the full audio seconds."""
    assert main(["embed", str(small), "--model", MODEL, "--random-init", "--out", str(tmp_path / "o")]) == 2
    last = capsys.readouterr().err.replace("\r", "\n").split("\n")
    bar = [ln for ln in last if "files=" in ln][-1]
    assert "100%" in bar and "files=5/5" in bar and "failed=1" in bar, bar
