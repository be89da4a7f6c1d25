"""The pretraining loop (stage 1, AAMP), read top to bottom: data, mesh, state, resume, steps,
eval, logging, checkpoints. `launch/pretrain.py` is a thin absl main over `train()`.

Intervals (`log_every`, `eval_every`, `checkpoint_every`, `plot_every`): every N steps and
after the last one; their 0 meanings and every other rule are checked before anything is
compiled (train/validate.py). With several processes every process runs
this loop on its share of each global batch (the data pipeline's per-host slices); process 0
alone writes metrics.jsonl, TensorBoard events and plots; every process takes part in the
orbax checkpoints.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging

from neuript_jax import convert
from neuript_jax.configs.common import to_model_config
from neuript_jax.data import pipeline
from neuript_jax.files import atomic_write_text
from neuript_jax.model import build_model, dummy_inputs
from neuript_jax.train import checkpoint as ckpt_lib
from neuript_jax.train import loop
from neuript_jax.train import mesh as mesh_lib
from neuript_jax.train import metrics as metrics_lib
from neuript_jax.train import optim, step as step_lib
from neuript_jax.train import validate

NonFiniteError = loop.NonFiniteError
RUN_CONFIG = "pretrain_config.json"   # the config as run (process 0)


def data_configs(config):
  """(train, held-out eval) pipeline configs; config.data.sources must be set (the launcher
  fills it with the synthetic demo corpus when the config has none)."""
  if not config.data.sources:
    raise ValueError("config.data.sources is empty: give data_prep shard folders, e.g. "
                     "--config.data.sources=\"(('/data/tuh_tcp20', 1.0),)\" (launch.pretrain "
                     "writes the synthetic demo corpus when it is empty)")
  train_cfg = config.data.copy_and_resolve_references()
  eval_cfg = train_cfg.copy_and_resolve_references()
  eval_cfg.split = config.eval_split
  eval_cfg.shuffle = False
  eval_cfg.num_epochs = None
  eval_cfg.worker_count = 0
  return train_cfg, eval_cfg


def load_init_params(path: str, model_cfg, abstract_params):
  """--config.init_from: an orbax checkpoint (ours) or a reference .pth/.pt/.npz."""
  if path.endswith((".pth", ".pt", ".npz")):
    return convert.from_reference(convert.load_state_dict(path), model_cfg, stage=1)
  params = ckpt_lib.load_params(path)
  want = {jax.tree_util.keystr(p): x.shape
          for p, x in jax.tree_util.tree_leaves_with_path(abstract_params)}
  got = {jax.tree_util.keystr(p): np.shape(x)
         for p, x in jax.tree_util.tree_leaves_with_path(params)}
  bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
  if bad:
    raise ValueError(f"init_from={path}: {len(bad)} parameters do not fit the model config: "
                     + ", ".join(f"{k} (checkpoint {got.get(k)}, model {want.get(k)})"
                                 for k in bad[:20]))
  return params


def _train_step(config, model_cfg, tx, schedule, state_shard, mesh):
  step = step_lib.make_pretrain_step(model_cfg, config.masking, tx, schedule, config.loss_p,
                                     config.aux_weight)
  return jax.jit(loop.traced_under(mesh, step),
                 in_shardings=(state_shard, {"x": mesh_lib.batch_sharding(mesh, 3)}),
                 out_shardings=(state_shard, mesh_lib.replicated(mesh)), donate_argnums=(0,))


def setup(config, model_cfg, mesh, rules=mesh_lib.DEFAULT_RULES, init_params=None):
  """Sharded initial state and the jitted, donated train step for `mesh`.

  Returns (state, train_step, tx, schedule); train_step(state, {"x": [B, T, D]}) ->
  (state, metrics). Params follow the logical-axis rules; optimizer moments inherit them.
  """
  tx, schedule = optim.make_optimizer(config.optim, config.total_steps)
  model, args = build_model(model_cfg, 1), dummy_inputs(model_cfg, 1)
  params, p_shard = loop.init_params(model, args, mesh, rules, loop.rng_key(config.seed, "init"))
  if init_params is not None:
    params = loop.place(init_params, p_shard)
  state, state_shard = loop.initial_state(tx, params, p_shard, mesh,
                                          loop.rng_key(config.seed, "train"))
  return state, _train_step(config, model_cfg, tx, schedule, state_shard, mesh), tx, schedule


def aot_compile(config, model_cfg, mesh, rules=mesh_lib.DEFAULT_RULES):
  """Ahead-of-time compile the train step for `mesh` from shapes only (no parameters are
  materialised), e.g. the paper preset on a simulated pod or compile-only TPU devices.
  Returns the jax Compiled object (`.memory_analysis()`, `.cost_analysis()`)."""
  tx, schedule = optim.make_optimizer(config.optim, config.total_steps)
  state, state_shard = loop.abstract_state(tx, build_model(model_cfg, 1),
                                           dummy_inputs(model_cfg, 1), mesh, rules)
  batch = {"x": jax.ShapeDtypeStruct((config.data.global_batch_size, model_cfg.T,
                                      model_cfg.data_dim), np.float32,
                                     sharding=mesh_lib.batch_sharding(mesh, 3))}
  return _train_step(config, model_cfg, tx, schedule, state_shard, mesh).lower(
      state, batch).compile()


def evaluate(eval_step, params, data_cfg, n_batches: int, mesh, seed: int) -> dict:
  """Mean eval reconstruction losses (AAMP and random masks) over the first n_batches."""
  it = pipeline.make_iterator(data_cfg)
  sums = {}
  key = loop.rng_key(seed, "eval")
  for i in range(n_batches):
    gb = pipeline.to_global_batch({"x": next(it)["x"]}, mesh)
    out = jax.device_get(eval_step(params, gb, jax.random.fold_in(key, i))[0])
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(v)
  return {k: v / n_batches for k, v in sums.items()}


def plot(workdir, eval_step, params, gb, done, model_cfg, seed):
  """Reconstruction plot of one global batch (gathered from every process; process 0 draws)."""
  from jax.experimental import multihost_utils
  k = jax.random.fold_in(loop.rng_key(seed, "plot"), done)
  _, (pred, point) = eval_step(params, gb, k)
  x, pred, point = (multihost_utils.process_allgather(a, tiled=True) if jax.process_count() > 1
                    else jax.device_get(a) for a in (gb["x"], pred, point))
  if loop.is_writer():
    metrics_lib.plot_reconstruction(os.path.join(workdir, "plots", f"step_{done:07d}.png"),
                                    x, pred, point, model_cfg.channel_names, step=done)


def train(config, workdir: str) -> dict:
  """Run (or resume) pretraining in `workdir`; returns the last logged metrics and "step", the
  number of steps done (less than `total_steps` when SIGTERM stopped it)."""
  os.makedirs(workdir, exist_ok=True)
  model_cfg = to_model_config(config.model)
  train_data, eval_data = data_configs(config)
  summary = pipeline.dataset_summary(train_data)
  plan = validate.check_pretrain(config, n_devices=jax.device_count(),
                                 n_processes=jax.process_count(), data_summary=summary)
  try:
    pipeline.dataset_summary(eval_data)
  except pipeline.DataConfigError as e:
    logging.warning("no held-out evaluation: %s", e)
    eval_data = None
  logging.info("data: %d records of %d channels x %d samples from %s", summary["n_records"],
               summary["channels"], summary["window_len"],
               ", ".join(s["path"] for s in summary["sources"]))
  loop.check_data_shape(summary, model_cfg)

  mesh = loop.make_mesh(config)
  logging.info("mesh %s on %d devices (%d processes)", dict(mesh.shape), jax.device_count(),
               jax.process_count())
  if loop.is_writer():
    atomic_write_text(os.path.join(workdir, RUN_CONFIG),
                      json.dumps({"config": config.to_dict(), "model": model_cfg.to_dict()},
                                 indent=1, default=str) + "\n")
  init = None
  if config.init_from:
    abstract = loop.abstract_params(build_model(model_cfg, 1), dummy_inputs(model_cfg, 1))
    init = load_init_params(config.init_from, model_cfg, abstract)
    logging.info("initialising params from %s (optimizer state fresh)", config.init_from)
  state, train_step, _, _ = setup(config, model_cfg, mesh, loop.axis_rules(config), init)
  train_step = loop.compiled_together(train_step, "pretrain_step")
  loop.barrier("checkpointer")             # orbax syncs the processes (gloo) right away
  checkpointer = ckpt_lib.Checkpointer(workdir, config.keep_checkpoints, config.async_checkpoint)
  it = pipeline.make_iterator(train_data)
  state, data_state, start = loop.resume(checkpointer, state)
  if data_state is not None:
    it.set_state(pipeline.iterator_state_from_json(data_state))

  eval_fn = step_lib.make_pretrain_eval_step(model_cfg, config.masking, config.loss_p)
  eval_step = loop.compiled_together(jax.jit(loop.traced_under(mesh, eval_fn)), "pretrain_eval")
  writer = metrics_lib.MetricWriter(workdir, config.total_steps, enabled=loop.is_writer())
  total, gbs = plan["total_steps"], int(config.data.global_batch_size)
  log_every, eval_every = plan["log_every"], plan["eval_every"]
  ckpt_every, plot_every = plan["checkpoint_every"], plan["plot_every"]

  last_saved = [start]                     # the resumed step is on disk already

  def save(done: int, force: bool = False):
    if done != last_saved[0]:              # e.g. SIGTERM right after a periodic checkpoint
      checkpointer.save(done, state, pipeline.iterator_state_to_json(it.get_state()), force)
      last_saved[0] = done

  pending, last, done = [], {}, start
  writer.start(start)
  try:
    with loop.Preemption() as preempt:
      for step in range(start, total):
        batch = next(it)
        gb = pipeline.to_global_batch({"x": batch["x"]}, mesh)
        state, m = train_step(state, gb)
        pending.append((step, m))
        done = step + 1
        if (loop.every(done, log_every, total) or loop.every(done, ckpt_every, total)
            or preempt.requested):
          last = loop.flush(pending, config.nonfinite)
          writer.write(done, {**last, **writer.progress(done, gbs, last)})
        if eval_data is not None and loop.every(done, eval_every, total):
          ev = evaluate(eval_step, state["params"], eval_data, config.eval_batches, mesh,
                        config.seed)
          writer.write(done, {f"eval_{k}": v for k, v in ev.items()})
          logging.info("eval at step %d: AAMP rec %.4f, random-mask rec %.4f", done,
                       ev["rec_loss_aamp"], ev["rec_loss_random"])
          checkpointer.save_best(done, state, pipeline.iterator_state_to_json(it.get_state()),
                                 ev["rec_loss_aamp"])
        if loop.every(done, plot_every, total):
          plot(workdir, eval_step, state["params"], gb, done, model_cfg, config.seed)
        if loop.every(done, ckpt_every, total):
          save(done)
        if preempt.requested:
          logging.warning("SIGTERM: saving step %d and exiting", done)
          save(done, force=True)
          break
  finally:
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  return {**last, "step": done}

