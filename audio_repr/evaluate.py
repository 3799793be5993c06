"""Linear-probe evaluation, the standard protocol of the field. Two probes, both on the same cached
clip embeddings:

``probe="evar"`` (default), as in EVAR, the BYOL-A/MSM-MAE authors' evaluation package:

* frozen clip embeddings, computed once and cached;
* standardised with the training split's mean and standard deviation;
* one linear layer trained with Adam (lr 3e-4, weight decay 1e-8, batches of at most 200,
  at most 200 epochs), early stopping on validation accuracy (patience 20), best weights restored;
  as in EVAR, an epoch that ties the best validation accuracy counts as the best (the later weights
  are kept and the patience starts again): with a strict improvement rule the probe stops on the
  first plateau of a small validation set (ESC-50, ``byola-v1-512``: 82.8 ± 0.6 % instead of 84.2 ± 0.3 %);
* the mean over seeds 42, 43, 44;
* a dataset with folds is evaluated leave-one-fold-out, 10 % of the training folds held out for
  validation; a dataset with a ``split`` column uses its ``train``/``valid``/``test`` (10 % of train
  for validation when there is no ``valid``). The holdout is stratified by class (10 % of each class's
  training rows, at least one), drawn afresh for every seed;
* the result reports the spread over seeds (standard deviation) next to each mean.

``probe="logistic"``, the plainer probe most papers report: standardise with the training rows'
statistics, then multinomial logistic regression with an L2 penalty (scikit-learn's
``LogisticRegression(C=1.0)`` objective: mean cross-entropy + ``||W||^2 / (2 C n)``, intercepts not
penalised), solved full-batch by L-BFGS in float64 until the largest gradient entry is below ``tol``
(1e-4, as scikit-learn's ``lbfgs``) or ``max_iter`` (1000) iterations. It trains on all training rows
(no validation holdout) and is deterministic: with one fixed network every seed gives the same number
(it is computed once); a random-initialisation baseline still draws one network per seed. The fit runs on
one CPU thread, so the number is the same for any thread setting (see :func:`fit_logistic` for what it
still depends on).

Small data is not evaluated silently: a class with a single training row where the EVAR probe must hold
validation rows out of the training rows is refused (``ValueError``), and a :class:`SmallDataWarning` is issued
when some class has fewer than ``MIN_TRAIN_PER_CLASS`` training rows (after the holdout) or when test
rows belong to a class with no training rows.

The dataset is a CSV with ``file,label`` and optionally ``fold`` or ``split`` (other columns are
ignored); files are relative to the CSV's folder, or to ``audio_dir``. Other column names are mapped with
``file_column``/``label_column``/``fold_column``: ESC-50's own metadata (the official repository's layout) is
read as ``read_dataset("meta/esc50.csv", "fold", file_column="filename", label_column="category",
audio_dir="../audio")``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ._io import atomic_write

__all__ = ["read_dataset", "embed_dataset", "linear_probe", "logistic_probe", "fit_logistic", "evaluate",
           "EvalResult", "SmallDataWarning", "MIN_TRAIN_PER_CLASS", "PROBES"]

SEEDS = (42, 43, 44)
VALID_FRACTION = 0.1       # of each class's training rows held out for validation when there is no valid split
MIN_TRAIN_PER_CLASS = 5    # fewer training rows than this in some class (after the holdout): SmallDataWarning
PROBES = ("evar", "logistic")
_PROBE_TITLES = {"evar": "EVAR linear probe", "logistic": "logistic regression probe"}


class SmallDataWarning(UserWarning):
    """The dataset is too small (or too unbalanced across folds) for the accuracy to mean much."""


@dataclass
class EvalResult:
    model: str
    folds: Dict[str, float]   # fold name -> accuracy (mean over seeds)
    per_seed: Dict[str, List[float]]
    seeds: List[int] = field(default_factory=lambda: list(SEEDS))
    init: Optional[str] = None   # how the network was drawn, when not one fixed set of weights
    warnings: List[str] = field(default_factory=list)   # the SmallDataWarning messages of the run
    probe: str = "evar"          # "evar" or "logistic"
    deterministic: bool = False  # the probe gave one number per fold, the same for every seed (one fixed network)
    dims: Optional[int] = None   # size of the clip embeddings the probe saw

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.folds.values())))

    @property
    def folds_std(self) -> Dict[str, float]:
        """Fold name -> standard deviation of its accuracy over the seeds (numpy's, ddof=0)."""
        return {k: float(np.std(v)) for k, v in self.per_seed.items()}

    @property
    def std(self) -> float:
        """Standard deviation over the seeds of the mean-over-folds accuracy (numpy's, ddof=0)."""
        return float(np.std(np.mean([self.per_seed[k] for k in self.folds], axis=0)))

    def as_dict(self) -> dict:
        """Everything the result holds, JSON-ready (plain floats, lists and dicts)."""
        return {"model": self.model, "probe": self.probe, "deterministic": self.deterministic, "dims": self.dims,
                "init": self.init,
                "seeds": list(self.seeds), "folds": dict(self.folds),
                "folds_std": self.folds_std, "per_seed": {k: list(v) for k, v in self.per_seed.items()},
                "mean": self.mean, "std": self.std, "warnings": list(self.warnings)}

    def to_json(self, indent: Optional[int] = 2, **extra) -> str:
        """:meth:`as_dict` as JSON text; ``extra`` keys (e.g. how the run was made) follow ``model``."""
        d = self.as_dict()
        return json.dumps({"model": d.pop("model"), **extra, **d}, indent=indent)

    def report(self) -> str:
        how = f" ({self.init})" if self.init else ""
        std = self.folds_std
        title = _PROBE_TITLES.get(self.probe, self.probe)
        if self.deterministic:
            lines = [f"{self.model}: {title} (deterministic: one fit per fold, the same for seeds {self.seeds})"]
        else:
            lines = [f"{self.model}: {title}, mean ± std over seeds {self.seeds}{how}"]
        for k, v in self.folds.items():
            if self.deterministic:
                lines.append(f"  {k}: {100 * v:.2f}%")
            else:
                lines.append(f"  {k}: {100 * v:.2f}% ± {100 * std[k]:.2f}%  "
                             f"(seeds: {', '.join(f'{100 * a:.2f}' for a in self.per_seed[k])})")
        lines.append(f"  mean accuracy: {100 * self.mean:.2f}%" if self.deterministic else
                     f"  mean accuracy: {100 * self.mean:.2f}% ± {100 * self.std:.2f}%")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def read_dataset(csv_path, fold_column: Optional[str] = None, *, file_column: str = "file",
                 label_column: str = "label", audio_dir=None) -> Tuple[List[Path], List[str], Optional[List[str]], str]:
    """-> (files, labels, groups, kind) where kind is ``"fold"``, ``"split"`` or ``"none"``.

    ``fold_column`` names a column to use as folds (e.g. ``speaker`` for speaker-independent,
    leave-one-speaker-out evaluation). ``file_column`` and ``label_column`` name the columns holding the
    audio paths and the labels (default ``file`` and ``label``); the paths are relative to ``audio_dir``
    (relative itself to the CSV's folder; default: the CSV's folder)."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{csv_path}: expected a CSV with a header and at least one row")
    missing = [c for c in (file_column, label_column) if c not in rows[0]]
    if missing:
        which = (f"'{file_column}' and '{label_column}'" if (file_column, label_column) == ("file", "label")
                 else f"the columns {file_column!r} (files) and {label_column!r} (labels)")
        raise ValueError(f"{csv_path}: expected a CSV with a header holding at least {which}; "
                         f"missing {', '.join(map(repr, missing))} (columns: {list(rows[0])})")
    root = csv_path.parent / audio_dir if audio_dir is not None else csv_path.parent
    files = [root / r[file_column] for r in rows]
    labels = [r[label_column] for r in rows]
    if fold_column is not None:
        if fold_column not in rows[0]:
            raise ValueError(f"{csv_path}: no column {fold_column!r} (columns: {list(rows[0])})")
        return files, labels, [r[fold_column] for r in rows], "fold"
    for key in ("fold", "split"):
        if key in rows[0]:
            return files, labels, [r[key] for r in rows], key
    return files, labels, None, "none"


def unit_length(wav: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-pad both ends (centred) or centre-crop a waveform to ``n`` samples, as the BYOL-A evaluation
    does with its ``unit_sec`` (it crops at random; the centre keeps runs reproducible)."""
    if len(wav) < n:
        left = (n - len(wav)) // 2
        return torch.nn.functional.pad(wav, (left, n - len(wav) - left))
    start = (len(wav) - n) // 2
    return wav[start: start + n]


def _load_units(encoder, files, unit_sec: float):
    n = int(round(unit_sec * encoder.sample_rate))
    return [unit_length(w, n) for w in encoder.waveforms([str(f) for f in files])]


def embed_dataset(encoder, files: Sequence[Path], *, layers=None, batch_size: int = 32,
                  cache: Optional[Path] = None, progress: bool = False,
                  unit_sec: Optional[float] = None) -> np.ndarray:
    """Clip embeddings [N, D] of ``files``, cached in ``cache`` (an ``.npy`` keyed by the inputs).

    ``unit_sec``: bring every clip to this duration first (centred zero padding / centre crop)."""
    if cache is not None:
        key = hashlib.sha256("\n".join([encoder.name, repr(layers), repr(encoder.norm_stats), repr(unit_sec),
                                        _weights_key(encoder)] + [str(f) for f in files]).encode()).hexdigest()[:16]
        path = Path(cache) / f"{encoder.name}-{key}.npy"
        if path.is_file():
            return np.load(path)
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), unit="file", desc=f"embedding ({encoder.name})")
    for i in range(0, len(files), batch_size):
        group = [str(f) for f in files[i: i + batch_size]]
        if unit_sec is not None:
            embs = encoder.embed(_load_units(encoder, group, unit_sec), sr=encoder.sample_rate, layers=layers,
                                 batch_size=batch_size)
        else:
            embs = encoder.embed(group, layers=layers, batch_size=batch_size)
        out.extend(e.clip.numpy() for e in embs)
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()
    X = np.stack(out).astype(np.float32)
    if cache is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.save(f, X)
    return X


