"""One downstream dataset's results table, every row over several seeds on one subject split
(launch/downstream_table.py is the command; data conversion happens there, not here).

Rows (`ROWS`), each trained on the same shards and split, the model chosen on the validation
split only, the test split scored once per run:

  neuript_scratch  the downstream config (configs/downstream/<dataset>.py:<size>) from scratch
  neuript_aamp     the same fine-tuning from an encoder pretrained with AAMP (no labels) on the
                   training subjects only (`pretrain_shards`), one pretraining shared by seeds
  neuript_random   the same with random masking (masking.mode "random")
  band_power_lr    evaluation/baselines.band_power_lr (deterministic: every seed is the same)
  eegnet           evaluation/baselines.eegnet (braindecode), seeded

Workdir layout (resumable: a run whose result.json exists is skipped if its "settings" (size,
pretraining steps and batch, EEGNet epochs: `run_settings`) are the command's, and refused if
not; an interrupted fine-tuning resumes from its checkpoints; a finished pretraining is reused):

  <workdir>/pretrain_<mode>/            pretraining (neuript_jax.train.pretrain.train) and its
                                        encoder.npz, which the row's fine-tunings start from
  <workdir>/runs/<row>/seed<k>/         one run: result.json, predictions.npz (test_labels,
                                        test_logits), the fine-tuning workdir's files
  <workdir>/summary.csv, summary.md     every seed and mean ± std per row, the paper's rows
  <workdir>/roc_test.png                one test ROC curve per row (its first seed)

Records (`records`, optional): a folder of the finished runs' small files (`RECORD_FILES`, tens
of KB per run; kept in git under docs/benchmark_records/) synchronised both ways with the
workdir (`sync_records`): runs recorded there are copied into the workdir and skipped, new
runs are copied out as they finish, so a table too long for one machine session continues on
the next one from a fresh checkout. Pretrainings are recorded too (config, losses, wall time
and `ENCODER_FILE`, the pretrained embedding + encoder, about 1 MB at :cpu size; no
checkpoints): a fresh workdir takes a recorded encoder file instead of pretraining again.

NeurIPT rows: the fine-tuning's results.json scores the selected checkpoint with the config's
`decision_rule` (metrics.decision: "prior" uses the training class counts, "validation" a
threshold chosen on the validation split) and keeps the 0.5 rule's balanced accuracy beside it
("balanced_accuracy_half"); its predictions.npz holds the test labels and logits.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from absl import logging

from neuript_jax.evaluation import metrics as metrics_lib
from neuript_jax.files import atomic_write_text

ROWS = ("neuript_scratch", "neuript_aamp", "neuript_random", "band_power_lr", "eegnet")
ROW_TITLES = {
    "neuript_scratch": "NeurIPT from scratch",
    "neuript_aamp": "NeurIPT pretrained (AAMP, training subjects), fine-tuned",
    "neuript_random": "NeurIPT pretrained (random masking, training subjects), fine-tuned",
    "band_power_lr": "Band power (Welch, 5 bands 1-30 Hz, log) + logistic regression",
    "eegnet": "EEGNet (braindecode)",
}
PRETRAIN_MODES = {"neuript_aamp": "aamp", "neuript_random": "random"}
RESULT = "result.json"
PREDICTIONS = "predictions.npz"
RECORD_FILES = (RESULT, PREDICTIONS, "results.json", "finetune_config.json", "metrics.jsonl")
ENCODER_FILE = "encoder.npz"   # a finished pretraining's embedding + encoder (reference names)
PRETRAIN_RECORD_FILES = ("done.json", "metrics.jsonl", "pretrain_config.json", ENCODER_FILE)


# -- configs ----------------------------------------------------------------------------------

def finetune_config(dataset: str, size: str, shards: str, seed: int, init_from: str = ""):
  """The downstream config of `dataset` at `size` on `shards`, seeded, from `init_from`."""
  from neuript_jax.configs import downstream
  c = downstream.get_config(dataset, size)
  c.data.sources = ((str(shards), 1.0),)
  c.seed = int(seed)
  c.data.seed = int(seed)
  c.init_from = init_from
  return c


def pretrain_config(finetune_cfg, shards: str, mode: str, steps: int, batch: int,
                    eval_split: str | None = "val"):
  """A pretraining config (configs/pretrain.py:tiny) whose encoder fits `finetune_cfg`'s model
  (sizes, seg_len, merges, experts copied), on the `train` split of `shards`, whole windows,
  masking `mode` ("aamp" | "random")."""
  from neuript_jax.configs import pretrain
  c = pretrain.get_config("tiny")
  for k in ("d_model", "n_heads", "d_ff", "hidden_dim", "hidden_dim_shared", "top_k",
            "noise_std", "w_importance", "seg_len", "merge_layers", "enc_expert", "T"):
    c.model[k] = finetune_cfg.model[k]
  c.data.sources = ((str(shards), 1.0),)
  c.data.window_len = int(finetune_cfg.model.T)
  c.data.global_batch_size = int(batch)
  c.masking.mode = mode
  c.total_steps = int(steps)
  c.log_every = max(1, min(10, steps))
  c.eval_every = c.checkpoint_every = c.plot_every = max(1, steps // 3)
  c.eval_split = eval_split or "train"
  return c


def run_settings(row: str, size: str, pretrain_steps: int, pretrain_batch: int,
                 eegnet_epochs: int) -> dict:
  """What a run depends on besides its row, seed and data, kept in its result.json as
  "settings": a finished run made with other settings is refused, never silently reused."""
  if row.startswith("neuript"):
    s = {"size": size}
    if row in PRETRAIN_MODES:
      s.update(pretrain_steps=int(pretrain_steps), pretrain_batch=int(pretrain_batch))
    return s
  return {"eegnet_epochs": int(eegnet_epochs)} if row == "eegnet" else {}


class SettingsMismatchError(ValueError):
  """A finished run in the workdir or the records was made with other settings."""


def check_settings(result_path: Path, wanted: dict) -> None:
  """Raise SettingsMismatchError naming the file and the setting if the finished run at
  `result_path` was not made with `wanted` (a setting it does not record counts as other)."""
  got = json.loads(Path(result_path).read_text()).get("settings", {})
  for k, v in wanted.items():
    if got.get(k) != v:
      raise SettingsMismatchError(
          f"{result_path} was made with {k}={got.get(k, '(not recorded)')}, this command asks "
          f"for {k}={v}: pass the same flag value, or use another --workdir (and --records "
          "folder) for the new setting")


# -- records ----------------------------------------------------------------------------------

def sync_records(root, records) -> dict:
  """Finished runs (those with result.json) both ways between the workdir `root` and the
  `records` folder: {"in": runs copied into root, "out": runs copied into records}. Only
  `RECORD_FILES` travel (no checkpoints); an existing run on either side is never
  overwritten. Finished pretrainings (done.json and `ENCODER_FILE`) travel the same way as
  their `PRETRAIN_RECORD_FILES`, so a fresh workdir does not pretrain again."""
  import shutil
  root, records = Path(root), Path(records)
  moved = {"in": [], "out": []}
  for src, dst, key in ((records, root, "in"), (root, records, "out")):
    runs = src / "runs"
    if not runs.is_dir():
      continue
    for result in sorted(runs.glob(f"*/seed*/{RESULT}")):
      run = result.parent.relative_to(src)
      if (dst / run / RESULT).exists():
        continue
      (dst / run).mkdir(parents=True, exist_ok=True)
      for name in RECORD_FILES:            # result.json last: it marks the run as done
        if name == "results.json" and key == "out" and (src / run / name).exists():
          _write_json(dst / run / name, _portable_results(src / run / name))
        elif name != RESULT and (src / run / name).exists():
          shutil.copyfile(src / run / name, dst / run / name)
      shutil.copyfile(result, dst / run / (RESULT + ".tmp"))
      os.replace(dst / run / (RESULT + ".tmp"), dst / run / RESULT)
      moved[key].append(str(run))
  for mode in PRETRAIN_MODES.values():
    name = f"pretrain_{mode}"
    for src, dst, key in ((records, root, "in"), (root, records, "out")):
      finished = all((src / name / f).exists() for f in ("done.json", ENCODER_FILE))
      if not finished or (dst / name / "done.json").exists():
        continue
      (dst / name).mkdir(parents=True, exist_ok=True)
      for f in PRETRAIN_RECORD_FILES[::-1]:      # done.json last: it marks the pretraining done
        if (src / name / f).exists():
          shutil.copyfile(src / name / f, dst / name / (f + ".tmp"))
          os.replace(dst / name / (f + ".tmp"), dst / name / f)
      moved[key].append(name)
  return moved


def _portable_results(path: Path) -> dict:
  """A fine-tuning's results.json for the records: its "checkpoint" (an absolute path on the
  machine that trained it, `<run>/best/<step>`; the records hold no checkpoints) becomes
  relative to the run folder, e.g. "best/83"."""
  results = json.loads(path.read_text())
  ckpt = results.get("checkpoint")
  if ckpt and os.path.isabs(ckpt):
    results["checkpoint"] = "/".join(Path(ckpt).parts[-2:])
  return results


# -- runs -------------------------------------------------------------------------------------

def _write_json(path: Path, obj) -> None:
  atomic_write_text(str(path), json.dumps(obj, indent=1, default=_json_default) + "\n")


def _json_default(o):
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)


def pretrain_encoder(workdir: Path, config, finetune_model) -> str:
  """Run (or reuse, or resume) one pretraining; returns its encoder file, `ENCODER_FILE` in
  `workdir`: the embedding and encoder of its last checkpoint as reference-named float32
  arrays (init_from reads it; the records keep it, so a fresh workdir can reuse it).
  `finetune_model`: the fine-tuning's model config (the encoder shapes it must fit)."""
  from neuript_jax.train import pretrain
  done, encoder = workdir / "done.json", workdir / ENCODER_FILE
  if done.exists():
    got = json.loads(done.read_text()).get("total_steps")
    if got != int(config.total_steps):
      raise SettingsMismatchError(
          f"{done} was made with pretrain_steps={got}, this command asks for "
          f"pretrain_steps={config.total_steps}: pass the same flag value, or use another "
          "--workdir (and --records folder) for the new setting")
    if not encoder.exists():              # a workdir from before the encoder file existed
      export_encoder(workdir, finetune_model, encoder)
    return str(encoder)
  start = time.time()
  last = pretrain.train(config, str(workdir))["step"]
  if last < int(config.total_steps):      # stopped early (SIGTERM): not done, rerun resumes
    raise RuntimeError(f"{workdir}: pretraining stopped at step {last} of "
                       f"{config.total_steps} (SIGTERM?); rerun to resume")
  export_encoder(workdir, finetune_model, encoder)
  _write_json(done, {"wall_s": time.time() - start, "total_steps": int(config.total_steps)})
  return str(encoder)


