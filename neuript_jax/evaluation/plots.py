"""Evaluation plots as PNG files: confusion matrix, ROC and precision-recall curves, training /
validation curves.

Figures are drawn on matplotlib's Agg canvas (``matplotlib.figure.Figure``, no pyplot state), so
nothing needs a display and plotting from several threads is safe.

  plot_confusion_matrix(cm [C, C] counts, path)       counts | row-normalised (recall per class)
  plot_roc(labels [N], logits, num_classes, path)     binary: one curve; C > 2: one-vs-rest
  plot_pr(labels [N], logits, num_classes, path)      the same for precision-recall
  plot_training_curves(metrics.jsonl, path)           losses, accuracy-like metrics, lr vs step
  write_prediction_plots(dir, split, ...)             the three prediction plots of one split

Logits follow ``neuript_jax.evaluation.metrics``: binary tasks one logit (sigmoid), multi-class
[N, C] (softmax); ``from_logits=False`` for probabilities. Curve areas in the legends are the
trapezoidal ones (``sklearn.metrics.auc``), i.e. the metrics' ``auroc`` and ``auc_pr``.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
from sklearn import metrics as skm

from neuript_jax.evaluation import metrics as metrics_lib

# metrics.jsonl keys drawn in the loss panel, and those drawn in no score panel.
_LOSS_KEYS = ("loss", "cls_loss", "rec_loss", "aux_loss", "eval_loss", "val_nll")
_SKIP_KEYS = {"step", "epoch", "lr", "grad_norm", "steps_per_s", "samples_per_s", "frozen",
              "finite"}


def _figure(width: float, height: float):
  from matplotlib.figure import Figure
  return Figure(figsize=(width, height))


def _save(fig, path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  return path


def _class_names(n: int, names: Sequence[str] | None) -> list[str]:
  if names is None:
    return [str(c) for c in range(n)]
  names = [str(s) for s in names]
  if len(names) != n:
    raise ValueError(f"{len(names)} class names {names} for {n} classes")
  return names


def plot_confusion_matrix(cm, path: str, class_names: Sequence[str] | None = None,
                          title: str = "") -> str:
  """Two panels: counts and row-normalised (each true class sums to 1; an empty row stays 0).
  cm: [C, C] counts, rows = true class, columns = predicted (compute_metrics'
  "confusion_matrix")."""
  cm = np.asarray(cm, np.float64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f"confusion matrix must be square [C, C], got {cm.shape}")
  n = cm.shape[0]
  names = _class_names(n, class_names)
  norm = row_normalise(cm)
  size = 3.0 + 0.45 * n
  fig = _figure(2 * size + 1.0, size)
  for k, (mat, sub, fmt) in enumerate(((cm, "counts", "{:.0f}"),
                                       (norm, "row-normalised", "{:.2f}"))):
    ax = fig.add_subplot(1, 2, k + 1)
    vmax = 1.0 if k else max(mat.max(), 1.0)
    im = ax.imshow(mat, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for i in range(n):
      for j in range(n):
        ax.text(j, i, fmt.format(mat[i, j]), ha="center", va="center", fontsize=8,
                color="white" if mat[i, j] > 0.6 * vmax else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(sub)
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def row_normalise(cm) -> np.ndarray:
  """Confusion matrix rows divided by their sums (per-class recall); an empty row stays 0."""
  cm = np.asarray(cm, np.float64)
  rows = cm.sum(axis=1, keepdims=True)
  return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def curve_points(kind: str, labels, logits, num_classes: int, from_logits: bool = True):
  """[(class or None for binary, x [K], y [K], trapezoidal area, positive prevalence)] of the
  ROC ("roc": false vs true positive rate) or precision-recall ("pr": recall vs precision)
  curves: binary one, multi-class one-vs-rest per class with both positives and negatives."""
  if kind not in ("roc", "pr"):
    raise ValueError(f"curve kind must be 'roc' or 'pr', got {kind!r}")
  y = np.asarray(labels).astype(np.int64).reshape(-1)
  p = metrics_lib.probabilities(logits, num_classes, from_logits)
  if len(p) != len(y):
    raise ValueError(f"{len(y)} labels but {len(p)} scores")
  if num_classes <= 2:
    pairs = [(None, y, p)]
  else:
    pairs = [(c, (y == c).astype(np.int64), p[:, c]) for c in range(num_classes)]
  out = []
  for c, yc, score in pairs:
    if not 0 < yc.sum() < len(yc):
      continue
    if kind == "roc":
      xs, ys, _ = skm.roc_curve(yc, score)
    else:
      ys, xs, _ = skm.precision_recall_curve(yc, score)
    out.append((c, xs, ys, float(skm.auc(xs, ys)), float(yc.mean())))
  return out


def _curves(kind: str, labels, logits, num_classes: int, path: str, class_names, title: str,
            from_logits: bool) -> str:
  names = _class_names(max(num_classes, 2), class_names)
  fig = _figure(5.5, 5.0)
  ax = fig.add_subplot(1, 1, 1)
  curves = curve_points(kind, labels, logits, num_classes, from_logits)
  for c, xs, ys, area, prevalence in curves:
    label = names[1] if c is None else f"{names[c]} vs rest"
    line, = ax.plot(xs, ys, lw=1.5, label=f"{label} ({'AUROC' if kind == 'roc' else 'AUC-PR'} "
                    f"{area:.3f})")
    if kind == "pr":   # chance precision = prevalence of the positive class
      ax.axhline(prevalence, ls=":", lw=0.8, color=line.get_color())
  if not curves:
    ax.text(0.5, 0.5, "undefined: a single class in the labels", ha="center", va="center")
  if kind == "roc":
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
  else:
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  if curves:
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=7)
  ax.set_title(title or ("ROC" if kind == "roc" else "precision-recall"))
  return _save(fig, path)


def plot_roc(labels, logits, num_classes: int, path: str, class_names=None, title: str = "",
             from_logits: bool = True) -> str:
  """ROC curve(s): binary one curve of the positive class, multi-class one-vs-rest per class."""
  return _curves("roc", labels, logits, num_classes, path, class_names, title, from_logits)


def plot_pr(labels, logits, num_classes: int, path: str, class_names=None, title: str = "",
            from_logits: bool = True) -> str:
  """Precision-recall curve(s), as plot_roc; dotted lines: each curve's positive prevalence
  (the precision of chance)."""
  return _curves("pr", labels, logits, num_classes, path, class_names, title, from_logits)


def read_metrics_log(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """metrics.jsonl (MetricWriter) -> {key: (steps, values)}; for a step logged twice (a resumed
  run repeats steps after its last checkpoint) the last value is kept."""
  series: dict[str, dict[int, float]] = {}
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n}: not JSON ({e})") from e
      if "step" not in row:
        raise ValueError(f"{path}:{n}: a metrics row without 'step'")
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          series.setdefault(k, {})[int(row["step"])] = float(v)
  return {k: (np.array(sorted(d)), np.array([d[s] for s in sorted(d)])) for k, d in
          series.items()}


def plot_training_curves(metrics_path: str, path: str, title: str = "") -> str:
  """Three panels from a workdir's metrics.jsonl: losses (train loss/cls/rec/aux, validation
  nll), score-like metrics (train_acc and every val_* metric except nll), learning rate."""
  series = read_metrics_log(metrics_path)
  if not series:
    raise ValueError(f"{metrics_path} has no metrics rows")
  losses = [k for k in _LOSS_KEYS if k in series]
  scores = sorted(k for k in series if k not in _SKIP_KEYS and k not in _LOSS_KEYS)
  fig = _figure(15.0, 4.0)
  panels = ((losses, "loss", False), (scores, "validation metrics / train accuracy", False),
            (["lr"] if "lr" in series else [], "learning rate", True))
  for k, (keys, name, log) in enumerate(panels):
    ax = fig.add_subplot(1, 3, k + 1)
    for key in keys:
      steps, values = series[key]
      ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, lw=1.2, label=key)
    if not keys:
      ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    elif log and np.all(series["lr"][1] > 0):
      ax.set_yscale("log")
    if keys:
      ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.set_title(name)
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def write_prediction_plots(directory: str, split: str, labels, logits, num_classes: int,
                           class_names=None, curves: bool = True, decision=None
                           ) -> list[str]:
  """confusion_matrix_<split>.png (+ roc_<split>.png, pr_<split>.png when `curves`) in
  `directory`; returns the paths written. `decision`: metrics.decision's threshold /
  class_prior for the confusion matrix (None: p > 0.5 / argmax)."""
  y = np.asarray(labels).astype(np.int64).reshape(-1)
  p = metrics_lib.probabilities(logits, num_classes)
  pred = metrics_lib.predict_classes(p, num_classes, **(decision or {}))
  n = max(num_classes, 2)
  cm = skm.confusion_matrix(y, pred, labels=list(range(n)))
  out = [plot_confusion_matrix(cm, os.path.join(directory, f"confusion_matrix_{split}.png"),
                               class_names, f"{split} (n={len(y)})")]
  if curves:
    out.append(plot_roc(y, logits, num_classes, os.path.join(directory, f"roc_{split}.png"),
                        class_names, f"ROC, {split}"))
    out.append(plot_pr(y, logits, num_classes, os.path.join(directory, f"pr_{split}.png"),
                       class_names, f"precision-recall, {split}"))
  return out
