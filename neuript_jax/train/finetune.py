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

Resume: `<workdir>/checkpoints` holds the train state and, as JSON, the data iterator state and
the selection state (best score/step, validations since the best, stop flag), so a killed run
rerun with the same command continues exactly where the last checkpoint left it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from neuript_jax import convert, losses
from neuript_jax.configs.common import to_model_config
from neuript_jax.data import pipeline
from neuript_jax.evaluation import metrics as metrics_lib
from neuript_jax.model import Stage2Model, dummy_inputs
from neuript_jax.train import checkpoint as ckpt_lib
from neuript_jax.train import mesh as mesh_lib
from neuript_jax.train import metrics as writer_lib
from neuript_jax.train import optim, pretrain

ENCODER_KEYS = ("enc_value_embedding", "encoder")   # what init_from loads; the head is new
HEAD_KEY = "classification_head"
RESULTS = "results.json"
RUN_CONFIG = "finetune_config.json"


class NonFiniteError(RuntimeError):
  pass


class InitError(ValueError):
  """init_from weights do not fit the fine-tuning model; the message names the tensors."""


# -- data ------------------------------------------------------------------------------------

def prepare_synthetic_labelled(workdir: str, cfg) -> str:
  """Write a labelled synthetic corpus and convert it with the `generic` recipe (annotation
  labels, TCP-20 channels, subject-level splits from `cfg.split_lists`; `cfg.window_s`
  windows, one per event ("onset") or tiled over each 4 s event every `cfg.stride_s` ("tile")).
  Once; reused."""
  from data_prep import convert as convert_lib
  from data_prep import montages, synthetic
  from data_prep.recipes import get_recipe

  root = Path(workdir) / "data"
  shards = root / f"generic_tcp20_{cfg.window_s:g}s"
  if (shards / "manifest.json").exists():
    return str(shards)
  raw = root / "synthetic_labelled"
  if not (raw / "corpus.json").exists():
    logging.info("writing the labelled synthetic corpus to %s", raw)
    synthetic.write_corpus(raw, n_subjects=cfg.n_subjects, recordings=cfg.recordings,
                           minutes=cfg.minutes, seed=cfg.seed)
  logging.info("converting it with the generic recipe (annotation labels) into %s", shards)
  recipe = get_recipe("generic", channels=montages.MONTAGES["tcp20"], montage="standard_1020",
                      window_s=float(cfg.window_s), stride_s=cfg.stride_s,
                      params={"label_source": "annotations",
                              "label_map": synthetic.GENERIC_LABEL_MAP,
                              "annotation_windows": cfg.annotation_windows,
                              "split_rule": "lists", "split_lists": cfg.split_lists})
  convert_lib.convert(str(raw), recipe, shards, workers=1)
  return str(shards)


def data_configs(config, workdir: str):
  """(train, validation, test) pipeline configs. Eval configs read their split once, in order;
  the pipeline pads the last global batch (``valid=False`` rows)."""
  train_cfg = config.data.copy_and_resolve_references()
  if not train_cfg.sources:
    train_cfg.sources = ((prepare_synthetic_labelled(workdir, config.synthetic), 1.0),)
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


def label_names(data_cfg) -> list[str] | None:
  """Class names (the first source's recipe label_names), or None if its manifest has none."""
  src = pipeline.dataset_summary(data_cfg)["sources"][0]["path"]
  manifest = json.loads((Path(src) / pipeline.MANIFEST).read_text())
  return list(manifest.get("recipe", {}).get("config", {}).get("label_names") or []) or None


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


# -- initial weights ---------------------------------------------------------------------------

def _flat_shapes(tree) -> dict:
  return {"/".join(k): tuple(np.shape(v)) for k, v in
          flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}


def param_shapes(model_cfg):
  """Stage-2 param shapes (ShapeDtypeStructs; nothing is computed)."""
  return convert.param_template(model_cfg, 2)


def encoder_subtrees(params) -> dict:
  params = flax.core.unfreeze(params)
  return {k: params[k] for k in ENCODER_KEYS if k in params}


def check_encoder_fit(loaded: dict, template: dict, source: str) -> None:
  """Raise InitError naming every missing, unexpected or mis-shaped encoder tensor."""
  want = _flat_shapes(encoder_subtrees(template))
  got = _flat_shapes(encoder_subtrees(loaded))
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  shape = sorted(k for k in set(want) & set(got) if want[k] != got[k])
  if missing or unexpected or shape:
    lines = []
    if missing:
      lines.append(f"missing {len(missing)}: " + ", ".join(missing))
    if unexpected:
      lines.append(f"unexpected {len(unexpected)}: " + ", ".join(unexpected))
    if shape:
      lines.append(f"shape mismatch {len(shape)}: " + "; ".join(
          f"{k} (checkpoint {got[k]}, model {want[k]})" for k in shape))
    raise InitError(f"init_from={source}: the encoder does not fit the model config (merge "
                    "layers, experts or sizes differ?):\n  " + "\n  ".join(lines))


