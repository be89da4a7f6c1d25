r"""Evaluate a fine-tuned checkpoint on any prepared split; prints (and writes) the metrics JSON.

  python -m launch.evaluate --checkpoint=runs/finetune_demo --data=SHARD_DIR [--split=test] \
      [--output=metrics.json] [--batch_size=64] [--window_len=64]

--checkpoint: a fine-tuning workdir (its selected checkpoint in best/ and the model config in
finetune_config.json), or one step folder inside it (best/<step> or checkpoints/<step>).
--data: one or more data_prep output folders (comma separated). The metrics are those of
neuript_jax.evaluation.compute_metrics (balanced_accuracy, cohen_kappa, weighted_f1, auroc,
auc_pr, average_precision, confusion_matrix) plus nll and n. Next to the output JSON go
confusion_matrix_<split>.png, roc_<split>.png, pr_<split>.png and curves.png (the run's
training/validation curves, when it has a metrics.jsonl); nothing is plotted without an output.
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging

from neuript_jax import host_memory

def find_run(path: str) -> tuple[str, str]:
  """(workdir, step folder) for a workdir or a step folder."""
  path = os.path.abspath(path)
  from neuript_jax.train import finetune
  if os.path.basename(path).isdigit():
    workdir = os.path.dirname(os.path.dirname(path))
    return workdir, path
  best = os.path.join(path, "best")
  steps = sorted(int(d) for d in os.listdir(best) if d.isdigit()) if os.path.isdir(best) else []
  if not steps:
    raise FileNotFoundError(f"{path}: no selected checkpoint in {best}")
  results = os.path.join(path, finetune.RESULTS)
  step = steps[-1]
  if os.path.exists(results):
    with open(results) as f:
      step = json.load(f).get("selected_step", step)
  return path, os.path.join(best, str(step))


def load_finetuned(checkpoint: str):
  """(model_cfg, params, run_cfg, step_dir) of a fine-tuning workdir or step folder (find_run);
  run_cfg is its finetune_config.json."""
  from neuript_jax.model import ModelConfig
  from neuript_jax.train import checkpoint as ckpt_lib
  from neuript_jax.train import finetune

  workdir, step_dir = find_run(checkpoint)
  run_cfg_path = os.path.join(workdir, finetune.RUN_CONFIG)
  if not os.path.exists(run_cfg_path):
    raise FileNotFoundError(f"{run_cfg_path} not found: is {workdir} a fine-tuning workdir?")
  with open(run_cfg_path) as f:
    run_cfg = json.load(f)
  return ModelConfig.from_dict(run_cfg["model"]), ckpt_lib.load_params(step_dir), run_cfg, \
      step_dir


def split_data_config(data, split: str, batch_size: int, trained: dict, window_len="config"):
  """A pipeline config reading `split` of the data_prep folders `data` once, in order, with
  the A-law of the training data config `trained`; window_len: "config" (trained's), "none"
  or an int."""
  from neuript_jax.data import pipeline
  data_cfg = pipeline.default_data_config()
  data_cfg.sources = [(p, 1.0) for p in data]
  data_cfg.split = split
  data_cfg.shuffle, data_cfg.num_epochs, data_cfg.drop_remainder = False, 1, False
  data_cfg.global_batch_size = batch_size
  data_cfg.alaw, data_cfg.alaw_a = trained.get("alaw", True), trained.get("alaw_a", 0.25)
  if window_len == "config":
    data_cfg.window_len = trained.get("window_len")
  elif str(window_len).lower() == "none":
    data_cfg.window_len = None
  else:
    data_cfg.window_len = int(window_len)
  return data_cfg


def check_data_fits(data_cfg, model_cfg) -> dict:
  """dataset_summary of data_cfg; ValueError if its channels x samples differ from the model's."""
  from neuript_jax.data import pipeline
  summary = pipeline.dataset_summary(data_cfg)
  if summary["channels"] != model_cfg.data_dim or summary["window_len"] != model_cfg.T:
    raise ValueError(f"{[s['path'] for s in summary['sources']]} ({data_cfg.split}) gives "
                     f"{summary['channels']} channels x {summary['window_len']} samples; the "
                     f"model expects {model_cfg.data_dim} x {model_cfg.T}")
  return summary


def evaluate(checkpoint: str, data, split: str = "test", batch_size: int = 64,
             window_len="config", plots_dir: str | None = None) -> dict:
  """Metrics of a fine-tuned checkpoint on `split` of `data`; with `plots_dir`, also
  confusion_matrix_<split>.png, roc_<split>.png, pr_<split>.png there (and curves.png from
  the run's metrics.jsonl when it has one)."""
  import jax
  from neuript_jax.evaluation import metrics as metrics_lib
  from neuript_jax.train import finetune
  from neuript_jax.train import mesh as mesh_lib

  model_cfg, params, run_cfg, step_dir = load_finetuned(checkpoint)
  data_cfg = split_data_config(data, split, batch_size, run_cfg["config"]["data"], window_len)
  check_data_fits(data_cfg, model_cfg)
  mesh = mesh_lib.make_mesh([-1, 1, 1, 1])
  params = jax.device_put(params, mesh_lib.replicated(mesh))
  predict = jax.jit(finetune.make_predict(model_cfg))
  labels, logits = finetune.predict_split(predict, params, data_cfg, mesh, batch_size)
  m = finetune.prediction_metrics(labels, logits, model_cfg.num_classes)
  m.update(checkpoint=step_dir, data=list(data), split=split,
           paper_metrics=list(metrics_lib.paper_metrics(model_cfg.num_classes)))
  if plots_dir:
    from neuript_jax.evaluation import plots
    names = finetune.label_names(data_cfg)
    names = names if names and len(names) == max(model_cfg.num_classes, 2) else None
    plots.write_prediction_plots(plots_dir, split, labels, logits, model_cfg.num_classes, names)
    log = os.path.join(find_run(checkpoint)[0], "metrics.jsonl")
    if os.path.exists(log):
      plots.plot_training_curves(log, os.path.join(plots_dir, "curves.png"))
  return m


def _define_flags():
  """Flags are defined only when run as a program (importing this module defines none)."""
  flags.DEFINE_string("checkpoint", None, "fine-tuning workdir or step folder", required=True)
  flags.DEFINE_list("data", None, "data_prep output folder(s)", required=True)
  flags.DEFINE_string("split", "test", "split to evaluate")
  flags.DEFINE_string("output", None, "JSON file to write (default: <workdir>/eval_<split>.json "
                      "when --checkpoint is a workdir)")
  flags.DEFINE_integer("batch_size", 64, "eval batch size (last batch padded)")
  flags.DEFINE_string("window_len", "config", "'config' (as in fine-tuning), 'none' or an "
                      "integer")


def main(argv):
  del argv
  from neuript_jax.evaluation import metrics as metrics_lib
  f = flags.FLAGS
  out = f.output
  if out is None and not os.path.basename(os.path.abspath(f.checkpoint)).isdigit():
    out = os.path.join(f.checkpoint, f"eval_{f.split}.json")
  m = evaluate(f.checkpoint, f.data, f.split, f.batch_size, f.window_len,
               plots_dir=os.path.dirname(os.path.abspath(out)) if out else None)
  if out:
    with open(out, "w") as fh:
      json.dump(m, fh, indent=1)
      fh.write("\n")
    logging.info("wrote %s", out)
  logging.info("%s: %s", f.split, metrics_lib.format_metrics(m))
  print(json.dumps(m))


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  _define_flags()
  app.run(main)