def export_encoder(checkpoint: Path, finetune_model, out: Path) -> None:
  """The embedding and encoder of an orbax `checkpoint` (a workdir: its latest step) written
  to `out` (.npz, reference names), atomically."""
  from neuript_jax import convert
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.evaluation import encoders
  cfg = to_model_config(finetune_model)
  params = encoders.load_encoder_params(str(checkpoint), cfg, encoders.param_shapes(cfg))
  state = convert.to_reference(encoders.with_blank_head(params, cfg), cfg, stage=2,
                               with_buffers=False)
  keep = {k: v for k, v in state.items() if k.split(".")[0] in encoders.ENCODER_KEYS}
  tmp = out.with_name(out.name + ".tmp.npz")
  convert.save_state_dict(keep, str(tmp))
  os.replace(tmp, out)


def run_neuript(row_dir: Path, config, wall_extra: float = 0.0) -> dict:
  """Fine-tune (resumable); the fine-tuning's results.json already scores the selected
  checkpoint under the config's decision rule and writes its predictions.npz."""
  from neuript_jax.train import finetune
  start = time.time()
  results = finetune.train(config, str(row_dir))
  if not results:
    raise RuntimeError(f"{row_dir}: fine-tuning stopped before the end (SIGTERM?); rerun")
  keep = ("validation", "test", "decision_rule", "decision", "selected_step", "init_from")
  return {**{k: results[k] for k in keep}, "wall_s": time.time() - start + wall_extra}


