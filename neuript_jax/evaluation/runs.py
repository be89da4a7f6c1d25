"""Fine-tuned runs and encoders on disk: find a run's selected checkpoint, load it (model config
+ params), load any encoder (fine-tuning run, pretraining run, reference state_dict), build
the data config that reads a split the way the run was trained, and evaluate a run.
"""

from __future__ import annotations

import json
import os


RESULTS = "results.json"            # written by train/finetune.py
RUN_CONFIG = "finetune_config.json"


def find_run(path: str) -> tuple[str, str]:
  """(workdir, step folder) for a workdir or a step folder."""
  path = os.path.abspath(path)
  if os.path.basename(path).isdigit():
    workdir = os.path.dirname(os.path.dirname(path))
    return workdir, path
  best = os.path.join(path, "best")
  steps = sorted(int(d) for d in os.listdir(best) if d.isdigit()) if os.path.isdir(best) else []
  if not steps:
    raise FileNotFoundError(f"{path}: no selected checkpoint in {best}")
  results = os.path.join(path, RESULTS)
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

  workdir, step_dir = find_run(checkpoint)
  run_cfg_path = os.path.join(workdir, RUN_CONFIG)
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
  the run's metrics.jsonl when it has one). Hard predictions use the run's own decision
  (`run_decision`)."""
  import jax
  from neuript_jax.evaluation import metrics as metrics_lib
  from neuript_jax.evaluation import predict as predict_lib
  from neuript_jax.train import loop
  from neuript_jax.train import mesh as mesh_lib
  from neuript_jax.train.step import make_predict

  model_cfg, params, run_cfg, step_dir = load_finetuned(checkpoint)
  data_cfg = split_data_config(data, split, batch_size, run_cfg["config"]["data"], window_len)
  check_data_fits(data_cfg, model_cfg)
  mesh = mesh_lib.make_mesh([-1, 1, 1, 1])
  params = loop.place(params, jax.tree_util.tree_map(lambda _: mesh_lib.replicated(mesh),
                                                     params))
  predict = loop.compiled_together(jax.jit(loop.traced_under(mesh, make_predict(model_cfg))),
                                   "evaluate_predict")
  labels, logits = predict_lib.predict_split(predict, params, data_cfg, mesh, batch_size)
  decision = run_decision(checkpoint)
  m = predict_lib.prediction_metrics(labels, logits, model_cfg.num_classes, **decision)
  m.update(checkpoint=step_dir, data=list(data), split=split, decision=decision,
           paper_metrics=list(metrics_lib.paper_metrics(model_cfg.num_classes)))
  if plots_dir and jax.process_index() == 0:       # one writer with several processes
    from neuript_jax.evaluation import plots
    names = predict_lib.label_names(data_cfg)
    names = names if names and len(names) == max(model_cfg.num_classes, 2) else None
    plots.write_prediction_plots(plots_dir, split, labels, logits, model_cfg.num_classes,
                                 names, decision=decision)
    log = os.path.join(find_run(checkpoint)[0], "metrics.jsonl")
    if os.path.exists(log):
      plots.plot_training_curves(log, os.path.join(plots_dir, "curves.png"))
  return m


def run_decision(checkpoint: str) -> dict:
  """The run's fixed decision (results.json "decision": threshold / class_prior chosen at
  training time by its decision_rule), or the p > 0.5 / argmax rule for runs without one."""
  path = os.path.join(find_run(checkpoint)[0], RESULTS)
  decision = None
  if os.path.exists(path):
    with open(path) as f:
      decision = json.load(f).get("decision")
  return dict(decision) if decision else {"threshold": 0.5, "class_prior": None}


def is_finetuned(checkpoint: str) -> bool:
  """True for a fine-tuning workdir or step folder (finetune_config.json in its workdir)."""
  if checkpoint.endswith((".pth", ".pt", ".npz")):
    return False
  try:
    workdir, _ = find_run(checkpoint)
  except FileNotFoundError:
    return False
  return os.path.exists(os.path.join(workdir, RUN_CONFIG))


def load_encoder(checkpoint: str, config=None):
  """(model_cfg, stage-2 params, training data config dict, kind) for any --checkpoint.

  kind "finetuned": the run's own model and head; "encoder": `config.model` with the encoder
  of a pretraining checkpoint or reference state_dict and a zero head."""
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.evaluation import encoders
  if is_finetuned(checkpoint):
    model_cfg, params, run_cfg, _ = load_finetuned(checkpoint)
    return model_cfg, params, run_cfg["config"]["data"], "finetuned"
  if not (checkpoint.endswith((".pth", ".pt", ".npz")) or os.path.isdir(checkpoint)):
    raise FileNotFoundError(f"--checkpoint={checkpoint}: neither a checkpoint folder nor a "
                            ".pth/.pt/.npz file")
  if config is None:
    from neuript_jax.configs import finetune as finetune_config
    config = finetune_config.get_config()
  model_cfg = to_model_config(config.model)
  encoder = encoders.load_encoder_params(checkpoint, model_cfg, encoders.param_shapes(model_cfg))
  return model_cfg, encoders.with_blank_head(encoder, model_cfg), config.data.to_dict(), \
      "encoder"
