"""Baselines that users already run, on the same data_prep shards, split and selection rule as
NeurIPT's fine-tuning (neuript_jax/train/finetune.py): the model is chosen on the validation
split only, then the test split is scored once, with `metrics.compute_metrics`.

* `band_power_lr`: log band power (Welch, `BANDS` = delta 1-4, theta 4-8, alpha 8-13,
  beta-1 13-20, beta-2 20-30 Hz) of every channel, standardised, then scikit-learn
  logistic regression (lbfgs, class_weight "balanced"); C from `C_GRID` by the validation
  `select_metric` (ties, e.g. a validation AUROC of 1: the lower validation NLL).
* `eegnet`: braindecode's EEGNet (v4; torch, CPU) trained with AdamW on cross-entropy
  (class-balanced weights), per-channel standardisation fitted on the training split; the
  epoch with the best validation `select_metric` (ties: lower validation NLL) is kept. braindecode is a benchmark extra
  (requirements-bench.txt), imported only here.

Both return a `BaselineResult`: validation and test metrics (`compute_metrics` dicts with
"nll"), the test scores (logits for the ROC plot), and what was selected. Scores are logits:
one per window for binary tasks ([N]), [N, C] otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from neuript_jax.data import record as record_lib
from neuript_jax.evaluation import metrics as metrics_lib

BANDS = ((1.0, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 20.0), (20.0, 30.0))
C_GRID = tuple(float(c) for c in np.logspace(-7, 2, 19))


@dataclasses.dataclass
class Split:
  """One split of a shard directory: x [N, D, T] float32 (µV), labels [N] int, subjects [N]."""
  x: np.ndarray
  labels: np.ndarray
  subjects: np.ndarray
  sampling_rate: float


@dataclasses.dataclass
class BaselineResult:
  name: str
  validation: dict
  test: dict
  test_labels: np.ndarray
  test_scores: np.ndarray
  selected: dict
  wall_s: float


def load_split(directory: str, split: str) -> Split:
  """Every window of `split` in a data_prep output directory (record.read_split order).
  Raises ValueError naming the directory if the split is empty or has unlabelled windows."""
  xs, labels, subjects, rates = [], [], [], set()
  with record_lib.read_split(directory, split) as reader:
    for r in reader:
      xs.append(r.signal)
      labels.append(r.label)
      subjects.append(r.subject)
      rates.add(float(r.sampling_rate))
  if not xs:
    raise ValueError(f"{directory}: split {split!r} has no windows")
  labels = np.asarray(labels, np.int64)
  if (labels < 0).any():
    raise ValueError(f"{directory}: split {split!r} has {(labels < 0).sum()} unlabelled "
                     "windows (label -1); convert it with a label_source")
  if len(rates) != 1:
    raise ValueError(f"{directory}: split {split!r} mixes sampling rates {sorted(rates)}")
  return Split(np.stack(xs).astype(np.float32), labels, np.asarray(subjects), rates.pop())


def load_splits(directory: str, splits=("train", "val", "test")) -> dict[str, Split]:
  return {s: load_split(directory, s) for s in splits}


def band_power_features(x, sampling_rate: float, bands=BANDS) -> np.ndarray:
  """x [N, D, T] µV -> [N, D * len(bands)] log10 mean Welch power per band (channel-major).
  Welch: Hann segments of min(T, 2 s), half overlap."""
  from scipy import signal as sps
  x = np.asarray(x, np.float64)
  nper = int(min(x.shape[-1], round(2 * sampling_rate)))
  f, pxx = sps.welch(x, fs=sampling_rate, nperseg=nper, axis=-1)
  out = []
  for lo, hi in bands:
    sel = (f >= lo) & (f < hi)
    if not sel.any():
      raise ValueError(f"band {lo}-{hi} Hz has no Welch bin at fs {sampling_rate} Hz, "
                       f"{nper}-sample segments")
    out.append(np.log10(pxx[..., sel].mean(-1) + 1e-12))
  return np.stack(out, -1).reshape(len(x), -1)


def selection_score(m: dict, name: str) -> float:
  """Higher is better ("nll" negated, NaN -> -inf), as finetune's selection."""
  v = float(m[name])
  v = -v if name == "nll" else v
  return -math.inf if math.isnan(v) else v


def _nll(labels, scores, num_classes) -> float:
  s = np.asarray(scores, np.float64)
  if num_classes <= 2:
    s = s.reshape(-1)
    return float(np.mean(np.logaddexp(0, s) - labels * s))
  lse = np.log(np.sum(np.exp(s - s.max(1, keepdims=True)), 1)) + s.max(1)
  return float(np.mean(lse - s[np.arange(len(labels)), labels]))


def score_metrics(labels, scores, num_classes: int, **decision) -> dict:
  """compute_metrics of logits plus "nll"."""
  m = metrics_lib.compute_metrics(labels, scores, num_classes, **decision)
  m["nll"] = _nll(labels, scores, num_classes)
  return m