def _weights_key(encoder) -> str:
    h = hashlib.sha256()
    for t in list(encoder.network.state_dict().values())[:4]:
        h.update(t.detach().float().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:16]


def linear_probe(Xtr, ytr, Xva, yva, Xte, yte, *, seed: int = 42, lr: float = 3e-4, weight_decay: float = 1e-8,
                 batch_size: int = 200, max_epochs: int = 200, patience: int = 20) -> float:
    """Train one linear layer on standardised embeddings; test accuracy of the best-validation weights."""
    mean, std = _column_scale(Xtr)
    t = lambda X: torch.from_numpy(((X - mean) / std).astype(np.float32))  # noqa: E731
    Xtr_, Xva_, Xte_ = t(Xtr), t(Xva), t(Xte)
    ytr_, yva_, yte_ = (torch.as_tensor(y, dtype=torch.long) for y in (ytr, yva, yte))
    n_classes = int(max(ytr.max(), yva.max(), yte.max())) + 1
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = nn.Linear(Xtr_.shape[1], n_classes)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    best_acc, best_state, since = -1.0, None, 0
    for _ in range(max_epochs):
        clf.train()
        perm = torch.randperm(len(Xtr_), generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i: i + batch_size]
            opt.zero_grad()
            loss_fn(clf(Xtr_[idx]), ytr_[idx]).backward()
            opt.step()
        clf.eval()
        with torch.no_grad():
            acc = (clf(Xva_).argmax(1) == yva_).float().mean().item()
        if acc >= best_acc:     # a tie is progress too: the later weights are kept (EVAR's EarlyStopping)
            best_acc, best_state, since = acc, copy.deepcopy(clf.state_dict()), 0
        else:
            since += 1
            if since >= patience:
                break
    clf.load_state_dict(best_state)
    with torch.no_grad():
        return (clf(Xte_).argmax(1) == yte_).float().mean().item()


