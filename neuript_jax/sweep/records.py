"""What a sweep leaves on disk, and the table rebuilt from it.

Each run folder ``<DIR>/runs/<dataset>/<setting>/seed<k>`` holds ``sweep_run.json`` (what was
run: dataset, setting, seed, hyper-parameters, config spec, overrides, command, status,
attempts, error), ``sweep_config.json`` (the run's config resolved at start, as its launcher
resolves ``--config`` and the overrides), ``sweep_stdout.log`` and ``sweep_stderr.log``
(appended per attempt) and ``sweep.lock`` (an ``flock`` held while the run runs). A run is
finished iff its ``results.json`` exists. ``<DIR>/results.jsonl`` is rebuilt from all run
folders (atomically), so shards run on several nodes over a shared filesystem merge into one
table; ``refresh`` also rewrites summary.md / summary.csv from it.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Sequence

from neuript_jax.files import atomic_write_text
from neuript_jax.sweep.overrides import SweepError

RESULTS = "results.json"          # written by the fine-tuning run (neuript_jax.train.finetune)
RUN_RECORD = "sweep_run.json"
RUN_CONFIG = "sweep_config.json"
RUN_LOCK = "sweep.lock"
STDOUT_LOG = "sweep_stdout.log"
STDERR_LOG = "sweep_stderr.log"
RESULTS_JSONL = "results.jsonl"
_RECORD_KEYS = ("dataset", "setting", "seed", "hparams", "config", "overrides", "task",
                "num_classes", "paper_key", "recipe", "attempts", "command")


def is_finished(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, RESULTS))


def write_json(path: str, obj) -> None:
  atomic_write_text(Path(path), json.dumps(obj, indent=1, default=str) + "\n")


def read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def lock_is_held(workdir: str) -> bool:
  """Whether a process holds the run's flock now."""
  path = os.path.join(workdir, RUN_LOCK)
  if not os.path.exists(path):
    return False
  fd = os.open(path, os.O_RDWR)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    return True
  finally:
    os.close(fd)
  return False


def _plots(workdir: str, sweep_dir: str) -> list[str]:
  """*.png under a run folder (not inside checkpoints), relative to the sweep folder."""
  out = []
  for p in sorted(Path(workdir).rglob("*.png")):
    rel = p.relative_to(workdir).parts
    if rel[0] in ("checkpoints", "best"):
      continue
    out.append(os.path.relpath(p, sweep_dir))
  return out


def run_row(workdir: str, sweep_dir: str) -> dict | None:
  """The results.jsonl row of one run folder (None if it has no sweep_run.json)."""
  record = read_json(os.path.join(workdir, RUN_RECORD))
  if record is None:
    return None
  row = {k: record.get(k) for k in _RECORD_KEYS}
  row["workdir"] = os.path.relpath(workdir, sweep_dir)
  results = read_json(os.path.join(workdir, RESULTS)) if is_finished(workdir) else None
  if results is not None:
    row["status"] = "finished"
    for k in ("validation", "test", "selected_step", "select_metric", "checkpoint",
              "stopped_early", "steps_trained"):
      row[k] = results.get(k)
    row["num_classes"] = results.get("num_classes", row["num_classes"])
  else:
    status = record.get("status", "interrupted")
    if status == "running" and not lock_is_held(workdir):
      status = "interrupted"
    row["status"] = status
    row["select_metric"] = record.get("select_metric")
    if status == "failed":
      row["error"] = record.get("error")
  row["plots"] = _plots(workdir, sweep_dir)
  return row


def collect_rows(sweep_dir: str) -> list[dict]:
  """Rows of every run folder under <sweep_dir>/runs, sorted by dataset, setting, seed."""
  rows = []
  for rec in sorted(Path(sweep_dir, "runs").glob(f"*/*/seed*/{RUN_RECORD}")):
    row = run_row(str(rec.parent), sweep_dir)
    if row is not None:
      rows.append(row)
  rows.sort(key=lambda r: (str(r["dataset"]), str(r["setting"]), int(r["seed"] or 0)))
  return rows


def write_results_jsonl(sweep_dir: str, rows: Sequence[dict]) -> str:
  path = os.path.join(sweep_dir, RESULTS_JSONL)
  atomic_write_text(Path(path), "".join(json.dumps(r, default=str) + "\n" for r in rows))
  return path


def read_results_jsonl(path: str) -> list[dict]:
  if not os.path.isfile(path):
    raise SweepError(f"no {path}: nothing to summarize")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def refresh(sweep_dir: str) -> list[dict]:
  """Rebuild results.jsonl from the run folders, then summary.md / summary.csv from it."""
  from neuript_jax.sweep import summary
  rows = collect_rows(sweep_dir)
  write_results_jsonl(sweep_dir, rows)
  summary.write_summary(read_results_jsonl(os.path.join(sweep_dir, RESULTS_JSONL)), sweep_dir)
  return rows