def run_baseline(row: str, row_dir: Path, splits, num_classes: int, select_metric: str,
                 seed: int, eegnet_epochs: int) -> dict:
  from neuript_jax.evaluation import baselines
  if row == "band_power_lr":
    r = baselines.band_power_lr(splits, num_classes, select_metric)
  else:
    r = baselines.eegnet(splits, num_classes, select_metric, epochs=eegnet_epochs, seed=seed,
                         threads=1, log=logging.info)
  np.savez(row_dir / PREDICTIONS, test_labels=r.test_labels, test_logits=r.test_scores)
  for m in (r.validation, r.test):
    m["balanced_accuracy_half"] = m["balanced_accuracy"]
  return {"validation": r.validation, "test": r.test, "selected": r.selected,
          "decision_rule": "half", "wall_s": r.wall_s}


def run_table(dataset: str, shards: str, workdir: str, seeds, size: str = "cpu",
              rows=ROWS, pretrain_shards: str | None = None, pretrain_steps: int = 300,
              pretrain_batch: int = 8, eegnet_epochs: int = 100, failed: list | None = None,
              records: str | None = None) -> dict:
  """Every (row, seed) not yet done, seed by seed (each row gets its first seed before any row
  gets a second); then the summary. `pretrain_shards`: data_prep output of the training
  subjects' recordings only (its `train` split is read, no evaluation split needed); None:
  the `train` split of `shards` (training subjects only, evaluated on that split too).
  `failed`: a list that receives (row, seed, error) of failed runs, which are then skipped
  (None: the first failure raises). `records`: a records folder (module docstring) read
  before the first run and updated after every run."""
  from neuript_jax.configs import downstream
  bad = [r for r in rows if r not in ROWS]
  if bad:
    raise ValueError(f"unknown rows {bad}; choose from {', '.join(ROWS)}")
  root = Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  base = downstream.get_config(dataset, size)
  num_classes = int(base.model.num_classes)
  if records:
    got = sync_records(root, records)["in"]
    logging.info("%d finished runs taken from the records in %s", len(got), records)
  def settings_of(row):
    return run_settings(row, size, pretrain_steps, pretrain_batch, eegnet_epochs)
  for seed in seeds:       # every finished run is checked before anything trains
    for row in rows:
      if (root / "runs" / row / f"seed{seed}" / RESULT).exists():
        check_settings(root / "runs" / row / f"seed{seed}" / RESULT, settings_of(row))
  pretrained = {}
  for seed in seeds:
    for row in rows:
      row_dir = root / "runs" / row / f"seed{seed}"
      if (row_dir / RESULT).exists():
        continue
      row_dir.mkdir(parents=True, exist_ok=True)
      logging.info("== %s seed %d -> %s", row, seed, row_dir)
      try:
        result = _run_one(row, row_dir, seed, dataset, size, shards, base, pretrained,
                          pretrain_shards, pretrain_steps, pretrain_batch, eegnet_epochs)
      except Exception as e:  # noqa: BLE001  (one failed run must not stop the table)
        if failed is None:
          raise
        logging.exception("%s seed %d failed; the table goes on (a rerun retries it)", row,
                          seed)
        atomic_write_text(str(row_dir / "error.txt"), f"{type(e).__name__}: {e}\n")
        failed.append((row, int(seed), f"{type(e).__name__}: {e}"))
        continue
      result.update(row=row, seed=int(seed), dataset=dataset, size=size,
                    settings=settings_of(row))
      _write_json(row_dir / RESULT, result)
      logging.info("%s seed %d test: %s", row, seed,
                   metrics_lib.format_metrics(result["test"]))
      if records:
        sync_records(root, records)
      write_summary(root, dataset, num_classes)
  return write_summary(root, dataset, num_classes)