def _column_scale(Xtr) -> Tuple[np.ndarray, np.ndarray]:
    """``Xtr``'s column means and (population) standard deviations, a constant column's deviation set to 1, with
    scikit-learn's ``StandardScaler`` test for constant: the variance (in float64) at most
    ``n eps var + (n eps mean)^2``, i.e. zero up to the rounding of the sums. Relative, so features of any scale
    are standardised (a random-init EfficientAT's are ~3e-9, which a fixed 1e-8 bound took for constants)."""
    X = np.asarray(Xtr, dtype=np.float64)
    mean, var = X.mean(0), X.var(0)
    eps = np.finfo(np.float64).eps
    n = len(X)
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    std = np.where(constant, 1.0, np.sqrt(var))
    return mean.astype(Xtr.dtype, copy=False), std.astype(Xtr.dtype, copy=False)


def _standardise(Xtr, *others):
    """``Xtr`` and ``others`` scaled by ``Xtr``'s column mean and (population) standard deviation, as
    scikit-learn's ``StandardScaler`` (constant columns are only centred: :func:`_column_scale`)."""
    mean, std = _column_scale(Xtr)
    return [(X - mean) / std for X in (Xtr, *others)]


def fit_logistic(X, y, n_classes: Optional[int] = None, *, C: float = 1.0, max_iter: int = 1000,
                 tol: float = 1e-4) -> Tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression with an L2 penalty on the weights, full batch, by L-BFGS in float64.

    Minimises ``mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 C n)`` (scikit-learn's ``LogisticRegression(C=C)``
    objective with the ``lbfgs`` solver; intercepts ``b`` are not penalised) until the largest entry of
    the gradient is at most ``tol`` or after ``max_iter`` iterations. ``X`` [n, D] is used as given (
    standardise it first). Returns ``(W [D, K], b [K])``; predict with ``argmax(X @ W + b)``.

    Reproducible: the fit runs on one CPU thread whatever ``torch.set_num_threads`` says (and restores it),
    so the result is bit-identical for any thread setting. L-BFGS stops at the gradient tolerance, not at the
    exact optimum, and where it stops follows the rounding of every step: with threads splitting the matrix
    products the rounding, hence the stopping point, changed with the thread count, enough to move an ESC-50
    fold by a few clips. What the result still depends on: the data as given (values and row order), the
    PyTorch version, and the vector instruction set its CPU kernels use (AVX2 or AVX-512; pin it with the
    environment variable ``ATEN_CPU_CAPABILITY=avx2`` to compare machines)."""
    X_ = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    y_ = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if X_.ndim != 2 or len(X_) != len(y_) or len(y_) == 0:
        raise ValueError(f"fit_logistic: expected X [n, D] and y [n] with n > 0, got {tuple(X_.shape)} and "
                         f"{tuple(y_.shape)}")
    if not C > 0:
        raise ValueError(f"fit_logistic: C must be positive, got {C}")
    k = int(n_classes if n_classes is not None else int(y_.max()) + 1)
    W = torch.zeros(X_.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    lam = 1.0 / (C * len(y_))
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, history_size=10,
                            tolerance_grad=tol, tolerance_change=64 * float(np.finfo(np.float64).eps),
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(X_ @ W + b, y_) + 0.5 * lam * (W * W).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # the same arithmetic whatever the thread setting (see the docstring)
    try:
        with torch.enable_grad():
            opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return W.detach().numpy(), b.detach().numpy()


def logistic_probe(Xtr, ytr, Xte, yte, *, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4) -> float:
    """Standardise with the training rows' statistics, fit :func:`fit_logistic` on all training rows;
    -> test accuracy. Deterministic (no seed)."""
    Xtr_, Xte_ = _standardise(np.asarray(Xtr, dtype=np.float64), np.asarray(Xte, dtype=np.float64))
    ytr, yte = np.asarray(ytr), np.asarray(yte)
    n_classes = int(max(ytr.max(), yte.max())) + 1
    W, b = fit_logistic(Xtr_, ytr, n_classes, C=C, max_iter=max_iter, tol=tol)
    return float(np.mean((Xte_ @ W + b).argmax(1) == yte))


def _holdout(idx: np.ndarray, labels: np.ndarray, frac: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Split the rows ``idx`` (with classes ``labels``) into (train, valid), stratified by class: each class
    with at least 2 rows gives ``frac`` of its rows (rounded, at least 1, never all) to validation.
    Reproducible for a seed; another seed draws other rows."""
    idx, labels = np.asarray(idx), np.asarray(labels)
    rng = np.random.default_rng(seed)
    va = []
    for c in np.unique(labels):
        rows = rng.permutation(idx[labels == c])
        va.append(rows[:_n_valid(len(rows), frac)])
    va = np.sort(np.concatenate(va)) if va else idx[:0]
    return np.setdiff1d(idx, va), va


