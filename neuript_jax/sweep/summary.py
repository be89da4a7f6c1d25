"""Sweep summary tables from results.jsonl rows: DIR/summary.md and DIR/summary.csv.

Per dataset and hyper-parameter setting: TEST metrics of each run's selected checkpoint, mean ±
std over its finished seeds (std = sample standard deviation, ddof=1; blank for one seed), as
fractions with 4 decimals, in the paper's layout (REFERENCE.md §6.2 Tables 18-24): binary tasks
Balanced Acc / AUC-PR / AUROC, multi-class Balanced Acc / Cohen's Kappa / Weighted F1,
PhysioNet-P300 Balanced Acc / Cohen's Kappa / AUROC (``metrics.paper_metrics``).

The best setting of a dataset is the one with the highest mean VALIDATION value of the
dataset's select metric (the runs' ``select_metric``, e.g. AUROC or Cohen's kappa; lower for
``nll``); test metrics never take part. Ties go to the setting listed first. The paper's
NeurIPT numbers (``paper_results``) are printed beside ours where the dataset is one of the
paper's. summary.md links every PNG found in each run folder.

summary.csv: one line per (dataset, setting) with ``best`` = 1 on the selected one, the
validation select metric, every metric of ``metrics.METRIC_NAMES`` on test (mean, std) and the
paper's NeurIPT values (blank where the paper has none).
"""

from __future__ import annotations

import collections
import csv
import io
import math
import os
import urllib.parse
from pathlib import Path
from typing import Sequence

import numpy as np

from neuript_jax.files import atomic_write_text
from neuript_jax.evaluation import metrics as metrics_lib
from neuript_jax.sweep import paper_results

SUMMARY_MD = "summary.md"
SUMMARY_CSV = "summary.csv"
DISPLAY = {"balanced_accuracy": "Balanced Acc", "cohen_kappa": "Cohen's Kappa",
           "weighted_f1": "Weighted F1", "auroc": "AUROC", "auc_pr": "AUC-PR",
           "average_precision": "Average precision", "nll": "NLL"}


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  """(mean, sample std with ddof=1, or None for fewer than 2 values)."""
  v = np.asarray([np.nan if x is None else x for x in values], np.float64)
  if v.size == 0:
    return math.nan, None
  return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def fmt(mean: float, std: float | None = None) -> str:
  """'0.6761±0.0133' (or '0.6761' without a std; 'nan' for undefined)."""
  if mean is None or math.isnan(mean):
    return "nan"
  return f"{mean:.4f}" + ("" if std is None or math.isnan(std) else f"±{std:.4f}")


def _most_common(values):
  values = [v for v in values if v]
  return collections.Counter(values).most_common(1)[0][0] if values else None


class DatasetSummary:
  """One dataset's settings (in first-seen order), task facts and the best setting."""

  def __init__(self, name: str, rows: Sequence[dict]):
    self.name = name
    self.rows = list(rows)
    self.num_classes = _most_common([r.get("num_classes") for r in rows]) or 2
    self.paper_key = _most_common([r.get("paper_key") for r in rows])
    self.metrics = metrics_lib.paper_metrics(int(self.num_classes), self.paper_key or name)
    self.select_metric = _most_common([r.get("select_metric") for r in rows]) or \
        "balanced_accuracy"
    self.paper = paper_results.neuript_result(self.paper_key)
    self.settings: dict[str, list[dict]] = {}
    for r in self.rows:
      self.settings.setdefault(r["setting"], []).append(r)
    self.best = self._best()

  def finished(self, setting: str) -> list[dict]:
    return [r for r in self.settings[setting] if r.get("status") == "finished"]

  def validation(self, setting: str) -> tuple[float, float | None]:
    return mean_std([r["validation"].get(self.select_metric) for r in self.finished(setting)])

  def test(self, setting: str, metric: str) -> tuple[float, float | None]:
    return mean_std([r["test"].get(metric) for r in self.finished(setting)])

  def _best(self) -> str | None:
    sign = -1.0 if self.select_metric == "nll" else 1.0
    best, best_score = None, -math.inf
    for s in self.settings:
      if not self.finished(s):
        continue
      score = sign * self.validation(s)[0]
      if not math.isnan(score) and (best is None or score > best_score):
        best, best_score = s, score
    return best

  @property
  def task_label(self) -> str:
    return "binary" if int(self.num_classes) <= 2 else f"{self.num_classes}-class"


def summarize(rows: Sequence[dict]) -> list[DatasetSummary]:
  by_dataset: dict[str, list[dict]] = {}
  for r in rows:
    by_dataset.setdefault(str(r["dataset"]), []).append(r)
  return [DatasetSummary(name, rs) for name, rs in by_dataset.items()]


def _link(path: str) -> str:
  return urllib.parse.quote(path, safe="/=,+-._~")


def _row(cells) -> str:
  return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _paper_cells(ds: DatasetSummary) -> list[str]:
  if ds.paper is None:
    return ["–"] * len(ds.metrics)
  return [fmt(*ds.paper.metrics[m]) if m in ds.paper.metrics else "–" for m in ds.metrics]


def _short_path(path: str, sweep_dir: str) -> str:
  """`path` relative to the sweep folder when it lies inside it."""
  rel = os.path.relpath(path, os.path.abspath(sweep_dir)) if path else ""
  return path if not rel or rel.startswith("..") else rel


