"""Stage-2 fine-tuning (IILP head) read top to bottom: data, init weights, mesh, state, resume,
steps, validation + model selection, early stopping, checkpoints, then ONE test evaluation with
the selected checkpoint. `launch/finetune.py` is a thin absl main over `train()`.

Model selection: every `eval_every` steps (default: each epoch) the whole validation split is
scored with `neuript_jax.evaluation.compute_metrics`; the checkpoint with the best
`select_metric` goes to `<workdir>/best` (orbax; its "eval_loss" is the negated metric for
higher-is-better metrics). The test split is read only after training, once, with those params.
`<workdir>/results.json` holds {"validation": metrics, "test": metrics, "selected_step", ...};
then the selected checkpoint's plots (neuript_jax.evaluation.plots) are written next to it:
confusion_matrix_val.png, confusion_matrix_test.png, roc_test.png, pr_test.png and curves.png
(training / validation curves from metrics.jsonl).

Intervals: `eval_every` 0 = once per epoch; `checkpoint_every` 0 = at every validation
(these and every other rule are checked before anything is compiled: train/validate.py). With several processes every process runs this loop;
process 0 alone writes metrics, JSON files and plots; every process takes part in the orbax
checkpoints and sees every prediction (evaluation/predict.py gathers them).

Resume: `<workdir>/checkpoints` holds the train state and, as JSON, the data iterator state and
the selection state (best score/step, validations since the best, stop flag), so a killed run
rerun with the same command continues exactly where the last checkpoint left it.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from neuript_jax import geometry, losses
from neuript_jax.configs.common import to_model_config
from neuript_jax.data import pipeline
from neuript_jax.evaluation import encoders
from neuript_jax.evaluation import metrics as metrics_lib
from neuript_jax.evaluation import predict as predict_lib
from neuript_jax.files import atomic_write_bytes, atomic_write_text
from neuript_jax.model import Stage2Model, dummy_inputs
from neuript_jax.train import checkpoint as ckpt_lib
from neuript_jax.train import loop
from neuript_jax.train import mesh as mesh_lib
from neuript_jax.train import metrics as writer_lib
from neuript_jax.train import optim, step as step_lib
from neuript_jax.train import validate

RESULTS = "results.json"
PREDICTIONS = "predictions.npz"   # the selected checkpoint's {val,test}_{labels,logits}
RUN_CONFIG = "finetune_config.json"
NonFiniteError = loop.NonFiniteError


# -- data ------------------------------------------------------------------------------------

def data_configs(config):
  """(train, validation, test) pipeline configs; config.data.sources must be set (the launcher
  fills it with the labelled synthetic corpus when the config has none). Eval configs read
  their split once, in order; the pipeline pads the last global batch (``valid=False``)."""
  if not config.data.sources:
    raise ValueError("config.data.sources is empty: give data_prep shard folders, e.g. "
                     "--config.data.sources=\"(('/data/tuev', 1.0),)\" (launch.finetune "
                     "writes the synthetic demo corpus when it is empty)")
  train_cfg = config.data.copy_and_resolve_references()
  train_cfg.num_epochs = None

  def eval_cfg(split):
    e = train_cfg.copy_and_resolve_references()
    e.split = split
    e.shuffle = False
    e.num_epochs = 1
    e.drop_remainder = False
    e.worker_count = 0
    e.global_batch_size = config.eval_batch_size
    return e

  return train_cfg, eval_cfg(config.val_split), eval_cfg(config.test_split)


def class_counts(data_cfg, num_classes: int) -> np.ndarray:
  """Training class counts [max(C, 2)] from the sources' manifests (label names are mapped
  through the recipe's label_names); falls back to reading the labels if a manifest has no
  label counts."""
  n = max(num_classes, 2)
  counts = np.zeros(n, np.int64)
  for src in pipeline.dataset_summary(data_cfg)["sources"]:
    manifest = json.loads((Path(src["path"]) / pipeline.MANIFEST).read_text())
    per = manifest.get("counts", {}).get("label", {}).get(data_cfg.split)
    names = list(manifest.get("recipe", {}).get("config", {}).get("label_names") or [])
    if not per:
      return _counted_labels(data_cfg, n)
    for key, k in per.items():
      idx = names.index(key) if key in names else int(key) if str(key).lstrip("-").isdigit() \
          else None
      if idx is None:
        raise ValueError(f"{src['path']}: label {key!r} is not in the recipe's label_names "
                         f"{names}")
      if idx < 0:
        continue
      if idx >= n:
        raise ValueError(f"{src['path']}: label {key!r} (class {idx}) does not fit "
                         f"model.num_classes={num_classes}")
      counts[idx] += int(k)
  return counts


def _counted_labels(data_cfg, n: int) -> np.ndarray:
  e = data_cfg.copy_and_resolve_references()
  e.shuffle, e.num_epochs, e.drop_remainder = False, 1, False
  counts = np.zeros(n, np.int64)
  for batch in pipeline.make_iterator(e):
    lab = np.asarray(batch["label"])[np.asarray(batch["valid"])]
    counts += np.bincount(lab[lab >= 0], minlength=n)[:n]
  return counts


def make_loss(config, model_cfg, cls_num):
  if config.loss == "bal_bce":
    cls_num = jnp.asarray(np.maximum(cls_num, 1), jnp.float32)
    form = config.get("bal_bce_binary_form", "reference")
    return lambda logits, y: losses.bal_bce(logits, y, cls_num, config.bal_bce_k,
                                            config.label_smoothing, form)
  if config.loss == "cross_entropy":
    return lambda logits, y: losses.cross_entropy(logits, y)
  raise ValueError(f"config.loss must be bal_bce or cross_entropy, got {config.loss!r}")


# -- state ------------------------------------------------------------------------------------

def _train_step(config, model_cfg, tx, schedule, cls_num, freeze_steps, state_shard, mesh):
  b_shard = {"x": mesh_lib.batch_sharding(mesh, 3), "label": mesh_lib.batch_sharding(mesh, 1)}
  step = step_lib.make_finetune_step(model_cfg, tx, schedule,
                                     make_loss(config, model_cfg, cls_num), config.aux_weight,
                                     freeze_steps)
  return jax.jit(loop.traced_under(mesh, step), in_shardings=(state_shard, b_shard),
                 out_shardings=(state_shard, mesh_lib.replicated(mesh)), donate_argnums=(0,))


def setup(config, model_cfg, mesh, rules, total_steps: int, freeze_steps: int, cls_num,
          init_encoder=None):
  """(state, jitted donated train step, jitted predict) for `mesh`; init_encoder: encoder
  subtrees (encoders.load_encoder_params) that replace the fresh ones."""
  tx, schedule = optim.make_optimizer(config.optim, total_steps)
  model, args = Stage2Model(model_cfg), dummy_inputs(model_cfg, 2)
  params, p_shard = loop.init_params(model, args, mesh, rules, loop.rng_key(config.seed, "init"))
  if init_encoder is not None:
    params = flax.core.unfreeze(params)
    for k in encoders.ENCODER_KEYS:
      params[k] = loop.place(init_encoder[k], p_shard[k])
  state, state_shard = loop.initial_state(tx, params, p_shard, mesh,
                                          loop.rng_key(config.seed, "train"))
  train_step = _train_step(config, model_cfg, tx, schedule, cls_num, freeze_steps, state_shard,
                           mesh)
  predict = jax.jit(loop.traced_under(mesh, step_lib.make_predict(model_cfg)),
                    in_shardings=(state_shard["params"], mesh_lib.batch_sharding(mesh, 3)),
                    out_shardings=mesh_lib.replicated(mesh))
  return state, train_step, predict


def aot_compile(config, model_cfg, mesh, rules=mesh_lib.DEFAULT_RULES):
  """Ahead-of-time compile of the fine-tuning train step for `mesh` from shapes only (global
  batch config.data.global_batch_size; uniform class counts). Returns the jax Compiled object
  (`.memory_analysis()`, `.cost_analysis()`)."""
  steps = max(int(config.total_steps), 1)
  tx, schedule = optim.make_optimizer(config.optim, steps)
  state, state_shard = loop.abstract_state(tx, Stage2Model(model_cfg),
                                           dummy_inputs(model_cfg, 2), mesh, rules)
  b = int(config.data.global_batch_size)
  batch = {"x": jax.ShapeDtypeStruct((b, model_cfg.T, model_cfg.data_dim), jnp.float32,
                                     sharding=mesh_lib.batch_sharding(mesh, 3)),
           "label": jax.ShapeDtypeStruct((b,), jnp.int32,
                                         sharding=mesh_lib.batch_sharding(mesh, 1))}
  cls_num = np.ones(max(model_cfg.num_classes, 2))
  return _train_step(config, model_cfg, tx, schedule, cls_num, 0, state_shard, mesh).lower(
      state, batch).compile()


def _npz(preds: dict) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **{f"{split}_{kind}": np.asarray(a) for split, (labels, logits) in preds.items()
                   for kind, a in (("labels", labels), ("logits", logits))})
  return buf.getvalue()


def _write_json(path: str, obj) -> None:
  if loop.is_writer():
    atomic_write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


# -- the loop ---------------------------------------------------------------------------------

class Selection:
  """Model selection on validation: the best score and step, validations since the best,
  early stopping. Its dict form is saved with every checkpoint."""

  def __init__(self, metric: str, patience: int, saved: dict | None = None):
    self.metric, self.patience = metric, int(patience)
    self.s = saved or {"best_score": None, "best_step": None, "since_best": 0,
                       "stopped": False, "init_from": ""}

  def update(self, done: int, m: dict) -> bool:
    """Record validation metrics `m` at step `done`; True if this is the new best."""
    score = predict_lib.selection_score(m, self.metric)
    s = self.s
    if s["best_score"] is None or score > s["best_score"]:
      s.update(best_score=score, best_step=done, since_best=0)
      return True
    s["since_best"] += 1
    if self.patience and s["since_best"] >= self.patience:
      logging.info("early stopping at step %d: %d validations without improvement of %s "
                   "(best %.4f at step %d)", done, s["since_best"], self.metric,
                   s["best_score"], s["best_step"])
      s["stopped"] = True
    return False


def train(config, workdir: str) -> dict:
  """Fine-tune (or resume) in `workdir`; returns the results dict written to results.json."""
  os.makedirs(workdir, exist_ok=True)
  results_path = os.path.join(workdir, RESULTS)
  if os.path.exists(results_path):
    logging.info("%s exists: this run is finished (delete it, or use another workdir, to "
                 "run again)", results_path)
    with open(results_path) as f:
      return json.load(f)

  # Data: shapes, channels, class counts, steps.
  model_cfg = to_model_config(config.model)
  train_data, val_data, test_data = data_configs(config)
  summary = pipeline.dataset_summary(train_data)
  plan = validate.check_finetune(config, n_devices=jax.device_count(),
                                 n_processes=jax.process_count(), data_summary=summary)
  logging.info("data: %d training records of %d channels x %d samples from %s",
               summary["n_records"], summary["channels"], summary["window_len"],
               ", ".join(s["path"] for s in summary["sources"]))
  loop.check_data_shape(summary, model_cfg)
  names = summary["sources"][0].get("channel_names")
  if names and (geometry.fix_fp2_f3_typo(names)
                != geometry.fix_fp2_f3_typo(model_cfg.channel_names)):
    logging.warning("data channels %s differ from the model's %s (positions and IILP groups "
                    "follow the model config)", names, model_cfg.channel_names)
  cls_num = class_counts(train_data, model_cfg.num_classes)
  logging.info("training class counts: %s", cls_num.tolist())
  if cls_num.sum() != summary["n_records"]:
    raise ValueError(f"the {train_data.split!r} split has {summary['n_records']} records but "
                     f"{int(cls_num.sum())} labelled ones: convert it with a label_source")
  bs = int(config.data.global_batch_size)
  steps_per_epoch, total_steps = plan["steps_per_epoch"], plan["total_steps"]
  freeze_steps, eval_every = plan["freeze_steps"], plan["eval_every"]
  ckpt_every, log_every = plan["checkpoint_every"], plan["log_every"]

  # Mesh, weights, state, resume.
  mesh = loop.make_mesh(config)
  loop.barrier("checkpointer")             # orbax syncs the processes (gloo) right away
  checkpointer = ckpt_lib.Checkpointer(workdir, config.keep_checkpoints, config.async_checkpoint)
  init_encoder = None
  if checkpointer.latest_step() is None and config.init_from:
    init_encoder = encoders.load_encoder_params(config.init_from, model_cfg,
                                                encoders.param_shapes(model_cfg))
    logging.info("initialised the encoder from %s (%d tensors; head and optimizer fresh)",
                 config.init_from, len(jax.tree_util.tree_leaves(init_encoder)))
  elif not config.init_from:
    logging.info("init_from is empty: training from scratch")
  state, train_step, predict = setup(config, model_cfg, mesh, loop.axis_rules(config),
                                     total_steps, freeze_steps, cls_num, init_encoder)
  train_step = loop.compiled_together(train_step, "finetune_step")
  predict = loop.compiled_together(predict, "finetune_predict")
  if init_encoder is not None or not os.path.exists(os.path.join(workdir, RUN_CONFIG)):
    _write_json(os.path.join(workdir, RUN_CONFIG), {
        "config": config.to_dict(), "model": model_cfg.to_dict(), "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch, "freeze_steps": freeze_steps,
        "class_counts": cls_num.tolist(), "init_from": config.init_from})
  it = pipeline.make_iterator(train_data)
  sel = Selection(config.select_metric, config.early_stopping_patience)
  sel.s["init_from"] = config.init_from
  state, saved, start = loop.resume(checkpointer, state)
  if saved is not None:
    it.set_state(pipeline.iterator_state_from_json(saved["iterator"]))
    sel.s = saved["selection"]

  writer = writer_lib.MetricWriter(workdir, total_steps, enabled=loop.is_writer())
  saved_state = lambda: {"iterator": pipeline.iterator_state_to_json(it.get_state()),
                         "selection": sel.s}
  last_saved = [start]                     # the resumed step is on disk already

  def save(done: int, force: bool = False):
    if done != last_saved[0]:              # e.g. SIGTERM right after a periodic checkpoint
      checkpointer.save(done, state, saved_state(), force=force)
      last_saved[0] = done

  def validate_at(done: int) -> None:
    m = predict_lib.split_metrics(predict, state["params"], val_data, mesh,
                                  config.eval_batch_size, model_cfg.num_classes)
    writer.write(done, {f"val_{k}": v for k, v in m.items()
                        if k in metrics_lib.METRIC_NAMES + ("nll",)})
    logging.info("validation at step %d: %s  nll %.4f", done, metrics_lib.format_metrics(m),
                 m["nll"])
    if sel.update(done, m) and done not in checkpointer.best.all_steps():  # a rerun may have it
      checkpointer.save_best(done, state, saved_state(), -sel.s["best_score"])
      checkpointer.best.wait_until_finished()       # best on disk before `latest` names it

  # Steps.
  pending = []
  finished = sel.s["stopped"] or start >= total_steps
  writer.start(start)
  try:
    with loop.Preemption() as preempt:
      for step in range(start, total_steps):
        if sel.s["stopped"]:
          break
        batch = next(it)
        gb = pipeline.to_global_batch({"x": batch["x"], "label": batch["label"]}, mesh)
        state, m = train_step(state, gb)
        pending.append((step, m))
        done = step + 1
        if (loop.every(done, log_every, total_steps)
            or loop.every(done, eval_every, total_steps) or preempt.requested):
          last = loop.flush(pending, config.nonfinite)
          rates = writer.progress(done, bs, last, f"  epoch {done / steps_per_epoch:.2f}" + (
              "  (encoder frozen)" if last["frozen"] else ""))
          writer.write(done, {**last, **rates, "epoch": done / steps_per_epoch})
        if loop.every(done, eval_every, total_steps):
          validate_at(done)
        if loop.every(done, ckpt_every, total_steps) or sel.s["stopped"]:
          save(done, force=sel.s["stopped"])
        if preempt.requested:
          logging.warning("SIGTERM: saving step %d and exiting", done)
          save(done, force=True)
          break
      else:
        finished = True
    finished = finished or sel.s["stopped"]
  finally:
    checkpointer.wait()
    writer.close()

  if not finished:
    checkpointer.close()
    return {}

  # One test evaluation with the selected checkpoint.
  try:
    if sel.s["best_step"] is None:
      raise RuntimeError("no validation was run (total_steps < eval_every?)")
    best = checkpointer.restore_best(loop.abstract_like(state), sel.s["best_step"])[0]["params"]
  finally:
    checkpointer.close()
  logging.info("selected step %d by validation %s; evaluating it on the %s split (once)",
               sel.s["best_step"], config.select_metric, config.test_split)
  preds = {name: predict_lib.predict_split(predict, best, data, mesh, config.eval_batch_size)
           for name, data in (("val", val_data), ("test", test_data))}
  rule = config.get("decision_rule", "half")
  decision = metrics_lib.decision(
      rule, model_cfg.num_classes, val_labels=preds["val"][0], val_scores=preds["val"][1],
      train_counts=class_counts(train_data, model_cfg.num_classes) if rule == "prior" else None)
  val_m, test_m = (predict_lib.prediction_metrics(*preds[k], model_cfg.num_classes, **decision)
                   for k in ("val", "test"))
  if loop.is_writer():
    atomic_write_bytes(os.path.join(workdir, PREDICTIONS), _npz(preds))
  results = {
      "validation": val_m, "test": test_m, "selected_step": sel.s["best_step"],
      "select_metric": config.select_metric, "decision_rule": rule, "decision": decision, "steps_trained": int(jax.device_get(state["step"])),
      "total_steps": total_steps, "stopped_early": bool(sel.s["stopped"]),
      "num_classes": model_cfg.num_classes,
      "paper_metrics": list(metrics_lib.paper_metrics(model_cfg.num_classes)),
      "init_from": sel.s.get("init_from") or config.init_from,
      "data": [s["path"] for s in summary["sources"]],
      "checkpoint": os.path.join(os.path.abspath(workdir), "best", str(sel.s["best_step"])),
  }
  _write_json(results_path, results)
  logging.info("test (%s): %s", config.test_split, metrics_lib.format_metrics(test_m))
  if loop.is_writer():
    predict_lib.write_run_plots(workdir, preds, model_cfg.num_classes,
                                predict_lib.label_names(train_data), decision)
  return results