def _n_valid(n: int, frac: float) -> int:
    """How many of a class's ``n`` training rows the stratified holdout takes."""
    return 0 if n < 2 else min(n - 1, max(1, int(np.floor(n * frac + 0.5))))


def _check_splits(splits, y: np.ndarray, classes: Sequence[str], holdout: bool = True) -> List[str]:
    """Refuse splits a probe cannot be trained and validated on; -> messages about ones too small to trust.
    ``holdout=False``: the probe takes no validation rows from the training rows (the logistic probe)."""
    refused, few, absent = [], [], []
    for name, tr, va, te in splits:
        single, low, missing = _split_classes(name, tr, va, te, y, classes, holdout)
        if single:
            refused.append(f"{name}: {', '.join(single)}")
        if low is not None:
            few.append((low[0], name, low[1]))
        if missing:
            absent.append((name, list(map(repr, missing))))
    if refused:
        raise ValueError("too few training rows to train a probe and also hold out validation rows from them: "
                         "a class needs at least 2 training rows in every fold/split, and these classes have 1 "
                         "(training rows in brackets): " + "; ".join(refused))
    return _small_data_messages(splits, few, absent, holdout)


def _split_classes(name: str, tr, va, te, y: np.ndarray, classes: Sequence[str], holdout: bool):
    """One split's classes: -> (those with a single training row when validation rows must be held out from
    them, ``(fewest rows, [classes below MIN_TRAIN_PER_CLASS, smallest first])`` or ``None``, test classes with no
    training row)."""
    if len(tr) == 0:
        raise ValueError(f"{name}: no training rows (a dataset needs at least two folds, or 'train' rows)")
    counts = np.bincount(y[tr], minlength=len(classes))
    single = []
    if va is None and holdout:
        single = [f"{classes[c]!r} ({counts[c]})" for c in np.flatnonzero(counts == 1)]
        counts = counts - np.array([_n_valid(n, VALID_FRACTION) for n in counts])
    present = counts > 0
    low = None
    if present.any() and counts[present].min() < MIN_TRAIN_PER_CLASS:
        idx = np.flatnonzero(present & (counts < MIN_TRAIN_PER_CLASS))
        idx = idx[np.argsort(counts[idx], kind="stable")]           # the smallest classes first
        low = (int(counts[present].min()), [f"{classes[c]!r} ({counts[c]})" for c in idx])
    missing = sorted({classes[c] for c in y[te]} - {classes[c] for c in np.flatnonzero(counts > 0)})
    return single, low, missing


