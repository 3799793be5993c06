"""The Ray Data engine (audio_repr.ray, ``audio-repr embed --engine ray``) on a local Ray instance (2 CPUs), over
real audio: FSDD's spoken digits when ../shared is present, else clips cut from examples/example.wav. One Ray
instance serves the whole module (starting one is the slow part)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import audio_repr  # noqa: E402
from audio_repr.cli import main  # noqa: E402
from audio_repr.corpus import METADATA_KEY, _schema, read_embeddings  # noqa: E402
from conftest import ROOT, accumulations, same_arithmetic_ratio  # noqa: E402

FSDD = ROOT.parent / "shared" / "audio" / "fsdd" / "recordings"
MODEL = "byola-v1-512"


@pytest.fixture(scope="module")
def ray_local():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, object_store_memory=256 << 20,
                 runtime_env={"env_vars": {"AUDIO_REPR_OFFLINE": "1"}})
    ctx = ray.data.DataContext.get_current()
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False
    yield
    ctx.enable_progress_bars = bars
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """12 real recordings in two sub-folders (different lengths), a .wav that is not audio, and one too short."""
    root = tmp_path_factory.mktemp("ray_corpus")
    for sub in "ab":
        (root / sub).mkdir()
    if FSDD.is_dir():
        for i, f in enumerate(sorted(FSDD.glob("*.wav"))[::250][:12]):
            shutil.copy(f, root / "ab"[i % 2] / f.name)
    else:
        wav, sr = sf.read(ROOT / "examples" / "example.wav", dtype="float32")
        for i in range(12):
            sf.write(root / "ab"[i % 2] / f"clip{i:02d}.wav", wav[(i * 997) % 4000:][: int(sr * (0.4 + 0.25 * i))], sr)
    good = sorted(str(p) for p in root.rglob("*.wav"))
    (root / "b" / "not_audio.wav").write_bytes(b"this is not a wav file\n" * 10)
    sf.write(root / "a" / "too_short.wav", np.zeros(80, np.float32), 8000)      # 10 ms: the model refuses it
    return root, good, [str(root / "b" / "not_audio.wav"), str(root / "a" / "too_short.wav")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The single-process references with one thread, as a Ray actor of one CPU computes (Ray sets its
    OMP_NUM_THREADS): the same batch composition and the same thread count give the same bits."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def enc():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)                      # the CLI's --random-init draw (corpus.load_encoder)
        return audio_repr.load(MODEL, pretrained=False)


def table_of(ds):
    return pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))


def frames_of(table, i):
    return np.array(table.column("frames")[i].as_py(), np.float32)


def test_import_needs_no_ray():
    code = "import sys, audio_repr, audio_repr.cli, audio_repr.ray; assert 'ray' not in sys.modules, 'ray imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_embed_equals_single_process(ray_local, corpus, enc):
    from audio_repr.ray import embed

    root, good, bad = corpus
    alone = {f: enc.embed(f, batch_size=1) for f in good}

    # one piece per forward pass, as the reference: bit-identical file by file; failures kept as rows
    t = table_of(embed(good + bad, MODEL, random_init=True, files_per_batch=4, batch_size=1, keep_errors=True))
    assert t.schema.equals(_schema().append(pa.field("error", pa.string())))   # plain lists, no tensor types
    errors = dict(zip(t.column("source").to_pylist(), t.column("error").to_pylist()))
    assert sorted(errors) == sorted(good + bad)
    assert all(errors[f] is None for f in good)
    assert errors[bad[0]]                                                      # why it failed
    assert "too short" in errors[bad[1]]
    rows = {s: i for i, s in enumerate(t.column("source").to_pylist())}
    for f in good:
        i = rows[f]
        assert t.column("name")[i].as_py() == f and t.column("model")[i].as_py() == MODEL
        assert t.column("layers")[i].as_py() == list(alone[f].layers)
        assert np.array_equal(frames_of(t, i), alone[f].frames.numpy()), f
        assert np.array_equal(np.array(t.column("clip")[i].as_py(), np.float32), alone[f].clip.numpy()), f
        assert np.array_equal(np.array(t.column("timestamps_ms")[i].as_py()), alone[f].timestamps_ms.numpy()), f
        assert t.column("duration_s")[i].as_py() == pytest.approx(alone[f].duration_s)

    # a Dataset with a path column, the default batching (16 files, the model's CPU budget): within the
    # batch-invariance bound; failed files give no row and the schema is exactly the Parquet one
    ds = ray.data.from_items([{"path": f} for f in good + bad])
    t = table_of(embed(ds, MODEL, random_init=True))
    assert t.schema.equals(_schema())
    assert sorted(t.column("source").to_pylist()) == sorted(good)
    acc, worst = accumulations(enc), 0.0
    for i, f in enumerate(t.column("source").to_pylist()):
        worst = max(worst, same_arithmetic_ratio(frames_of(t, i), alone[f].frames.numpy(), *acc),
                    same_arithmetic_ratio(np.array(t.column("clip")[i].as_py(), np.float32), alone[f].clip.numpy(),
                                          *acc))
    assert worst <= 1.0, f"max |difference| is {worst:.3g} x the float32 reordering bound"


def test_cli_ray_equals_local(ray_local, corpus, tmp_path):
    root, good, bad = corpus
    common = ["--model", MODEL, "--random-init", "-q", "--batch-size", "1"]
    outs = {k: tmp_path / k for k in ("npz", "parquet", "ray")}
    assert main(["embed", str(root), *common, "--workers", "0", "--out", str(outs["npz"])]) == 2
    assert main(["embed", str(root), *common, "--workers", "0", "--format", "parquet", "--out",
                 str(outs["parquet"])]) == 2
    assert main(["embed", str(root), *common, "--format", "parquet", "--engine", "ray", "--rows-per-file", "5",
                 "--out", str(outs["ray"])]) == 2          # the bad files are reported, the others written
    got = {k: read_embeddings(o) for k, o in outs.items()}
    names = sorted(Path(f).relative_to(root).as_posix() for f in good)
    for k, e in got.items():
        assert e.names == names, k
        assert e.sources == sorted(good, key=lambda f: Path(f).relative_to(root).as_posix()), k
        assert e.model == MODEL and e.layers == got["npz"].layers, k
    ref = got["npz"]
    for k in ("parquet", "ray"):
        e = got[k]
        assert np.array_equal(e.clip, ref.clip), k
        assert np.allclose(e.duration_s, ref.duration_s), k
        for a, b in zip(e.frames, ref.frames):
            assert np.array_equal(a, b), k
        for a, b in zip(e.timestamps_ms, ref.timestamps_ms):
            assert np.array_equal(a, b), k

    # the part files: named for the Ray engine, bounded, the run's settings in each one's metadata
    parts = sorted(outs["ray"].glob("part-*.parquet"))
    assert all(re.fullmatch(r"part-ray-[0-9a-f]{8}-\d{5}\.parquet", p.name) for p in parts), parts
    assert [pq.read_metadata(p).num_rows for p in parts] == [5, 5, 2]
    settings = got["ray"].settings
    assert settings["model"] == MODEL and settings["format"] == "parquet"
    for p in parts:
        assert json.loads(pq.read_schema(p).metadata[METADATA_KEY]) == settings
    assert not list(outs["ray"].glob(".*.part"))
    log = [p for p in outs["ray"].iterdir() if "failures" in p.name]
    assert len(log) == 1 and sorted(line.split("\t")[0] for line in log[0].read_text().splitlines()) == sorted(bad)

    # the same command again: everything already done is skipped (only the failed files are tried again)
    assert main(["embed", str(root), *common, "--format", "parquet", "--engine", "ray", "--rows-per-file", "5",
                 "--out", str(outs["ray"])]) == 2
    assert sorted(outs["ray"].glob("part-*.parquet")) == parts


def test_cli_ray_checks(ray_local, corpus, tmp_path, capsys):
    root, _, _ = corpus
    assert main(["embed", str(root), "--model", MODEL, "--random-init", "--engine", "ray",
                 "--out", str(tmp_path / "o")]) == 1
    assert "--format parquet" in capsys.readouterr().err


def test_cuda_on_a_cluster_without_gpus_is_one_line_at_once(corpus, tmp_path):
    """--device cuda on a (real, local) Ray instance without GPUs: refused before any work with one line naming
    what is missing, Ray's INFO logs kept off the console, no run record or folder left behind."""
    root, _, _ = corpus
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "RAY_ADDRESS": "",
           "AUDIO_REPR_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "audio_repr.cli", "embed", str(root), "--model", MODEL, "--random-init",
                        "--format", "parquet", "--engine", "ray", "--device", "cuda", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=240)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("audio-repr: error: the Ray cluster cannot run a model actor: it needs 1 GPU"), lines
    assert "GPU 0" in lines[0] and "--device cuda" in lines[0]
    assert not out.exists()


def test_actors_that_cannot_be_placed_time_out(ray_local, corpus, tmp_path):
    """Two actors of 2 CPUs each on a 2-CPU instance: one can never start; the run ends with a clear error in
    about actor_timeout_s instead of waiting forever, and leaves no part file."""
    import time

    from audio_repr.ray import embed_folder

    root, good, _ = corpus
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"Ray could not start the model actors \(2 x \{'CPU': 2\}\) within 3 s"):
        embed_folder(good[:4], [Path(g).name for g in good[:4]], tmp_path, model=MODEL, random_init=True,
                     settings={}, num_cpus=2, concurrency=2, actor_timeout_s=3, progress=False)
    assert time.monotonic() - t0 < 60
    assert not list(tmp_path.iterdir())