def load_encoder_params(path: str, model_cfg, template) -> dict:
  """{"enc_value_embedding": ..., "encoder": ...} from an orbax workdir/step dir (stage-1 or
  stage-2 params) or a reference state_dict file (.pth/.pt/.npz, stage 1 or 2). Positional
  encodings are rebuilt from the target montage, never loaded. `template`: stage-2 param
  shapes. Raises InitError naming the tensors that do not fit."""
  if path.endswith((".pth", ".pt", ".npz")):
    sd = convert.load_state_dict(path)
    keep = {k: v for k, v in sd.items() if k.split(".")[0] in ENCODER_KEYS}
    if not keep:
      raise InitError(f"init_from={path}: no encoder/embedding tensors (names starting with "
                      f"{' or '.join(ENCODER_KEYS)}) in the file")
    # The head is not loaded: fill its reference names from the template so that
    # from_reference checks exactly the encoder and embedding tensors.
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), template[HEAD_KEY])
    head = convert.to_reference({HEAD_KEY: zeros}, model_cfg, stage=2, with_buffers=False)
    try:
      params = convert.from_reference({**keep, **head}, model_cfg, stage=2)
    except convert.ConversionError as e:
      raise InitError(f"init_from={path}: {e}") from e
    return encoder_subtrees(params)
  loaded = ckpt_lib.load_params(path)
  check_encoder_fit(loaded, template, path)
  return jax.tree_util.tree_map(np.asarray, encoder_subtrees(loaded))


def resolve_init_from(config, workdir: str) -> str:
  """"pretrain_demo" -> an existing demo pretraining workdir, else pretrain it now."""
  if config.init_from != "pretrain_demo":
    return config.init_from
  demo = config.pretrain_demo_dir
  if demo and os.path.isdir(os.path.join(demo, "checkpoints")) and any(
      d.isdigit() for d in os.listdir(os.path.join(demo, "checkpoints"))):
    logging.info("init_from=pretrain_demo: using the pretraining run in %s", demo)
    return demo
  from neuript_jax.configs import pretrain as pretrain_config
  from neuript_jax.train import pretrain
  target = os.path.join(workdir, "pretrain")
  logging.info("init_from=pretrain_demo: no pretraining run in %s; running the pretraining "
               "demo into %s first", demo, target)
  pretrain.train(pretrain_config.get_config(), target)
  return target


# -- steps ------------------------------------------------------------------------------------

def make_loss(config, model_cfg, cls_num):
  if config.loss == "bal_bce":
    cls_num = jnp.asarray(np.maximum(cls_num, 1), jnp.float32)
    return lambda logits, y: losses.bal_bce(logits, y, cls_num, config.bal_bce_k,
                                            config.label_smoothing)
  if config.loss == "cross_entropy":
    return lambda logits, y: losses.cross_entropy(logits, y)
  raise ValueError(f"config.loss must be bal_bce or cross_entropy, got {config.loss!r}")


def is_head(path) -> bool:
  return getattr(path[0], "key", None) == HEAD_KEY


def make_train_step(model_cfg, tx, schedule, loss_of, aux_weight: float, freeze_steps: int):
  """train_step(state, {"x", "label"}) -> (state, metrics). While step < freeze_steps only the
  head learns: encoder gradients and updates are zeroed (so are their AdamW moments' inputs)."""
  model = Stage2Model(model_cfg)

  def train_step(state, batch):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    k_drop, k_noise = jax.random.split(key)

    def loss_fn(params):
      logits, aux = model.apply({"params": params}, batch["x"], False,
                                rngs={"dropout": k_drop, "gate_noise": k_noise})
      cls = loss_of(logits, batch["label"])
      return cls + aux_weight * aux, (cls, aux, logits)

    (loss, (cls, aux, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    frozen = state["step"] < freeze_steps
    mask = lambda tree: jax.tree_util.tree_map_with_path(
        lambda p, g: g if is_head(p) else jnp.where(frozen, jnp.zeros_like(g), g), tree)
    grads = mask(grads)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], mask(updates))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
    if logits.shape[-1] == 1:
      pred = (logits[:, 0] > 0).astype(jnp.int32)
    else:
      pred = jnp.argmax(logits, -1).astype(jnp.int32)
    new_state = {"params": keep(params, state["params"]),
                 "opt_state": keep(opt_state, state["opt_state"]),
                 "step": state["step"] + 1, "rng": state["rng"]}
    metrics = {"loss": loss, "cls_loss": cls, "aux_loss": aux, "grad_norm": grad_norm,
               "lr": schedule(state["step"]), "frozen": frozen.astype(jnp.int32),
               "train_acc": jnp.mean((pred == batch["label"]).astype(jnp.float32)),
               "finite": finite.astype(jnp.int32)}
    return new_state, metrics

  return train_step


