"""neuript_jax.evaluation.metrics against scikit-learn and small hand-computed cases."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from neuript_jax.evaluation import metrics as M

KEYS = {"balanced_accuracy", "cohen_kappa", "weighted_f1", "auroc", "auc_pr",
        "average_precision", "confusion_matrix"}


def test_binary_hand_computed():
  # The classic 4-example case: scores are probabilities of class 1.
  y = np.array([0, 0, 1, 1])
  p = np.array([0.1, 0.4, 0.35, 0.8])
  m = M.compute_metrics(y, p, num_classes=2, from_logits=False)
  assert KEYS <= set(m)
  # Predictions (p > 0.5): [0, 0, 0, 1] -> recalls 1 and 1/2.
  assert m["balanced_accuracy"] == pytest.approx(0.75)
  # Confusion [[2, 0], [1, 1]]: p_o = 3/4, p_e = 3/4*1/2 + 1/4*1/2 = 1/2 -> kappa 1/2.
  assert m["confusion_matrix"] == [[2, 0], [1, 1]]
  assert m["cohen_kappa"] == pytest.approx(0.5)
  assert m["auroc"] == pytest.approx(0.75)           # 3 of 4 positive-negative pairs ordered
  # PR points (recall, precision): (0, 1), (.5, 1), (.5, .5), (1, 2/3), (1, .5).
  # Average precision = .5 * 1 + .5 * 2/3; trapezoid = .5 * 1 + .5 * (.5 + 2/3) / 2.
  assert m["average_precision"] == pytest.approx(0.5 + 0.5 * 2 / 3)
  assert m["auc_pr"] == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
  assert abs(m["auc_pr"] - m["average_precision"]) > 0.04
  # F1: class 0 (support 2): P 2/3, R 1 -> .8; class 1: P 1, R .5 -> 2/3; weighted mean.
  assert m["weighted_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
  # The same from logits (one logit per example, any of [N] or [N, 1]).
  logits = np.log(p / (1 - p))[:, None]
  m2 = M.compute_metrics(y, logits, num_classes=2)
  for k in KEYS - {"confusion_matrix"}:
    assert m2[k] == pytest.approx(m[k])


def test_binary_against_sklearn():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 200)
  logits = rng.normal(size=200) + 1.2 * (y - 0.5)
  m = M.compute_metrics(y, logits, num_classes=1)       # <= 2 classes: one logit
  p = 1 / (1 + np.exp(-logits))
  pred = (p > 0.5).astype(int)
  assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
  assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
  assert m["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
  assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p))
  prec, rec, _ = skm.precision_recall_curve(y, p)
  assert m["auc_pr"] == pytest.approx(skm.auc(rec, prec))
  assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
  assert np.array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred))


def test_multiclass_against_sklearn():
  rng = np.random.default_rng(1)
  n, c = 300, 4
  y = rng.integers(0, c, n)
  logits = rng.normal(size=(n, c))
  logits[np.arange(n), y] += 1.0
  m = M.compute_metrics(y, logits, num_classes=c)
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  pred = p.argmax(1)
  assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
  assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
  assert m["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
  assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr",
                                                       average="macro"))
  onehot = np.eye(c)[y]
  assert m["average_precision"] == pytest.approx(
      skm.average_precision_score(onehot, p, average="macro"))
  trapz = [skm.auc(*skm.precision_recall_curve(onehot[:, k], p[:, k])[1::-1]) for k in range(c)]
  assert m["auc_pr"] == pytest.approx(np.mean(trapz))
  assert np.array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred))


def test_multiclass_perfect_and_absent_class():
  y = np.array([0, 1, 2, 0, 1, 2])
  m = M.compute_metrics(y, np.eye(3)[y] * 5.0, num_classes=3)
  for k in ("balanced_accuracy", "cohen_kappa", "weighted_f1", "auroc", "auc_pr",
            "average_precision"):
    assert m[k] == pytest.approx(1.0)
  # Class 3 never occurs: its one-vs-rest AUROC is undefined and left out of the macro mean.
  m = M.compute_metrics(y, np.eye(4)[y] * 5.0, num_classes=4)
  assert m["auroc"] == pytest.approx(1.0)
  assert np.array(m["confusion_matrix"]).shape == (4, 4)


def test_undefined_binary_is_nan_and_bad_shapes_raise():
  m = M.compute_metrics([1, 1, 1], [0.2, 0.7, 0.9], num_classes=2, from_logits=False)
  assert math.isnan(m["auroc"]) and math.isnan(m["auc_pr"])
  with pytest.raises(ValueError):
    M.compute_metrics([0, 1], np.zeros((2, 3)), num_classes=4)
  with pytest.raises(ValueError):
    M.compute_metrics([0, 5], np.zeros((2, 4)), num_classes=4)


def test_paper_metrics_per_task_type():
  assert M.paper_metrics(2) == ("balanced_accuracy", "auc_pr", "auroc")
  assert M.paper_metrics(6) == ("balanced_accuracy", "cohen_kappa", "weighted_f1")
  assert M.paper_metrics(2, "PhysioNet-P300") == ("balanced_accuracy", "cohen_kappa", "auroc")


def _imbalanced_case():
  """90 negatives (80 at p=0.1, 10 at p=0.3) and 10 positives at p=0.35: they rank well
  (AUROC 80*10 + 10*10 pairs of 900 ordered = 1.0) but all sit below 0.5."""
  y = np.array([0] * 80 + [0] * 10 + [1] * 10)
  p = np.array([0.1] * 80 + [0.3] * 10 + [0.35] * 10)
  return y, p


def test_decision_rules_on_an_imbalanced_case():
  y, p = _imbalanced_case()
  counts = [90, 10]                               # training prior of class 1: 0.1
  half = M.compute_metrics(y, p, 2, from_logits=False, **M.decision("half", 2))
  assert half["auroc"] == pytest.approx(1.0)
  assert half["confusion_matrix"] == [[90, 0], [10, 0]]
  assert half["balanced_accuracy"] == pytest.approx(0.5)
  rule = M.decision("prior", 2, train_counts=counts)
  assert rule == {"threshold": pytest.approx(0.1), "class_prior": None}
  prior = M.compute_metrics(y, p, 2, from_logits=False, **rule)
  # p > 0.1: the 10 negatives at 0.3 and every positive are called positive.
  assert prior["confusion_matrix"] == [[80, 10], [0, 10]]
  assert prior["balanced_accuracy"] == pytest.approx((80 / 90 + 1) / 2)
  assert prior["threshold"] == pytest.approx(0.1)
  val = M.decision("validation", 2, val_labels=y, val_scores=p, from_logits=False)
  assert val["threshold"] == pytest.approx(0.325)   # midway between 0.3 and 0.35
  best = M.compute_metrics(y, p, 2, from_logits=False, **val)
  assert best["balanced_accuracy"] == pytest.approx(1.0)
  # Logits give the same thresholds in probability space.
  logit_rule = M.decision("validation", 2, val_labels=y, val_scores=np.log(p / (1 - p)))
  assert logit_rule["threshold"] == pytest.approx(0.325)
  for k in ("auroc", "auc_pr"):          # ranking metrics do not depend on the rule
    assert prior[k] == best[k] == half[k]


def test_validation_threshold_ties_and_errors():
  # Perfectly separated at any cut in (0.2, 0.6); among the tied cuts the one nearest 0.5.
  y = np.array([0, 0, 1, 1])
  assert M.balanced_accuracy_threshold(y, np.array([0.1, 0.2, 0.6, 0.9])) == pytest.approx(0.4)
  with pytest.raises(ValueError, match="both classes"):
    M.balanced_accuracy_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3]))
  with pytest.raises(ValueError, match="decision rule"):
    M.decision("youden", 2)
  with pytest.raises(ValueError, match="training class counts"):
    M.decision("prior", 2)
  with pytest.raises(ValueError, match="binary"):
    M.decision("validation", 3, val_labels=[0, 1, 2], val_scores=np.eye(3))


def test_multiclass_prior_rule_divides_by_the_prior():
  p = np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3]])
  assert M.predict_classes(p, 3).tolist() == [0, 0]
  rule = M.decision("prior", 3, train_counts=[80, 10, 10])
  assert rule["class_prior"] == pytest.approx([0.8, 0.1, 0.1])
  # p / prior: [0.75, 3, 1] and [0.625, 2, 3].
  assert M.predict_classes(p, 3, class_prior=rule["class_prior"]).tolist() == [1, 2]
