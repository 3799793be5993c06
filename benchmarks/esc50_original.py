"""ESC-50 through the ORIGINAL BYOL-A v1 pipeline, to get a same-protocol reference number for
``audio-repr evaluate`` (see ``benchmarks/esc50.py`` and ``docs/guide.md``).

This script is glue only: it imports the original code and runs it; it contains none of it. It needs

* a checkout of https://github.com/nttcslab/byol-a (v1; measured at commit 3e65c92) prepared as its README's
  "Getting Started" says: ``utils/torch_mlp_clf.py`` from daisukelab/general-learning at commit 7b31d31
  (the probe of byol-a's own ``evaluate.py``);
* EVAR's probe, ``torch_mlp_clf2.py`` from daisukelab/general-learning (master, as EVAR's README fetches it;
  measured at 158e570), in ``--clf2-dir``;
* an environment with torch + torchaudio (measured: torch 2.9.1, torchaudio 2.9.1, CPU, 1 thread), pandas,
  scikit-learn, librosa, easydict, pyyaml, soundfile, torchvision;
* ESC-50 at 16 kHz: ``esc50.csv`` and ``audio/audio/16000/*.wav`` under ``--data``.

What it runs, per normalisation (``--stats readme`` = the README's (-5.4919195, 5.0389895);
``--stats dataset`` = byol-a ``evaluate.calc_norm_stats`` on all 2,000 clips, as byol-a does for a
leave-one-out CV task):

1. embeddings: byol-a's ``AudioNTT2020(d=512)`` + ``load_weight`` with the official weights, clips through
   byol-a's ``evaluate.get_embeddings`` (``WaveInLMSOutDataset``: torchaudio ``MelSpectrogram``,
   ``log(x + eps)``, ``PrecomputedNorm``; ``unit_sec`` 5.0, EVAR's ESC-50 unit, so every clip is used whole),
   fold by fold as byol-a's ``prepare_linear_evaluation``;
2. three probes, leave-one-fold-out over the CSV's ``fold``, seeds 42, 43, 44:
   ``evar``: EVAR's ``lineareval.py`` probe (``TorchMLPClassifier2``, hidden (), lr 3e-4 from EVAR's
   ``config/byola.yaml``, 200 epochs, early stopping 20, standard scaler, its own 10 % validation split),
   ``seed_everything(seed)`` once before the five folds as ``lineareval_downstream`` does;
   ``byola``: byol-a's own ``evaluate.linear_eval_multi`` (``TorchMLPClassifier``, lr 1e-3, patience 10);
   ``logistic``: scikit-learn ``StandardScaler`` + ``LogisticRegression(C=1.0, max_iter=1000, tol=...)``.

Changes made at run time, none to the probes or the embeddings: the device is the CPU (byol-a hard-codes
CUDA); ``torchaudio.load`` reads with soundfile (torchaudio 2.9 needs TorchCodec for it; for 16-bit PCM
both give int16 / 32768); ``torchaudio.set_audio_backend`` (removed from torchaudio) is a no-op; the
training-only ``pytorch_lightning`` import is a stub. ESC-50 is given to the original code as a
``BaseDataSource`` with five folds (byol-a has no ESC-50 task; this is how its ``us8k`` task is built).

    BYOLA_DIR=/path/to/byol-a python benchmarks/esc50_original.py --data /path/to/esc50 \\
        --weights AudioNTT2020-BYOLA-64x96d512.pth --clf2-dir /path/to/dir --stats dataset --out result.json
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder with esc50.csv and audio/audio/16000/")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--clf2-dir", required=True, help="folder holding EVAR's torch_mlp_clf2.py")
    ap.add_argument("--stats", choices=["readme", "dataset"], default="dataset")
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--probes", default="evar,byola,logistic")
    ap.add_argument("--logistic-tol", type=float, default=1e-4)
    ap.add_argument("--save-embeddings", help="also save the clip embeddings [2000, 512] (CSV order) here")
    ap.add_argument("--load-embeddings", help="probes only: take the clip embeddings that --save-embeddings saved")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import soundfile as sf
    import torch

    torch.set_num_threads(1)
    byola_dir = Path(os.environ["BYOLA_DIR"]).resolve()
    sys.path.insert(0, str(byola_dir))
    sys.path.insert(0, str(Path(args.clf2_dir).resolve()))
    import torchaudio

    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = lambda backend: None

    def load(path, *a, **k):
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    torchaudio.load = load
    if importlib.util.find_spec("pytorch_lightning") is None:      # imported by byol_a.common, used to train
        sys.modules["pytorch_lightning"] = types.ModuleType("pytorch_lightning")

    cwd = os.getcwd()
    os.chdir(byola_dir)      # evaluate.py reads config.yaml from the working folder
    import evaluate as orig
    from byol_a.common import load_yaml_config, seed_everything
    from byol_a.models import AudioNTT2020
    from utils.downstream_tasks import BaseDataSource
    from utils.torch_mlp_clf import TorchMLPClassifier

    cfg = load_yaml_config("config.yaml")
    os.chdir(cwd)
    device = torch.device("cpu")
    orig.device = device
    TorchMLPClassifier.score.__defaults__ = (device, None)

    import pandas as pd

    data_dir = Path(args.data)
    df = pd.read_csv(data_dir / "esc50.csv")
    df["label"] = df.target
    fold_idxes = [df.index[df.fold == f].values for f in sorted(df.fold.unique())]

    class ESC50(BaseDataSource):
        @property
        def files(self):
            idx = self.get_idxes if self.get_idxes is not None else range(len(self.df))
            return [data_dir / "audio" / "audio" / "16000" / self.df.filename.values[i] for i in idx]

    data = ESC50(df, fold_idxes, True)
    cfg.unit_sec = 5.0
    cfg.feature_d = orig.get_model_feature_d(args.weights)
    cfg.num_workers = 0
    cfg.bs = 64
    model = AudioNTT2020(n_mels=cfg.n_mels, d=cfg.feature_d)
    model.load_weight(args.weights, device)
    t0 = time.time()
    seed_everything(42)
    model.eval()
    folds = []
    if args.load_embeddings:
        X = np.load(args.load_embeddings)
        norm_stats = None        # as used by the run that saved them
        folds = [{"X": X[idx], "y": df.label.values[idx]} for idx in fold_idxes]
    else:
        norm_stats = (orig.calc_norm_stats(cfg, data) if args.stats == "dataset"
                      else np.array([-5.4919195, 5.0389895]))
        for i in range(data.n_folds):
            sub = data.subset([i])
            folds.append({"X": orig.get_embeddings(cfg, sub.files, model, norm_stats), "y": sub.labels})
    t_embed = time.time() - t0
    if args.save_embeddings:
        X = np.zeros((len(df), folds[0]["X"].shape[1]), np.float32)
        for idx, f in zip(fold_idxes, folds):
            X[idx] = f["X"]
        np.save(args.save_embeddings, X)

    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"pipeline": "original byol-a v1 (see benchmarks/esc50_original.py)", "stats": args.stats,
              "norm_stats": None if norm_stats is None else [float(v) for v in norm_stats],
              "embeddings_from": Path(args.load_embeddings).name if args.load_embeddings else None,
              "weights": Path(args.weights).name,
              "seeds": seeds, "embedding_seconds": round(t_embed, 1), "torch": torch.__version__,
              "torchaudio": torchaudio.__version__, "probes": {}}

    def split(k):
        Xtr = np.concatenate([f["X"] for j, f in enumerate(folds) if j != k])
        ytr = np.concatenate([f["y"] for j, f in enumerate(folds) if j != k])
        return Xtr, ytr, folds[k]["X"], np.asarray(folds[k]["y"])

    for probe in args.probes.split(","):
        per_seed = {f"fold {k + 1}": [] for k in range(len(folds))}
        t0 = time.time()
        if probe == "evar":
            from torch_mlp_clf2 import TorchMLPClassifier2

            for seed in seeds:
                seed_everything(seed)
                for k in range(len(folds)):
                    Xtr, ytr, Xte, yte = split(k)
                    clf = TorchMLPClassifier2(hidden_layer_sizes=(), max_iter=200, learning_rate_init=0.0003,
                                              early_stopping=True, n_iter_no_change=20, standard_scaler=True,
                                              mixup=False, debug=False)
                    clf.device = device
                    clf.fit(Xtr, ytr)
                    per_seed[f"fold {k + 1}"].append(float(clf.score(Xte, yte)[0]))
        elif probe == "byola":
            for seed in seeds:
                seed_everything(seed)
                scores = []
                real = orig._one_linear_eval

                def record(*a, **k):
                    s = real(*a, **k)
                    scores.append(float(s))
                    return s

                orig._one_linear_eval = record
                orig.linear_eval_multi(folds, hidden_sizes=(), epochs=200, early_stopping=True)
                orig._one_linear_eval = real
                for k, s in enumerate(scores):
                    per_seed[f"fold {k + 1}"].append(s)
        elif probe == "logistic":
            from sklearn.linear_model import LogisticRegression
            from sklearn.preprocessing import StandardScaler

            for k in range(len(folds)):
                Xtr, ytr, Xte, yte = split(k)
                sc = StandardScaler().fit(Xtr)
                clf = LogisticRegression(C=1.0, max_iter=1000, tol=args.logistic_tol).fit(sc.transform(Xtr), ytr)
                acc = float(clf.score(sc.transform(Xte), yte))
                per_seed[f"fold {k + 1}"] = [acc] * len(seeds)
        else:
            raise SystemExit(f"unknown probe {probe}")
        folds_mean = {k: float(np.mean(v)) for k, v in per_seed.items()}
        seed_means = np.mean([per_seed[k] for k in per_seed], axis=0)
        result["probes"][probe] = {"folds": folds_mean, "per_seed": per_seed,
                                   "mean": float(np.mean(list(folds_mean.values()))),
                                   "std": float(np.std(seed_means)), "seconds": round(time.time() - t0, 1)}
        print(f"{probe}: {100 * result['probes'][probe]['mean']:.2f}% ± {100 * result['probes'][probe]['std']:.2f}%"
              f"  folds {', '.join(f'{100 * v:.2f}' for v in folds_mean.values())}", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