def make_predict(model_cfg):
  model = Stage2Model(model_cfg)
  return lambda params, x: model.apply({"params": params}, x, True)[0].astype(jnp.float32)


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


def prediction_metrics(labels, logits, num_classes) -> dict:
  """compute_metrics plus "nll"."""
  m = metrics_lib.compute_metrics(labels, logits, num_classes)
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


# -- state ------------------------------------------------------------------------------------

def setup(config, model_cfg, mesh, rules, total_steps: int, freeze_steps: int, cls_num,
          init_encoder=None):
  """Sharded initial state, jitted train step and jitted predict function."""
  import flax.linen as nn

  tx, schedule = optim.make_optimizer(config.optim, total_steps)
  model = Stage2Model(model_cfg)
  key = jax.random.key(config.seed)
  boxed = jax.eval_shape(lambda: model.init({"params": key}, *dummy_inputs(model_cfg, 2)))
  p_shard = mesh_lib.param_shardings(boxed["params"], mesh, rules)
  init_fn = jax.jit(lambda k: nn.unbox(model.init({"params": k},
                                                  *dummy_inputs(model_cfg, 2))["params"]),
                    out_shardings=p_shard)
  params = init_fn(key)
  if init_encoder is not None:
    params = flax.core.unfreeze(params)
    for k in ENCODER_KEYS:
      params[k] = jax.device_put(jax.tree_util.tree_map(jnp.asarray, init_encoder[k]),
                                 p_shard[k])
  # Optimizer moments follow their parameter's sharding; counters, step and rng replicated.
  state, state_shard = pretrain.initial_state(tx, params, p_shard, mesh, config.seed + 1)
  b_shard = {"x": mesh_lib.batch_sharding(mesh, 3), "label": mesh_lib.batch_sharding(mesh, 1)}
  loss_of = make_loss(config, model_cfg, cls_num)
  train_step = jax.jit(make_train_step(model_cfg, tx, schedule, loss_of, config.aux_weight,
                                       freeze_steps),
                       in_shardings=(state_shard, b_shard),
                       out_shardings=(state_shard, mesh_lib.replicated(mesh)),
                       donate_argnums=(0,))
  predict = jax.jit(make_predict(model_cfg),
                    in_shardings=(state_shard["params"], mesh_lib.batch_sharding(mesh, 3)),
                    out_shardings=mesh_lib.replicated(mesh))
  return state, train_step, predict


# -- the loop ---------------------------------------------------------------------------------

def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=str)
    f.write("\n")
  os.replace(tmp, path)


