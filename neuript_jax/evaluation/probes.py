"""Representation probes on frozen-encoder features (scikit-learn): a linear probe and the NeurIPT
paper's SVM probe (REFERENCE.md §6.3, Tables 8/9, Table 14), to compare pretrained encoders
(e.g. AAMP against random masking) without fine-tuning.

Inputs are (features [N, F], labels [N]) per split, e.g. launch.embed's IILP features. Test
metrics are ``evaluation.metrics.compute_metrics`` of the probe's decision function used as
logits: binary tasks one score per window (positive class when > 0), multi-class [N, C]
(prediction = argmax; softmax gives the AUROC/AUC-PR scores). A class that is absent from the
probe's training labels gets the score -1e9.

linear_probe: ``LogisticRegression`` (L2, lbfgs, multinomial for C > 2 classes) on features
standardised with the training split's mean and standard deviation (``StandardScaler``). The
inverse regularisation C is chosen from ``LINEAR_CS`` by the validation split's
``select_metric`` (ties: the smaller C); that model is scored once on the test split. The fits
run in increasing C, each warm-started from the previous solution.

svm_probe, the paper's protocol as far as it is described ("5,000 train and 500 test samples,
seed 520", a 5-fold cross-validated grid search over kernel {linear, rbf}, C {0.1, 1, 10, 100},
gamma {scale, auto, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5}, tol {1e-4, 1e-3}, class_weight
{None, balanced}); the paper leaves open, and this module chooses:
- features: the IILP features (what the fine-tuning head sees), not a flattened encoder map;
- sampling: ``n_train`` windows of the train split and ``n_test`` of the test split drawn
  uniformly without replacement with ``numpy.random.RandomState(seed)`` (all of a split if it is
  smaller; ``n_test=0``: the whole test split); the validation split is not used, selection is
  the 5-fold CV inside the training sample (``StratifiedKFold``, shuffled with the same seed);
- scoring of the grid search: balanced accuracy (the metric of Tables 8/9);
- standardisation: ``StandardScaler`` inside the CV pipeline (fitted on each training fold), as
  fixed gammas assume unit-scale features; gamma is not searched for the linear kernel (it is
  ignored there), so the paper grid has 16 linear + 128 rbf settings;
- the best setting is refitted on the whole training sample and scored on the test sample.
"""

from __future__ import annotations

import copy
import json
import os
import math
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from neuript_jax.evaluation import metrics as metrics_lib

LINEAR_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
_CS = [0.1, 1.0, 10.0, 100.0]
_TOLS = [1e-4, 1e-3]
_WEIGHTS = [None, "balanced"]
SVM_GRIDS = {
    # Table 14 of the paper (gamma only where the kernel uses it).
    "paper": [
        {"svm__kernel": ["linear"], "svm__C": _CS, "svm__tol": _TOLS,
         "svm__class_weight": _WEIGHTS},
        {"svm__kernel": ["rbf"], "svm__C": _CS,
         "svm__gamma": ["scale", "auto", 0.001, 0.005, 0.01, 0.05, 0.1, 0.5],
         "svm__tol": _TOLS, "svm__class_weight": _WEIGHTS},
    ],
    # 16 settings: for quick comparisons and tests.
    "quick": [{"svm__kernel": ["linear", "rbf"], "svm__C": _CS, "svm__gamma": ["scale"],
               "svm__class_weight": _WEIGHTS}],
}


def _check(name: str, x, y, num_classes: int):
  x = np.asarray(x, np.float64)
  y = np.asarray(y).astype(np.int64).reshape(-1)
  if x.ndim != 2 or len(x) != len(y):
    raise ValueError(f"{name}: features must be [N, F] with N = {len(y)} labels, got {x.shape}")
  if not len(y):
    raise ValueError(f"{name}: no windows")
  if y.min() < 0 or y.max() >= max(num_classes, 2):
    raise ValueError(f"{name}: labels must be in 0..{max(num_classes, 2) - 1} (unlabelled "
                     f"windows have -1), got {y.min()}..{y.max()}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name}: {int(np.sum(~np.isfinite(x)))} non-finite feature values")
  return x, y