_SPLITS_CACHE = {}


def _run_one(row, row_dir, seed, dataset, size, shards, base, pretrained, pretrain_shards,
             pretrain_steps, pretrain_batch, eegnet_epochs) -> dict:
  if row.startswith("neuript"):
    init = ""
    if row in PRETRAIN_MODES:
      mode = PRETRAIN_MODES[row]
      if isinstance(pretrained.get(mode), Exception):
        raise RuntimeError(f"the {mode} pretraining failed earlier in this run: "
                           f"{pretrained[mode]}")
      if mode not in pretrained:
        cfg = pretrain_config(base, pretrain_shards or shards, mode, pretrain_steps,
                              pretrain_batch, "val" if pretrain_shards else "train")
        try:
          pretrained[mode] = pretrain_encoder(Path(row_dir).parents[2] / f"pretrain_{mode}",
                                              cfg, base.model)
        except Exception as e:
          pretrained[mode] = e
          raise
      init = pretrained[mode]
    return run_neuript(row_dir, finetune_config(dataset, size, shards, seed, init))
  if shards not in _SPLITS_CACHE:
    from neuript_jax.evaluation import baselines
    _SPLITS_CACHE.clear()
    _SPLITS_CACHE[shards] = baselines.load_splits(shards)
  return run_baseline(row, row_dir, _SPLITS_CACHE[shards], int(base.model.num_classes),
                      base.select_metric, seed, eegnet_epochs)


