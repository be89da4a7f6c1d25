"""Evaluation plots: PNGs written for binary and multi-class predictions, curve areas equal to
the metrics' AUROC / AUC-PR, row normalisation, the metrics.jsonl reader, clear errors."""

import json

import numpy as np
import pytest

from neuript_jax.evaluation import metrics as metrics_lib
from neuript_jax.evaluation import plots

PNG = b"\x89PNG\r\n\x1a\n"


def predictions(num_classes, n=200, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, max(num_classes, 2), n)
  if num_classes <= 2:
    return y, (2.0 * y - 1.0 + rng.normal(0, 1.5, n))[:, None]
  return y, np.eye(num_classes)[y] * 2.0 + rng.normal(0, 1.0, (n, num_classes))


def assert_png(path, min_bytes=5000):
  with open(path, "rb") as f:
    data = f.read()
  assert data[:8] == PNG and len(data) > min_bytes, (path, len(data))


@pytest.mark.parametrize("num_classes", [2, 4])
def test_curve_areas_are_the_metrics(num_classes):
  y, logits = predictions(num_classes)
  m = metrics_lib.compute_metrics(y, logits, num_classes)
  for kind, name in (("roc", "auroc"), ("pr", "auc_pr")):
    curves = plots.curve_points(kind, y, logits, num_classes)
    assert len(curves) == (1 if num_classes == 2 else num_classes)
    assert np.mean([c[3] for c in curves]) == pytest.approx(m[name], abs=1e-12)
    assert all(0 < c[4] < 1 for c in curves)


def test_row_normalise():
  cm = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
  np.testing.assert_allclose(plots.row_normalise(cm),
                             [[0.75, 0.25, 0], [0, 0, 0], [0.25, 0.25, 0.5]])


@pytest.mark.parametrize("num_classes", [2, 4])
def test_prediction_plots_written(tmp_path, num_classes):
  y, logits = predictions(num_classes)
  names = [f"class{c}" for c in range(max(num_classes, 2))]
  paths = plots.write_prediction_plots(str(tmp_path), "test", y, logits, num_classes, names)
  assert sorted(p.split("/")[-1] for p in paths) == ["confusion_matrix_test.png", "pr_test.png",
                                                    "roc_test.png"]
  for p in paths:
    assert_png(p)
  only_cm = plots.write_prediction_plots(str(tmp_path / "v"), "val", y, logits, num_classes,
                                         curves=False)
  assert [p.split("/")[-1] for p in only_cm] == ["confusion_matrix_val.png"]


def test_single_class_curves_are_drawn_as_undefined(tmp_path):
  y = np.zeros(20, np.int64)
  assert plots.curve_points("roc", y, np.linspace(-1, 1, 20), 2) == []
  assert_png(plots.plot_roc(y, np.linspace(-1, 1, 20), 2, str(tmp_path / "roc.png")), 2000)


def test_training_curves_from_metrics_log(tmp_path):
  log = tmp_path / "metrics.jsonl"
  rows = [{"step": s, "loss": 2.0 / s, "cls_loss": 1.5 / s, "lr": 1e-3, "train_acc": 0.1 * s}
          for s in (1, 2, 3)]
  rows += [{"step": 2, "val_nll": 1.2, "val_balanced_accuracy": 0.4}]
  rows += [{"step": 2, "loss": 0.9, "cls_loss": 0.7, "lr": 1e-3, "train_acc": 0.3}]   # resumed
  log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  series = plots.read_metrics_log(str(log))
  np.testing.assert_array_equal(series["loss"][0], [1, 2, 3])
  np.testing.assert_allclose(series["loss"][1], [2.0, 0.9, 2.0 / 3])
  np.testing.assert_array_equal(series["val_balanced_accuracy"][0], [2])
  assert_png(plots.plot_training_curves(str(log), str(tmp_path / "curves.png")))


def test_bad_inputs_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="square"):
    plots.plot_confusion_matrix(np.zeros((2, 3)), str(tmp_path / "cm.png"))
  with pytest.raises(ValueError, match="3 class names"):
    plots.plot_confusion_matrix(np.eye(2), str(tmp_path / "cm.png"), ["a", "b", "c"])
  bad = tmp_path / "metrics.jsonl"
  bad.write_text('{"step": 1, "loss": 1.0}\nnot json\n')
  with pytest.raises(ValueError, match="metrics.jsonl:2"):
    plots.read_metrics_log(str(bad))