def class_scores(model, x, num_classes: int) -> np.ndarray:
  """The fitted classifier's decision_function as compute_metrics logits: [N] for binary tasks,
  [N, C] otherwise (classes the model never saw get -1e9)."""
  d = np.asarray(model.decision_function(x), np.float64)
  classes = list(model.classes_)
  if num_classes <= 2:
    if classes != [0, 1]:
      raise ValueError(f"binary probe trained on classes {classes}; both 0 and 1 are needed")
    return d
  if d.ndim == 1:                        # only two classes present: score of classes[1]
    d = np.stack([-d, d], axis=1)
  out = np.full((len(d), num_classes), -1e9)
  out[:, classes] = d
  return out


def _fit_quietly(model, x, y):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")    # ConvergenceWarning for tiny C / max_iter
    return model.fit(x, y)


def linear_probe(train, val, test, num_classes: int, cs=LINEAR_CS,
                 select_metric: str = "balanced_accuracy", max_iter: int = 2000) -> dict:
  """Logistic regression on standardised features, C chosen on `val`; train/val/test are
  (features [N, F], labels [N]). Returns {"probe", "C", "val" metrics of the chosen C,
  "test" metrics, "val_scores" {C: score}}."""
  (xtr, ytr), (xva, yva), (xte, yte) = (_check(n, *s, num_classes) for n, s in
                                        (("train", train), ("val", val), ("test", test)))
  if len(np.unique(ytr)) < 2:
    raise ValueError(f"train: a single class ({ytr[0]}) in the labels; nothing to probe")
  scaler = StandardScaler().fit(xtr)
  xtr, xva, xte = scaler.transform(xtr), scaler.transform(xva), scaler.transform(xte)
  best, scores = None, {}
  # Increasing C, each fit starting from the previous solution (the problem is convex, so only
  # the time to converge changes).
  model = LogisticRegression(max_iter=max_iter, warm_start=True)
  for c in sorted(cs):
    _fit_quietly(model.set_params(C=c), xtr, ytr)
    m = metrics_lib.compute_metrics(yva, class_scores(model, xva, num_classes), num_classes)
    if select_metric not in m:
      raise ValueError(f"select_metric {select_metric!r} is not one of "
                       f"{', '.join(metrics_lib.METRIC_NAMES)}")
    score = -math.inf if math.isnan(m[select_metric]) else m[select_metric]
    scores[c] = m[select_metric]
    if best is None or score > best[0]:
      best = (score, c, copy.deepcopy(model), m)
  _, c, model, val_m = best
  test_m = metrics_lib.compute_metrics(yte, class_scores(model, xte, num_classes), num_classes)
  return {"probe": "linear", "C": c, "select_metric": select_metric, "val": val_m,
          "test": test_m, "val_scores": scores, "n_train": len(ytr), "n_test": len(yte)}


def subsample(n_total: int, n: int, seed: int) -> np.ndarray:
  """Sorted indices of n of n_total items drawn without replacement (all if n <= 0 or
  n >= n_total), numpy.random.RandomState(seed)."""
  if n <= 0 or n >= n_total:
    return np.arange(n_total)
  return np.sort(np.random.RandomState(seed).choice(n_total, n, replace=False))