# -- summary ----------------------------------------------------------------------------------

def _pretrain_wall(root: Path) -> dict:
  out = {}
  for row, mode in PRETRAIN_MODES.items():
    f = root / f"pretrain_{mode}" / "done.json"
    if f.exists():
      out[row] = float(json.loads(f.read_text())["wall_s"])
  return out


def collect(root: Path) -> dict:
  """{row: [result dicts, by seed]} of every finished run under `root`/runs."""
  out = {}
  for row in ROWS:
    d = root / "runs" / row
    if not d.is_dir():
      continue
    found = [json.loads((s / RESULT).read_text()) for s in sorted(d.iterdir())
             if (s / RESULT).exists()]
    if found:
      out[row] = sorted(found, key=lambda r: r["seed"])
  return out


def _mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _fmt(mean, std=None) -> str:
  if mean is None or (isinstance(mean, float) and math.isnan(mean)):
    return "–"
  return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def write_summary(root, dataset: str, num_classes: int) -> dict:
  """summary.csv, summary.md and roc_test.png from the finished runs; returns the per-row
  means."""
  root = Path(root)
  names = list(metrics_lib.paper_metrics(num_classes, dataset))
  runs = collect(root)
  pre_wall = _pretrain_wall(root)
  table = {}
  lines = []
  csv_rows = []
  for row, results in runs.items():
    stats = {k: _mean_std([r["test"][k] for r in results]) for k in
             names + ["balanced_accuracy_half"]}
    wall = sum(float(r["wall_s"]) for r in results) + pre_wall.get(row, 0.0)
    table[row] = {"n": len(results), "seeds": [r["seed"] for r in results], "wall_s": wall,
                  **{k: v for k, v in stats.items()}}
    for r in results:
      csv_rows.append({"row": row, "seed": r["seed"], "decision_rule": r["decision_rule"],
                       **{k: r["test"][k] for k in names},
                       "balanced_accuracy_half": r["test"]["balanced_accuracy_half"],
                       "val_" + names[0]: r["validation"][names[0]], "wall_s": r["wall_s"]})
    csv_rows.append({"row": row, "seed": "mean", **{k: stats[k][0] for k in names},
                     "balanced_accuracy_half": stats["balanced_accuracy_half"][0],
                     "wall_s": wall})
    csv_rows.append({"row": row, "seed": "std", **{k: stats[k][1] for k in names},
                     "balanced_accuracy_half": stats["balanced_accuracy_half"][1]})
  fields = ["row", "seed", "decision_rule", *names, "balanced_accuracy_half",
            "val_" + names[0], "wall_s"]
  with open(root / "summary.csv.tmp", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    w.writerows(csv_rows)
  os.replace(root / "summary.csv.tmp", root / "summary.csv")

  head = ["Row", "Seeds", *names, "BAcc at p > 0.5", "Wall time (s, all seeds)"]
  lines += [f"# {dataset}: test metrics, mean ± std over seeds", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row, s in table.items():
    lines.append(f"| {ROW_TITLES[row]} | {s['n']} | " + " | ".join(
        _fmt(*s[k]) for k in names) + f" | {_fmt(*s['balanced_accuracy_half'])} | "
        f"{s['wall_s']:.0f} |")
  missing = [r for r in ROWS if r not in table]
  if missing:
    lines += ["", "Not measured: " + ", ".join(ROW_TITLES[r] for r in missing) + "."]
  lines += ["", "Every seed (test):", "", "| Row | Seed | Rule | " + " | ".join(names) +
            " | BAcc at 0.5 | Wall (s) |", "|" + "---|" * (len(names) + 5)]
  for row, results in runs.items():
    for r in results:
      lines.append(f"| {row} | {r['seed']} | {r['decision_rule']} | " + " | ".join(
          _fmt(r["test"][k]) for k in names) + f" | {_fmt(r['test']['balanced_accuracy_half'])}"
          f" | {r['wall_s']:.0f} |")
  paper = _paper_rows(dataset)
  if paper:
    lines += ["", "The paper's rows (REFERENCE.md; mean ± std where given):", "",
              "| Row | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for title, m in paper.items():
      lines.append(f"| {title} | " + " | ".join(_fmt(*m[k]) if k in m else "–" for k in names)
                   + " |")
  atomic_write_text(str(root / "summary.md"), "\n".join(lines) + "\n")
  if runs:
    plot_roc_rows(root, runs, num_classes)
  return table


def _paper_rows(dataset: str) -> dict:
  import importlib
  mod = importlib.import_module(f"neuript_jax.configs.downstream.{dataset}")
  rows = getattr(mod, "PAPER_ROWS", None)
  if rows:
    return rows
  paper = getattr(mod, "PAPER", None)
  return {f"NeurIPT ({paper.table})": dict(paper.metrics)} if paper else {}


def plot_roc_rows(root: Path, runs: dict, num_classes: int) -> str | None:
  """roc_test.png: each row's test ROC (its first seed; binary tasks only)."""
  if num_classes > 2:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from neuript_jax.evaluation import plots
  fig, ax = plt.subplots(figsize=(6, 5.5))
  for row, results in runs.items():
    f = root / "runs" / row / f"seed{results[0]['seed']}" / PREDICTIONS
    if not f.exists():
      continue
    z = np.load(f)
    for _, xs, ys, area, _ in plots.curve_points("roc", z["test_labels"], z["test_logits"],
                                                      num_classes):
      aurocs = [r["test"]["auroc"] for r in results]
      ax.plot(xs, ys, lw=1.5, label=f"{ROW_TITLES[row].split(' (')[0].split(',')[0]}"
              f"{' (AAMP)' if row == 'neuript_aamp' else ''}"
              f"{' (random masking)' if row == 'neuript_random' else ''}: seed "
              f"{results[0]['seed']} {area:.3f}; mean {np.mean(aurocs):.3f} over {len(aurocs)}")
  ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
  ax.set_xlabel("false positive rate")
  ax.set_ylabel("true positive rate")
  ax.set_title("test ROC, one seed per row (AUROC)")
  ax.legend(loc="lower right", fontsize=7)
  path = str(root / "roc_test.png")
  fig.savefig(path + ".tmp.png", dpi=120, bbox_inches="tight")
  plt.close(fig)
  os.replace(path + ".tmp.png", path)
  return path
