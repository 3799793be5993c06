"""Embed a labelled dataset with fused layers and train a scikit-learn linear classifier.

The dataset is a CSV ``file,label[,split]`` (files relative to the CSV; ``split`` = train/test) or a
folder whose sub-folders are the labels.

    python examples/classify_folder.py ../shared/audio/fsdd/digits.csv --model byola-v1-512 \
        --weights ../shared/weights/AudioNTT2020-BYOLA-64x96d512.pth
"""

import argparse
import csv
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import audio_repr

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("data", help="CSV file or folder of label sub-folders")
p.add_argument("--model", default="byola-v1-512")
p.add_argument("--weights", default=None)
p.add_argument("--layers", default="fusion")
args = p.parse_args()

data = Path(args.data)
if data.is_dir():
    files = sorted(f for f in data.rglob("*") if f.suffix.lower() in {".wav", ".flac", ".ogg", ".mp3"})
    labels = [f.parent.name for f in files]
    split = None
else:
    rows = list(csv.DictReader(open(data, newline="")))
    files = [data.parent / r["file"] for r in rows]
    labels = [r["label"] for r in rows]
    split = [r.get("split") for r in rows] if "split" in rows[0] else None

model = audio_repr.load(args.model, weights=args.weights)
X = np.stack([e.clip.numpy() for e in model.embed([str(f) for f in files], layers=args.layers, progress=True)])
y = np.array(labels)
if split:
    tr = np.array([s == "train" for s in split])
    Xtr, Xte, ytr, yte = X[tr], X[~tr], y[tr], y[~tr]
else:
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
clf.fit(Xtr, ytr)
print(f"{args.model} ({args.layers}, {X.shape[1]}-d): test accuracy {100 * clf.score(Xte, yte):.1f}% "
      f"on {len(yte)} clips ({len(ytr)} for training)")