def markdown(summaries: Sequence[DatasetSummary], rows: Sequence[dict], sweep_dir: str = ".") \
    -> str:
  counts = collections.Counter(r.get("status") for r in rows)
  out = ["# Fine-tuning sweep summary", "",
         f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".",
         "Test metrics of each run's checkpoint selected on validation; mean ± sample std "
         "(ddof=1) over seeds, fractions. The best setting of a dataset has the highest mean "
         "VALIDATION select metric (test is never used to choose). Paper: NeurIPT's reported "
         "numbers (REFERENCE.md §6.2).", "",
         "## Best setting per dataset (paper Table 2 layout)", "",
         _row(["Dataset", "Metrics", "Best setting (validation)", "Seeds", "Balanced Acc",
               "Col 2", "Col 3", "Paper BAcc", "Paper col 2", "Paper col 3"]),
         _row(["---"] * 10)]
  for ds in summaries:
    names = " / ".join(DISPLAY[m] for m in ds.metrics)
    if ds.best is None:
      out.append(_row([ds.name, names, "no finished run", 0, "", "", "", *_paper_cells(ds)]))
      continue
    n = len(ds.finished(ds.best))
    out.append(_row([ds.name, names, ds.best, n,
                     *(fmt(*ds.test(ds.best, m)) for m in ds.metrics), *_paper_cells(ds)]))
  for ds in summaries:
    out += ["", f"## {ds.name}: {ds.task_label} ({' / '.join(DISPLAY[m] for m in ds.metrics)}); "
            f"selection on validation {ds.select_metric}", ""]
    out.append(_row(["Setting", "Seeds", f"Val {DISPLAY.get(ds.select_metric, ds.select_metric)}",
                     *(f"Test {DISPLAY[m]}" for m in ds.metrics), "Failed / unfinished"]))
    out.append(_row(["---"] * (4 + len(ds.metrics))))
    for s, rs in ds.settings.items():
      fin = ds.finished(s)
      name = f"**{s}** (best)" if s == ds.best else s
      seeds = ",".join(str(r["seed"]) for r in fin) or "–"
      failed = sum(r.get("status") == "failed" for r in rs)
      other = len(rs) - len(fin) - failed
      out.append(_row([name, seeds, fmt(*ds.validation(s)) if fin else "–",
                       *((fmt(*ds.test(s, m)) if fin else "–") for m in ds.metrics),
                       f"{failed} / {other}"]))
    if ds.paper is not None:
      out.append(_row([f"NeurIPT, paper ({ds.paper.table})", "", "", *_paper_cells(ds), ""]))
    out += ["", "Runs:", "",
            _row(["Setting", "Seed", "Status", f"Val {ds.select_metric}",
                  *(f"Test {DISPLAY[m]}" for m in ds.metrics), "Plots", "Checkpoint / error"]),
            _row(["---"] * (6 + len(ds.metrics)))]
    for r in ds.rows:
      done = r.get("status") == "finished"
      plots = " ".join(f"[{os.path.splitext(os.path.basename(p))[0]}]({_link(p)})"
                       for p in r.get("plots") or [])
      if done:
        where = "checkpoint " + _short_path(r.get("checkpoint") or "", sweep_dir)
      elif r.get("error"):
        err = r["error"]
        last = (err.get("stderr_tail") or "").strip().splitlines()[-1:] or [""]
        where = f"{err.get('reason')}: {last[0][:200]}"
      else:
        where = ""
      out.append(_row([r["setting"], r["seed"], r.get("status"),
                       fmt(r["validation"].get(ds.select_metric)) if done else "",
                       *((fmt(r["test"].get(m)) if done else "") for m in ds.metrics),
                       plots, f"[run folder]({_link(r['workdir'])}) {where}".strip()]))
  return "\n".join(out) + "\n"


CSV_FIXED = ["dataset", "setting", "best", "task", "num_classes", "paper_metrics", "seeds",
             "finished", "failed", "unfinished", "select_metric", "val_select_mean",
             "val_select_std"]


def csv_text(summaries: Sequence[DatasetSummary]) -> str:
  header = CSV_FIXED + [f"test_{m}_{s}" for m in metrics_lib.METRIC_NAMES for s in ("mean", "std")]
  header += [f"paper_{m}_{s}" for m in metrics_lib.METRIC_NAMES for s in ("mean", "std")]
  header += ["paper_table", "hparams"]
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(header)
  num = lambda x: "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"
  for ds in summaries:
    for s, rs in ds.settings.items():
      fin = ds.finished(s)
      failed = sum(r.get("status") == "failed" for r in rs)
      val = ds.validation(s) if fin else (math.nan, None)
      line = [ds.name, s, int(s == ds.best), ds.task_label, ds.num_classes,
              ";".join(ds.metrics), ";".join(str(r["seed"]) for r in fin), len(fin), failed,
              len(rs) - len(fin) - failed, ds.select_metric, num(val[0]), num(val[1])]
      for m in metrics_lib.METRIC_NAMES:
        mean, std = ds.test(s, m) if fin else (math.nan, None)
        line += [num(mean), num(std)]
      for m in metrics_lib.METRIC_NAMES:
        mean, std = ds.paper.metrics.get(m, (None, None)) if ds.paper else (None, None)
        line += [num(mean), num(std)]
      line += [ds.paper.table if ds.paper else "",
               ";".join(f"{k}={v}" for k, v in (rs[0].get("hparams") or {}).items())]
      w.writerow(line)
  return buf.getvalue()


def write_summary(rows: Sequence[dict], sweep_dir: str) -> tuple[str, str]:
  """Write summary.md and summary.csv for `rows` (results.jsonl); returns their paths."""
  summaries = summarize(rows)
  md_path, csv_path = (os.path.join(sweep_dir, n) for n in (SUMMARY_MD, SUMMARY_CSV))
  atomic_write_text(Path(md_path), markdown(summaries, rows, sweep_dir))
  atomic_write_text(Path(csv_path), csv_text(summaries))
  return md_path, csv_path