def _small_data_messages(splits, few: list, absent: list, holdout: bool) -> List[str]:
    """One line each: classes with few training rows, and test classes absent from training (first example)."""
    messages = []
    where = "split" if len(splits) == 1 and splits[0][0] == "test" else "folds"
    if few:
        lowest = min(m for m, _, _ in few)
        held = holdout and any(va is None for *_, va, _ in splits)
        first = min(few, key=lambda f: f[0])
        messages.append(f"small data: some class has only {lowest} training rows"
                        f"{' after the validation holdout' if held else ''}"
                        f", fewer than {MIN_TRAIN_PER_CLASS} per class; the accuracy is mostly noise "
                        f"({_in_how_many(len(few), len(splits), where)}; {first[1]}: {_some(first[2])})")
    if absent:
        name, missing = absent[0]
        messages.append("test rows of classes absent from the training rows (they cannot be predicted right) "
                        f"({_in_how_many(len(absent), len(splits), where)}; {name}: {_some(missing)})")
    return messages


def _some(items: Sequence[str], shown: int = 4) -> str:
    """The first ``shown`` items, and how many more: a warning stays one short line however many classes."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def _in_how_many(k: int, n: int, where: str) -> str:
    return "in the test split" if where == "split" else f"in {k} of {n} folds"


def _calibration_key(encoder, files, unit_sec) -> str:
    """What the dataset statistics depend on: the model, its front end's state, the clips and ``unit_sec``
    (not the network: every random draw of a network shares one calibration)."""
    h = hashlib.sha256("\n".join([encoder.name, repr(unit_sec)] + [str(f) for f in files]).encode())
    for k, t in encoder.frontend.state_dict().items():
        h.update(k.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _calibrate(encoder, files, unit_sec, cache: Optional[Path], memo: Dict[str, Tuple[float, float]]) -> None:
    """``encoder.calibrate`` on ``files``, computed once: remembered in ``memo`` (for the next seed's network)
    and in ``cache`` (for the next run, e.g. the other probe)."""
    key = _calibration_key(encoder, files, unit_sec)
    path = Path(cache) / f"{encoder.name}-calibration-{key}.json" if cache is not None else None
    if key not in memo and path is not None and path.is_file():
        d = json.loads(path.read_text())
        memo[key] = (float(d["mean"]), float(d["std"]))
    if key in memo:
        encoder.set_norm_stats(*memo[key])
        return
    stats = encoder.calibrate(_load_units(encoder, files, unit_sec) if unit_sec else [str(f) for f in files],
                              sr=encoder.sample_rate if unit_sec else None)
    memo[key] = (float(stats[0]), float(stats[1]))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w", encoding="utf-8") as f:
            json.dump({"model": encoder.name, "mean": memo[key][0], "std": memo[key][1], "clips": len(files),
                       "unit_sec": unit_sec}, f)


def _checked_seeds(probe: str, seeds: Sequence[int]) -> List[int]:
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}: choose one of {', '.join(PROBES)}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("evaluate needs at least one seed")
    return seeds


def _calibration_rows(files, groups, kind: str) -> list:
    """The clips calibration reads: the training rows of a split dataset, else all rows (no labels used)."""
    return [f for f, g in zip(files, groups or [None] * len(files)) if kind != "split" or str(g).lower() == "train"]


Split = Tuple[str, np.ndarray, Optional[np.ndarray], np.ndarray]     # (name, train, valid or None, test rows)


def _make_splits(kind: str, groups, n_rows: int, fold_column: Optional[str]) -> List[Split]:
    """The dataset's train/valid/test rows: one split per fold (``kind="fold"``: the others train), or the one
    ``split`` column's (``"split"``)."""
    allidx = np.arange(n_rows)
    splits: List[Split] = []
    if kind == "fold":
        g = np.array(groups)
        for fold in sorted(set(groups), key=lambda s: (len(s), s)):
            splits.append((f"{fold_column or 'fold'} {fold}", allidx[g != fold], None, allidx[g == fold]))
    elif kind == "split":
        g = np.array([s.lower() for s in groups])
        tr, te = allidx[g == "train"], allidx[g == "test"]
        va = allidx[np.isin(g, ["valid", "val", "validation"])]
        if len(tr) == 0 or len(te) == 0:
            raise ValueError("a 'split' column needs 'train' and 'test' rows")
        splits.append(("test", tr, va if len(va) else None, te))
    else:
        raise ValueError("the dataset needs a 'fold' or a 'split' column to define its test data")
    return splits


def _linear_probe_split(X: np.ndarray, y: np.ndarray, tr, va, te, seed: int, probe_kwargs) -> float:
    """The linear probe's test accuracy on one split (validation rows held out of the training rows by ``seed``
    when the split has none)."""
    tr_s, va_s = (tr, va) if va is not None else _holdout(tr, y[tr], VALID_FRACTION, seed)
    return linear_probe(X[tr_s], y[tr_s], X[va_s], y[va_s], X[te], y[te], seed=seed, **probe_kwargs)


def probe_splits(features: Callable[[Optional[int]], np.ndarray], y: np.ndarray, splits, seeds: Sequence[int],
                 probe: str, per_seed_features: bool, probe_kwargs) -> Tuple[Dict[str, List[float]], np.ndarray]:
    """Every seed's test accuracy on every split -> (``{fold: [accuracy per seed]}``, the last features).
    ``features(None)``: the one feature matrix; with ``per_seed_features``, ``features(seed)``: that seed's (one
    random network per seed). The logistic probe on fixed features is deterministic: fitted once per fold."""
    per_seed: Dict[str, List[float]] = {fold: [] for fold, *_ in splits}
    X = None if per_seed_features else features(None)
    deterministic = probe == "logistic" and not per_seed_features
    fitted: Dict[str, float] = {}       # the deterministic probe's one number per fold
    for seed in seeds:
        if per_seed_features:
            X = features(seed)
        for fold, tr, va, te in splits:
            if probe == "logistic":
                if fold not in fitted or not deterministic:
                    fitted[fold] = logistic_probe(X[tr], y[tr], X[te], y[te], **probe_kwargs)
                per_seed[fold].append(fitted[fold])
            else:
                per_seed[fold].append(_linear_probe_split(X, y, tr, va, te, seed, probe_kwargs))
    return per_seed, X


def evaluate(encoder, csv_path, *, layers=None, batch_size: int = 32, cache: Optional[Path] = None,
             seeds: Sequence[int] = SEEDS, progress: bool = False, fold_column: Optional[str] = None,
             calibrate: bool = False, unit_sec: Optional[float] = None, probe: str = "evar",
             file_column: str = "file", label_column: str = "label", audio_dir=None,
             **probe_kwargs) -> EvalResult:
    """Probe accuracy of ``encoder`` on the CSV dataset (see the module docstring).

    ``encoder`` is an :class:`~audio_repr.Encoder`, or a function ``seed -> Encoder`` that builds a fresh
    one per seed: a random-initialisation baseline then draws its own network for every seed as well as
    its own probe, so its mean is not the luck of one draw (``audio-repr evaluate --random-init`` does this).

    ``probe``: ``"evar"`` (one linear layer, Adam, early stopping; ``probe_kwargs`` go to
    :func:`linear_probe`) or ``"logistic"`` (standardise + L2 logistic regression by L-BFGS; ``probe_kwargs``
    go to :func:`logistic_probe`: ``C``, ``max_iter``, ``tol``). Both read the same embedding cache.

    ``calibrate=True`` first sets the encoder's normalisation statistics from the dataset's audio,
    as the original evaluations do (label-free; the training rows of a split dataset, else all rows);
    they are computed once per run (every random draw shares them) and kept in ``cache``.
    ``unit_sec`` brings every clip to a fixed duration first, as the BYOL-A evaluation's ``unit_sec``.
    ``file_column``, ``label_column``, ``audio_dir``: see :func:`read_dataset`.
    """
    seeds = _checked_seeds(probe, seeds)
    files, labels, groups, kind = read_dataset(csv_path, fold_column, file_column=file_column,
                                               label_column=label_column, audio_dir=audio_dir)
    per_seed_encoder = not isinstance(encoder, nn.Module)
    calib_rows = _calibration_rows(files, groups, kind) if calibrate else []
    memo: Dict[str, Tuple[float, float]] = {}

    def features(enc) -> np.ndarray:
        if calibrate:
            _calibrate(enc, calib_rows, unit_sec, cache, memo)
        return embed_dataset(enc, files, layers=layers, batch_size=batch_size, cache=cache, progress=progress,
                             unit_sec=unit_sec)

    classes = sorted(set(labels))
    y = np.array([classes.index(l) for l in labels])
    splits = _make_splits(kind, groups, len(y), fold_column)
    notes = _check_splits(splits, y, classes, holdout=probe == "evar")
    for message in notes:
        warnings.warn(message, SmallDataWarning, stacklevel=2)
    names = [getattr(encoder, "name", None)]

    def seed_features(seed: Optional[int]) -> np.ndarray:
        if seed is None:
            return features(encoder)
        enc = encoder(seed)
        names.append(enc.name)
        return features(enc)

    per_seed, X = probe_splits(seed_features, y, splits, seeds, probe, per_seed_encoder, probe_kwargs)
    name = names[-1]
    deterministic = probe == "logistic" and not per_seed_encoder
    folds = {k: float(np.mean(v)) for k, v in per_seed.items()}
    return EvalResult(model=name, folds=folds, per_seed=per_seed, seeds=list(seeds),
                      init="one random initialisation per seed" if per_seed_encoder else None, warnings=notes,
                      probe=probe, deterministic=deterministic, dims=int(X.shape[1]) if X is not None else None)