def _logits_from_proba(proba, num_classes: int) -> np.ndarray:
  p = np.clip(np.asarray(proba, np.float64), 1e-12, 1 - 1e-12)
  if num_classes <= 2:
    return np.log(p[:, 1]) - np.log(p[:, 0])
  return np.log(p)


def band_power_lr(splits: dict[str, Split], num_classes: int,
                  select_metric: str = "auroc", c_grid=C_GRID, bands=BANDS,
                  class_weight: str | None = "balanced") -> BaselineResult:
  """Log band power + logistic regression; C chosen on validation (module docstring)."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler

  start = time.time()
  feats = {k: band_power_features(s.x, s.sampling_rate, bands) for k, s in splits.items()}
  best = None
  for c in c_grid:
    model = make_pipeline(StandardScaler(), LogisticRegression(
        C=c, class_weight=class_weight, max_iter=5000))
    model.fit(feats["train"], splits["train"].labels)
    val_scores = _logits_from_proba(model.predict_proba(feats["val"]), num_classes)
    m = score_metrics(splits["val"].labels, val_scores, num_classes)
    score = (selection_score(m, select_metric), -m["nll"])    # ties: the better nll
    if best is None or score > best[0]:
      best = (score, c, model, m)
  _, c, model, val_m = best
  test_scores = _logits_from_proba(model.predict_proba(feats["test"]), num_classes)
  test_m = score_metrics(splits["test"].labels, test_scores, num_classes)
  return BaselineResult("band_power_lr", val_m, test_m, splits["test"].labels, test_scores,
                        {"C": c, "select_metric": select_metric, "class_weight": class_weight,
                         "features": int(feats["train"].shape[1])}, time.time() - start)


def _import_braindecode():
  try:
    import braindecode  # noqa: F401
    import torch  # noqa: F401
  except ImportError as e:
    raise ImportError("the EEGNet baseline needs braindecode and torch: pip install -r "
                      f"requirements-bench.txt ({e})") from e
  from braindecode import models
  return models


def eegnet(splits: dict[str, Split], num_classes: int, select_metric: str = "auroc",
           epochs: int = 30, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-2,
           seed: int = 0, threads: int | None = None, log=None) -> BaselineResult:
  """braindecode EEGNet trained on the training split; the epoch with the best validation
  `select_metric` is kept and scored once on the test split (module docstring)."""
  models = _import_braindecode()
  import torch

  start = time.time()
  if threads:
    torch.set_num_threads(int(threads))
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  train = splits["train"]
  n_cls = max(num_classes, 2)
  mean = train.x.mean(axis=(0, 2), keepdims=True)
  std = train.x.std(axis=(0, 2), keepdims=True) + 1e-6
  as_t = {k: torch.from_numpy(((s.x - mean) / std).astype(np.float32))
          for k, s in splits.items()}
  d, t = train.x.shape[1], train.x.shape[2]
  net_cls = getattr(models, "EEGNet", None) or getattr(models, "EEGNetv4")
  net = net_cls(n_chans=d, n_outputs=n_cls, n_times=t, sfreq=train.sampling_rate)
  counts = np.bincount(train.labels, minlength=n_cls).astype(np.float64)
  weights = torch.tensor(counts.sum() / (n_cls * np.maximum(counts, 1)), dtype=torch.float32)
  loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
  opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
  y_train = torch.from_numpy(train.labels)

  def scores_of(split):
    net.eval()
    with torch.no_grad():
      out = torch.cat([net(as_t[split][i:i + 256]) for i in range(0, len(as_t[split]), 256)])
    logits = out.double().numpy()
    return logits[:, 1] - logits[:, 0] if num_classes <= 2 else logits

  best = None
  for epoch in range(epochs):
    net.train()
    order = rng.permutation(len(y_train))
    for i in range(0, len(order) - batch_size + 1, batch_size):
      idx = torch.from_numpy(order[i:i + batch_size])
      opt.zero_grad()
      loss = loss_fn(net(as_t["train"][idx]), y_train[idx])
      loss.backward()
      opt.step()
    m = score_metrics(splits["val"].labels, scores_of("val"), num_classes)
    score = (selection_score(m, select_metric), -m["nll"])    # ties: the better nll
    if log:
      log(f"eegnet epoch {epoch + 1}/{epochs}: validation {metrics_lib.format_metrics(m)}")
    if best is None or score > best[0]:
      best = (score, epoch + 1, {k: v.detach().clone() for k, v in net.state_dict().items()},
              m)
  _, best_epoch, state, val_m = best
  net.load_state_dict(state)
  test_scores = scores_of("test")
  test_m = score_metrics(splits["test"].labels, test_scores, num_classes)
  return BaselineResult("eegnet", val_m, test_m, splits["test"].labels, test_scores,
                        {"epoch": best_epoch, "epochs": epochs, "select_metric": select_metric,
                         "lr": lr, "batch_size": batch_size, "seed": seed},
                        time.time() - start)