def train(config, workdir: str) -> dict:
  """Fine-tune (or resume) in `workdir`; returns the results dict written to results.json."""
  os.makedirs(workdir, exist_ok=True)
  results_path = os.path.join(workdir, RESULTS)
  if os.path.exists(results_path):
    logging.info("%s exists: this run is finished (delete it, or use another workdir, to "
                 "run again)", results_path)
    with open(results_path) as f:
      return json.load(f)

  model_cfg = to_model_config(config.model)
  train_data, val_data, test_data = data_configs(config, workdir)
  summary = pipeline.dataset_summary(train_data)
  logging.info("data: %s", json.dumps(summary, default=str))
  d, t = summary["channels"], summary["window_len"]
  if d != model_cfg.data_dim or t != model_cfg.T:
    raise ValueError(f"data sources {[s['path'] for s in summary['sources']]} give {d} channels "
                     f"x {t} samples but the model expects {model_cfg.data_dim} x {model_cfg.T} "
                     "(set --config.model.T, --config.data.window_len, --config.model.data or "
                     "--config.model.channels)")
  names = summary["sources"][0].get("channel_names")
  model_names = tuple("Fp1-F3" if n == "Fp2-F3" else n for n in model_cfg.channel_names)
  if names and tuple("Fp1-F3" if n == "Fp2-F3" else n for n in names) != model_names:
    logging.warning("data channels %s differ from the model's %s (positions and IILP groups "
                    "follow the model config)", names, model_cfg.channel_names)
  cls_num = class_counts(train_data, model_cfg.num_classes)
  logging.info("training class counts: %s", cls_num.tolist())
  if cls_num.sum() != summary["n_records"]:
    raise ValueError(f"the {train_data.split!r} split has {summary['n_records']} records but "
                     f"{int(cls_num.sum())} labelled ones: convert it with a label_source")
  bs = int(config.data.global_batch_size)
  steps_per_epoch = summary["n_records"] // bs
  if steps_per_epoch < 1:
    raise ValueError(f"{summary['n_records']} training records < batch size {bs}")
  total_steps = int(config.total_steps) or int(config.epochs) * steps_per_epoch
  freeze_steps = int(config.freeze_epochs) * steps_per_epoch
  eval_every = int(config.eval_every) or steps_per_epoch
  ckpt_every = int(config.checkpoint_every) or eval_every
  selection_score({k: 0.0 for k in metrics_lib.METRIC_NAMES + ("nll",)}, config.select_metric)

  mesh = mesh_lib.make_mesh([config.mesh.data, config.mesh.fsdp, config.mesh.expert,
                             config.mesh.tensor])
  rules = tuple(config.logical_axis_rules or mesh_lib.DEFAULT_RULES)
  template = param_shapes(model_cfg)
  checkpointer = ckpt_lib.Checkpointer(workdir, config.keep_checkpoints, config.async_checkpoint)
  init_encoder, init_source = None, ""
  if checkpointer.latest_step() is None and config.init_from:
    init_source = resolve_init_from(config, workdir)
    init_encoder = load_encoder_params(init_source, model_cfg, template)
    logging.info("initialised the encoder from %s (%d tensors; head and optimizer fresh)",
                 init_source, len(jax.tree_util.tree_leaves(init_encoder)))
  elif not config.init_from:
    logging.info("init_from is empty: training from scratch")
  state, train_step, predict = setup(config, model_cfg, mesh, rules, total_steps, freeze_steps,
                                     cls_num, init_encoder)
  if init_encoder is not None or not os.path.exists(os.path.join(workdir, RUN_CONFIG)):
    _write_json(os.path.join(workdir, RUN_CONFIG), {
        "config": config.to_dict(), "model": model_cfg.to_dict(), "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch, "freeze_steps": freeze_steps,
        "class_counts": cls_num.tolist(), "init_from": init_source or config.init_from})

  it = pipeline.make_iterator(train_data)
  sel = {"best_score": None, "best_step": None, "since_best": 0, "stopped": False,
         "init_from": init_source}
  start = 0
  if checkpointer.latest_step() is not None:
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    state, saved = checkpointer.restore(abstract)
    it.set_state(pipeline.iterator_state_from_json(saved["iterator"]))
    sel = saved["selection"]
    start = int(jax.device_get(state["step"]))
    logging.info("resumed from %s at step %d", checkpointer.latest.directory, start)

  writer = writer_lib.MetricWriter(workdir, total_steps)
  stop = {"sigterm": False}
  previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))

  def saved_state():
    return {"iterator": pipeline.iterator_state_to_json(it.get_state()), "selection": sel}

  def validate(done: int) -> None:
    m = split_metrics(predict, state["params"], val_data, mesh, config.eval_batch_size,
                      model_cfg.num_classes)
    writer.write(done, {f"val_{k}": v for k, v in m.items()
                        if k in metrics_lib.METRIC_NAMES + ("nll",)})
    score = selection_score(m, config.select_metric)
    logging.info("validation at step %d: %s  nll %.4f", done, metrics_lib.format_metrics(m),
                 m["nll"])
    if sel["best_score"] is None or score > sel["best_score"]:
      sel.update(best_score=score, best_step=done, since_best=0)
      if done not in checkpointer.best.all_steps():   # a rerun after a kill may have it
        checkpointer.save_best(done, state, saved_state(), -score)
        checkpointer.best.wait_until_finished()       # best on disk before `latest` names it
    else:
      sel["since_best"] += 1
      if config.early_stopping_patience and sel["since_best"] >= config.early_stopping_patience:
        logging.info("early stopping at step %d: %d validations without improvement of %s "
                     "(best %.4f at step %d)", done, sel["since_best"], config.select_metric,
                     sel["best_score"], sel["best_step"])
        sel["stopped"] = True

  pending = []
  clock = [start, time.time()]
  finished = sel["stopped"] or start >= total_steps
  try:
    for step in range(start, total_steps):
      if sel["stopped"]:
        break
      batch = next(it)
      gb = pipeline.to_global_batch({"x": batch["x"], "label": batch["label"]}, mesh)
      state, m = train_step(state, gb)
      pending.append((step, m))
      done = step + 1
      if done % config.log_every == 0 or done == total_steps or done % eval_every == 0 \
          or stop["sigterm"]:
        for s, pm in jax.device_get(pending):
          if not pm["finite"]:
            if config.nonfinite == "stop":
              raise NonFiniteError(f"step {s}: non-finite loss or gradient; stopping")
            logging.warning("step %d: non-finite loss or gradient; update skipped", s)
        last = {k: float(v) for k, v in jax.device_get(pending[-1][1]).items()}
        pending = []
        now = time.time()
        sps = (done - clock[0]) / max(now - clock[1], 1e-9)
        clock[:] = [done, now]
        logging.info("step %d/%d (epoch %.2f)  loss %.4f  cls %.4f  aux %.4f  train_acc %.3f  "
                     "lr %.2e  |g| %.3f%s  %.2f steps/s", done, total_steps,
                     done / steps_per_epoch, last["loss"], last["cls_loss"], last["aux_loss"],
                     last["train_acc"], last["lr"], last["grad_norm"],
                     "  (encoder frozen)" if last["frozen"] else "", sps)
        writer.write(done, {**last, "steps_per_s": sps, "samples_per_s": sps * bs,
                            "epoch": done / steps_per_epoch})
      if done % eval_every == 0 or done == total_steps:
        validate(done)
      if done % ckpt_every == 0 or done == total_steps or sel["stopped"]:
        checkpointer.save(done, state, saved_state(), force=sel["stopped"])
      if stop["sigterm"]:
        logging.warning("SIGTERM: saving step %d and exiting", done)
        checkpointer.save(done, state, saved_state(), force=True)
        break
    else:
      finished = True
    finished = finished or sel["stopped"]
  finally:
    checkpointer.wait()
    writer.close()
    signal.signal(signal.SIGTERM, previous)

  if not finished:
    checkpointer.close()
    return {}
  try:
    if sel["best_step"] is None:
      raise RuntimeError("no validation was run (total_steps < eval_every?)")
    best = restore_state(checkpointer.best, sel["best_step"], state)["params"]
  finally:
    checkpointer.close()
  logging.info("selected step %d by validation %s; evaluating it on the %s split (once)",
               sel["best_step"], config.select_metric, config.test_split)
  preds = {name: predict_split(predict, best, data, mesh, config.eval_batch_size)
           for name, data in (("val", val_data), ("test", test_data))}
  val_m, test_m = (prediction_metrics(*preds[k], model_cfg.num_classes) for k in ("val", "test"))
  results = {
      "validation": val_m, "test": test_m, "selected_step": sel["best_step"],
      "select_metric": config.select_metric, "steps_trained": int(jax.device_get(state["step"])),
      "total_steps": total_steps, "stopped_early": bool(sel["stopped"]),
      "num_classes": model_cfg.num_classes,
      "paper_metrics": list(metrics_lib.paper_metrics(model_cfg.num_classes)),
      "init_from": sel.get("init_from") or config.init_from,
      "data": [s["path"] for s in summary["sources"]],
      "checkpoint": os.path.join(os.path.abspath(workdir), "best", str(sel["best_step"])),
  }
  _write_json(results_path, results)
  logging.info("test (%s): %s", config.test_split, metrics_lib.format_metrics(test_m))
  write_run_plots(workdir, preds, model_cfg.num_classes, label_names(train_data))
  return results


def write_run_plots(workdir: str, preds: dict, num_classes: int, class_names=None) -> None:
  """confusion_matrix_{val,test}.png, roc_test.png, pr_test.png and curves.png (metrics.jsonl)
  in `workdir`; preds: {"val"/"test": (labels, logits)} of the selected checkpoint."""
  from neuript_jax.evaluation import plots
  if class_names is not None and len(class_names) != max(num_classes, 2):
    class_names = None
  for split, (labels, logits) in preds.items():
    plots.write_prediction_plots(workdir, split, labels, logits, num_classes, class_names,
                                 curves=split == "test")
  plots.plot_training_curves(os.path.join(workdir, "metrics.jsonl"),
                             os.path.join(workdir, "curves.png"), os.path.basename(workdir))
  logging.info("plots written to %s", workdir)


def restore_state(manager, step: int, like_state):
  """The train state of `step` in an orbax manager (e.g. `best`), placed like `like_state`."""
  import orbax.checkpoint as ocp
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like_state)
  out = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
  return out["state"]
