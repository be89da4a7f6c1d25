"""Predictions and metrics over a whole split, on every host: the validation and test passes of
fine-tuning, launch.evaluate, embeddings. Also the run plots of a fine-tuned checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import jax
import numpy as np
from absl import logging

from neuript_jax.data import pipeline
from neuript_jax.evaluation import metrics as metrics_lib


def label_names(data_cfg) -> list[str] | None:
  """Class names (the first source's recipe label_names), or None if its manifest has none."""
  src = pipeline.dataset_summary(data_cfg)["sources"][0]["path"]
  manifest = json.loads((Path(src) / pipeline.MANIFEST).read_text())
  return list(manifest.get("recipe", {}).get("config", {}).get("label_names") or []) or None


def map_split(fn, params, data_cfg, mesh, batch_size: int):
  """Yields (batch, fn(params, x) on host) for every batch of a split (`data_cfg` reads it
  once), on every host, without the padding rows.

  The pipeline pads the final global batch (rows with ``valid=False``), so every batch has one
  compiled shape and every host the same batch count. With several hosts the outputs and the
  batch's host arrays are gathered, in global row order, so every host sees the whole batch.
  """
  from jax.experimental import multihost_utils
  if int(data_cfg.global_batch_size) != batch_size:
    raise ValueError(f"eval global_batch_size {data_cfg.global_batch_size} != {batch_size}")
  for batch in pipeline.make_iterator(data_cfg):
    gb = pipeline.to_global_batch({"x": batch["x"]}, mesh)
    out = fn(params, gb["x"])
    if jax.process_count() > 1:
      out = multihost_utils.process_allgather(out, tiled=True)
      batch = multihost_utils.process_allgather(batch, tiled=True)
    keep = np.asarray(batch["valid"], bool)
    yield ({k: np.asarray(v)[keep] for k, v in batch.items()},
           jax.tree_util.tree_map(lambda a: np.asarray(jax.device_get(a))[keep], out))


def predict_split(predict, params, data_cfg, mesh, batch_size: int):
  """(labels [N], logits [N, n_logits]) over a whole split, on every host (map_split)."""
  labels, logits = [], []
  for batch, out in map_split(predict, params, data_cfg, mesh, batch_size):
    labels.append(batch["label"])
    logits.append(out)
  if not labels:
    raise ValueError(f"split {data_cfg.split!r} has no records")
  labels, logits = np.concatenate(labels), np.concatenate(logits)
  if (labels < 0).any():
    raise ValueError(f"split {data_cfg.split!r} has {(labels < 0).sum()} unlabelled records "
                     "(label -1); convert it with a label_source")
  return labels, logits


def nll(labels, logits) -> float:
  """Mean negative log-likelihood (softmax, or sigmoid for one logit)."""
  logits = np.asarray(logits, np.float64)
  if logits.shape[1] == 1:
    z = logits[:, 0]
    return float(np.mean(np.logaddexp(0, z) - labels * z))
  lse = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1)) + logits.max(1)
  return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def prediction_metrics(labels, logits, num_classes, threshold: float = 0.5,
                       class_prior=None) -> dict:
  """compute_metrics (hard predictions by `threshold` / `class_prior`: metrics.decision) plus
  "nll" and "balanced_accuracy_half" (the balanced accuracy of the p > 0.5 / argmax rule)."""
  m = metrics_lib.compute_metrics(labels, logits, num_classes, threshold=threshold,
                                  class_prior=class_prior)
  m["balanced_accuracy_half"] = (
      m["balanced_accuracy"] if threshold == 0.5 and class_prior is None else
      metrics_lib.compute_metrics(labels, logits, num_classes)["balanced_accuracy"])
  m["nll"] = nll(labels, logits)
  return m


def split_metrics(predict, params, data_cfg, mesh, batch_size, num_classes) -> dict:
  labels, logits = predict_split(predict, params, data_cfg, mesh, batch_size)
  return prediction_metrics(labels, logits, num_classes)


def selection_score(m: dict, name: str) -> float:
  """Higher is better (nll is negated)."""
  if name not in m:
    raise ValueError(f"select_metric {name!r} is not a metric; choose from "
                     f"{', '.join(metrics_lib.METRIC_NAMES + ('nll',))}")
  v = float(m[name])
  v = -v if name == "nll" else v
  return -math.inf if math.isnan(v) else v


def write_run_plots(workdir: str, preds: dict, num_classes: int, class_names=None,
                    decision=None) -> None:
  """confusion_matrix_{val,test}.png, roc_test.png, pr_test.png and curves.png (metrics.jsonl)
  in `workdir`; preds: {"val"/"test": (labels, logits)} of the selected checkpoint; decision:
  the run's threshold / class_prior (metrics.decision)."""
  from neuript_jax.evaluation import plots
  if class_names is not None and len(class_names) != max(num_classes, 2):
    class_names = None
  for split, (labels, logits) in preds.items():
    plots.write_prediction_plots(workdir, split, labels, logits, num_classes, class_names,
                                 curves=split == "test", decision=decision)
  plots.plot_training_curves(os.path.join(workdir, "metrics.jsonl"),
                             os.path.join(workdir, "curves.png"), os.path.basename(workdir))
  logging.info("plots written to %s", workdir)
