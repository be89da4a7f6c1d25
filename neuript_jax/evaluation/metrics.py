"""Classification metrics as the EEG foundation-model papers compute them (scikit-learn).

``compute_metrics(labels, logits_or_probs, num_classes)`` returns

  balanced_accuracy   mean per-class recall (sklearn ``balanced_accuracy_score``)
  cohen_kappa         Cohen's kappa of the hard predictions
  weighted_f1         F1 averaged over classes weighted by support
  auroc               ROC AUC; binary: of the positive-class probability; multi-class:
                      one-vs-rest, macro average over the classes that have both positive and
                      negative examples (equal to sklearn ``roc_auc_score(multi_class="ovr")``
                      when every class is present)
  auc_pr              area under the precision-recall curve by the trapezoidal rule,
                      ``sklearn.metrics.auc(recall, precision)`` on ``precision_recall_curve``:
                      what CBraMod's and NeurIPT's tables call AUC-PR; multi-class: one-vs-rest
                      macro
  average_precision   ``average_precision_score`` (step-wise sum, no interpolation); differs
                      from ``auc_pr`` (the trapezoid interpolates linearly between operating
                      points, which is optimistic); multi-class: one-vs-rest macro
  confusion_matrix    [C][C] counts, rows = true class, columns = predicted class

Binary tasks (``num_classes <= 2``) have one logit: probability = sigmoid(logit). Multi-class:
probabilities = softmax(logits). Pass ``from_logits=False`` when the scores are already
probabilities ([N] or [N, 1] for binary). A metric that is undefined for the data (e.g. AUROC
with a single class present) is NaN.

Decision rule (``predict_classes``; only the hard-prediction metrics depend on it: balanced
accuracy, kappa, weighted F1, the confusion matrix). ``decision(rule, ...)`` turns a rule
name into the ``threshold`` / ``class_prior`` arguments of ``compute_metrics``:

  "half"        binary: probability > 0.5 (i.e. logit > 0); multi-class: argmax. What CBraMod's
                evaluator does (``sigmoid(logit) > 0.5``) and the only rule in NeurIPT's code
                path, so the default.
  "prior"       the Bayes rule for balanced accuracy with calibrated probabilities: binary
                probability > the training positive-class fraction pi_1; multi-class
                argmax_c p_c / pi_c.
  "validation"  binary: the threshold that maximises balanced accuracy on the validation
                split's probabilities (the midpoint between the two neighbouring scores), then
                applied unchanged to the test split. Binary tasks only.

Which of them the NeurIPT paper reports (REFERENCE.md §5.3, App. D.2), ``PAPER_METRICS``:
binary tasks (TUAB, MentalArithmetic, Mumtaz): balanced accuracy, AUC-PR (trapezoidal), AUROC;
PhysioNet-P300: balanced accuracy, Cohen's kappa, AUROC (as EEGPT); multi-class (TUEV,
Sleep-EDFx, SEED-V, BCIC-IV-2A): balanced accuracy, Cohen's kappa, weighted F1.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics as skm

PAPER_METRICS = {
    "binary": ("balanced_accuracy", "auc_pr", "auroc"),
    "p300": ("balanced_accuracy", "cohen_kappa", "auroc"),
    "multiclass": ("balanced_accuracy", "cohen_kappa", "weighted_f1"),
}

METRIC_NAMES = ("balanced_accuracy", "cohen_kappa", "weighted_f1", "auroc", "auc_pr",
                "average_precision")


def paper_metrics(num_classes: int, dataset: str | None = None) -> tuple[str, ...]:
  """The metric names the paper reports for a task (see the module docstring)."""
  if dataset and "p300" in dataset.lower():
    return PAPER_METRICS["p300"]
  return PAPER_METRICS["binary" if num_classes <= 2 else "multiclass"]


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis=-1, keepdims=True)


def probabilities(scores, num_classes: int, from_logits: bool = True) -> np.ndarray:
  """Binary: [N] positive-class probability; multi-class: [N, C] class probabilities."""
  scores = np.asarray(scores, np.float64)
  if num_classes <= 2:
    if scores.ndim == 2:
      if scores.shape[1] != 1:
        raise ValueError(f"binary task: expected one score per example, got {scores.shape}")
      scores = scores[:, 0]
    return _sigmoid(scores) if from_logits else scores
  if scores.ndim != 2 or scores.shape[1] != num_classes:
    raise ValueError(f"{num_classes}-class task: expected scores [N, {num_classes}], "
                     f"got {scores.shape}")
  return _softmax(scores) if from_logits else scores


DECISION_RULES = ("half", "prior", "validation")


def predict_classes(p, num_classes: int, threshold: float = 0.5, class_prior=None
                    ) -> np.ndarray:
  """Class indices [N] from `probabilities` p: binary p > threshold; multi-class argmax of p,
  or of p / class_prior [C] when a prior is given (`decision`)."""
  p = np.asarray(p, np.float64)
  if num_classes <= 2:
    return (p > threshold).astype(np.int64)
  if class_prior is not None:
    prior = np.asarray(class_prior, np.float64).reshape(-1)
    if prior.shape != (num_classes,) or not np.all(prior > 0):
      raise ValueError(f"class_prior must be {num_classes} positive numbers, got {class_prior}")
    p = p / prior
  return p.argmax(axis=1)


def balanced_accuracy_threshold(labels, p) -> float:
  """The probability threshold t (predict p > t) with the highest balanced accuracy on
  (labels [N] in {0, 1}, positive-class probabilities p [N]); t is the midpoint between two
  neighbouring distinct scores (or just below the smallest). Ties: the t closest to 0.5."""
  y = np.asarray(labels).astype(np.int64).reshape(-1)
  p = np.asarray(p, np.float64).reshape(-1)
  if len(y) != len(p):
    raise ValueError(f"{len(y)} labels but {len(p)} scores")
  if not _binary_defined(y):
    raise ValueError("a validation threshold needs both classes in the labels")
  s = np.unique(p)
  cuts = np.concatenate([[np.nextafter(s[0], -np.inf)], (s[:-1] + s[1:]) / 2, [s[-1]]])
  pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
  # predict p > t: recall of the positives and of the negatives at every cut.
  tpr = (len(pos) - np.searchsorted(pos, cuts, side="right")) / len(pos)
  tnr = np.searchsorted(neg, cuts, side="right") / len(neg)
  bacc = (tpr + tnr) / 2
  best = np.flatnonzero(np.isclose(bacc, bacc.max(), rtol=0, atol=1e-12))
  return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])


def decision(rule: str, num_classes: int, train_counts=None, val_labels=None, val_scores=None,
             from_logits: bool = True) -> dict:
  """``{"threshold": t, "class_prior": prior or None}`` for `compute_metrics` under a decision
  rule (module docstring). "prior" needs `train_counts` [max(C, 2)] (training class counts);
  "validation" needs the validation labels and scores (logits unless from_logits=False)."""
  if rule not in DECISION_RULES:
    raise ValueError(f"decision rule must be one of {', '.join(DECISION_RULES)}, got {rule!r}")
  if rule == "half":
    return {"threshold": 0.5, "class_prior": None}
  if rule == "prior":
    if train_counts is None:
      raise ValueError("decision rule 'prior' needs the training class counts")
    counts = np.asarray(train_counts, np.float64).reshape(-1)
    if counts.shape != (max(num_classes, 2),) or not np.all(counts > 0):
      raise ValueError(f"decision rule 'prior': training class counts must be "
                       f"{max(num_classes, 2)} positive numbers, got {train_counts}")
    prior = counts / counts.sum()
    if num_classes <= 2:
      return {"threshold": float(prior[1]), "class_prior": None}
    return {"threshold": 0.5, "class_prior": prior.tolist()}
  if num_classes > 2:
    raise ValueError("decision rule 'validation' is defined for binary tasks only")
  if val_labels is None or val_scores is None:
    raise ValueError("decision rule 'validation' needs the validation labels and scores")
  p = probabilities(val_scores, num_classes, from_logits)
  return {"threshold": balanced_accuracy_threshold(val_labels, p), "class_prior": None}


def pr_auc_trapezoid(y_true, score) -> float:
  """Trapezoidal area under the precision-recall curve (CBraMod / NeurIPT's AUC-PR)."""
  precision, recall, _ = skm.precision_recall_curve(y_true, score)
  return float(skm.auc(recall, precision))


def _binary_defined(y) -> bool:
  return 0 < int(np.sum(y)) < len(y)


def _nan_if_undefined(fn, *args) -> float:
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return float(fn(*args))
  except ValueError:
    return math.nan


def compute_metrics(labels, logits_or_probs, num_classes: int, from_logits: bool = True,
                    threshold: float = 0.5, class_prior=None) -> dict:
  """All metrics (module docstring) for integer labels [N] and scores ([N], [N, 1] or [N, C]);
  hard predictions by `predict_classes(p, num_classes, threshold, class_prior)`."""
  y = np.asarray(labels).astype(np.int64).reshape(-1)
  p = probabilities(logits_or_probs, num_classes, from_logits)
  if len(p) != len(y):
    raise ValueError(f"{len(y)} labels but {len(p)} scores")
  n_cls = max(num_classes, 2)
  if y.size and (y.min() < 0 or y.max() >= n_cls):
    raise ValueError(f"labels must be in 0..{n_cls - 1}, got {y.min()}..{y.max()}")
  pred = predict_classes(p, num_classes, threshold, class_prior)
  out = {}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # e.g. "y_pred contains classes not in y_true"
    out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y, pred)) if y.size else math.nan
    out["cohen_kappa"] = float(skm.cohen_kappa_score(y, pred)) if y.size else math.nan
    out["weighted_f1"] = (float(skm.f1_score(y, pred, average="weighted", zero_division=0))
                          if y.size else math.nan)
  if num_classes <= 2:
    if _binary_defined(y):
      out["auroc"] = _nan_if_undefined(skm.roc_auc_score, y, p)
      out["auc_pr"] = _nan_if_undefined(pr_auc_trapezoid, y, p)
      out["average_precision"] = _nan_if_undefined(skm.average_precision_score, y, p)
    else:
      out["auroc"] = out["auc_pr"] = out["average_precision"] = math.nan
  else:
    per = {"auroc": [], "auc_pr": [], "average_precision": []}
    for c in range(num_classes):
      yc = (y == c).astype(np.int64)
      if not _binary_defined(yc):
        continue
      per["auroc"].append(_nan_if_undefined(skm.roc_auc_score, yc, p[:, c]))
      per["auc_pr"].append(_nan_if_undefined(pr_auc_trapezoid, yc, p[:, c]))
      per["average_precision"].append(
          _nan_if_undefined(skm.average_precision_score, yc, p[:, c]))
    for k, v in per.items():
      out[k] = float(np.mean(v)) if v else math.nan
  out["confusion_matrix"] = skm.confusion_matrix(y, pred, labels=list(range(n_cls))).tolist()
  out["n"] = int(y.size)
  out["threshold"] = float(threshold) if num_classes <= 2 else None
  return out


def format_metrics(m: dict, names=METRIC_NAMES) -> str:
  """One line, e.g. 'balanced_accuracy 0.8123  cohen_kappa 0.7012 ...'."""
  return "  ".join(f"{k} {m[k]:.4f}" for k in names if k in m)