def svm_probe(train, test, num_classes: int, n_train: int = 5000, n_test: int = 500,
              seed: int = 520, grid="paper", folds: int = 5, n_jobs: int = 1) -> dict:
  """The paper's SVM probe (module docstring). train/test: (features, labels); grid: a name in
  SVM_GRIDS or a GridSearchCV param_grid over "svm__*". Returns {"probe", "params" (best
  setting), "cv_balanced_accuracy", "test" metrics, "n_train", "n_test"}."""
  (xtr, ytr), (xte, yte) = (_check(n, *s, num_classes) for n, s in
                            (("train", train), ("test", test)))
  if isinstance(grid, str):
    if grid not in SVM_GRIDS:
      raise ValueError(f"unknown SVM grid {grid!r}; choose from {', '.join(SVM_GRIDS)}")
    grid = SVM_GRIDS[grid]
  itr, ite = subsample(len(ytr), n_train, seed), subsample(len(yte), n_test, seed)
  xtr, ytr, xte, yte = xtr[itr], ytr[itr], xte[ite], yte[ite]
  counts = np.bincount(ytr)
  present = counts[counts > 0]
  if len(present) < 2:
    raise ValueError(f"train sample: a single class ({ytr[0]}); nothing to probe")
  if present.min() < folds:
    raise ValueError(f"train sample: class counts {counts.tolist()}; every class needs at "
                     f"least {folds} windows for {folds}-fold cross-validation")
  search = GridSearchCV(Pipeline([("scale", StandardScaler()), ("svm", SVC())]), grid,
                        scoring="balanced_accuracy", n_jobs=n_jobs, refit=True,
                        cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
  _fit_quietly(search, xtr, ytr)
  test_m = metrics_lib.compute_metrics(yte, class_scores(search.best_estimator_, xte,
                                                         num_classes), num_classes)
  params = {k.removeprefix("svm__"): v for k, v in search.best_params_.items()}
  return {"probe": "svm", "params": params, "cv_balanced_accuracy": float(search.best_score_),
          "test": test_m, "n_train": len(ytr), "n_test": len(yte), "seed": seed,
          "n_settings": len(search.cv_results_["params"])}


def format_table(results: dict[str, dict], num_classes: int) -> str:
  """Markdown table, one row per encoder: results {name: {"linear": linear_probe(...),
  "svm": svm_probe(...)}} (either may be absent); columns: the task's paper metrics
  (metrics.paper_metrics) of each probe's test split, and its selected setting."""
  names = metrics_lib.paper_metrics(num_classes)
  probes = [p for p in ("linear", "svm") if any(p in r for r in results.values())]
  head = ["encoder"]
  for p in probes:
    head += [f"{p} {n}" for n in names] + [f"{p} setting"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for enc, r in results.items():
    row = [enc]
    for p in probes:
      if p not in r:
        row += ["-"] * (len(names) + 1)
        continue
      row += [f"{r[p]['test'][n]:.4f}" for n in names]
      row.append(f"C={r[p]['C']:g}" if p == "linear" else
                 ", ".join(f"{k}={v}" for k, v in sorted(r[p]["params"].items())))
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def num_classes_of(split_arrays: dict) -> int:
  """len(label_names) from the embed meta, else the largest label over the splits + 1."""
  first = next(iter(split_arrays.values()))
  names = json.loads(str(first["meta"])).get("label_names")
  if names:
    return len(names)
  return int(max(a["labels"].max() for a in split_arrays.values())) + 1


def probe_checkpoint(checkpoint: str, data, splits=("train", "val", "test"), config=None,
                     probes=("linear", "svm"), num_classes: int = 0, batch_size: int = 64,
                     window_len="config", svm_grid="paper", svm_train_samples: int = 5000,
                     svm_test_samples: int = 500, seed: int = 520, n_jobs: int = 1) -> dict:
  """{"checkpoint", "num_classes", "linear"?, "svm"?} for one encoder; splits: (train, val,
  test) split names."""
  from absl import logging
  from neuript_jax.evaluation import embeddings
  unknown = set(probes) - {"linear", "svm"}
  if unknown:
    raise ValueError(f"--probes: unknown {sorted(unknown)}; choose from linear, svm")
  arrays = embeddings.embed_splits(checkpoint, data, list(dict.fromkeys(splits)), config,
                              batch_size, window_len)
  n_cls = num_classes or num_classes_of(arrays)
  tr, va, te = ((arrays[s]["features"], arrays[s]["labels"]) for s in splits)
  out = {"checkpoint": os.path.abspath(checkpoint), "num_classes": n_cls,
         "features": int(tr[0].shape[1])}
  if "linear" in probes:
    out["linear"] = linear_probe(tr, va, te, n_cls)
    logging.info("%s linear probe (C=%g): test balanced accuracy %.4f", checkpoint,
                 out["linear"]["C"], out["linear"]["test"]["balanced_accuracy"])
  if "svm" in probes:
    out["svm"] = svm_probe(tr, te, n_cls, svm_train_samples, svm_test_samples,
                                      seed, svm_grid, n_jobs=n_jobs)
    logging.info("%s SVM probe (%s): test balanced accuracy %.4f", checkpoint,
                 out["svm"]["params"], out["svm"]["test"]["balanced_accuracy"])
  return out
