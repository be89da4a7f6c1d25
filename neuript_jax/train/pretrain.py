"""The pretraining loop (stage 1, AAMP), read top to bottom: data, mesh, state, resume, steps,
eval, logging, checkpoints. `launch/pretrain.py` is a thin absl main over `train()`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from neuript_jax import convert
from neuript_jax.configs.common import to_model_config
from neuript_jax.data import pipeline
from neuript_jax.model import build_model, dummy_inputs
from neuript_jax.train import checkpoint as ckpt_lib
from neuript_jax.train import mesh as mesh_lib
from neuript_jax.train import metrics as metrics_lib
from neuript_jax.train import optim, step as step_lib


class NonFiniteError(RuntimeError):
  pass


def prepare_synthetic(workdir: str, cfg) -> str:
  """Write the synthetic corpus and convert it with pretrain_tcp20 (once). Returns shard dir."""
  from data_prep import convert as convert_lib
  from data_prep import synthetic
  from data_prep.recipes import get_recipe

  root = Path(workdir) / "data"
  shards = root / "pretrain_tcp20"
  if (shards / "manifest.json").exists():
    return str(shards)
  raw = root / "synthetic"
  if not raw.exists():
    logging.info("writing the synthetic corpus to %s", raw)
    synthetic.write_corpus(raw, n_subjects=cfg.n_subjects, recordings=cfg.recordings,
                           minutes=cfg.minutes, seed=cfg.seed)
  logging.info("converting it with the pretrain_tcp20 recipe into %s", shards)
  recipe = get_recipe("pretrain_tcp20", params={"val_fraction": cfg.val_fraction})
  convert_lib.convert(str(raw), recipe, shards, workers=1)
  return str(shards)


def data_configs(config, workdir: str):
  train_cfg = config.data.copy_and_resolve_references()
  if not train_cfg.sources:
    train_cfg.sources = ((prepare_synthetic(workdir, config.synthetic), 1.0),)
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


def opt_state_shardings(tx, params, p_shard, mesh):
  """Optimizer-state shardings: moments follow their parameter, counters are replicated."""
  import optax
  rep = mesh_lib.replicated(mesh)
  return optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, params), p_shard,
                               transform_non_params=lambda _: rep)


def initial_state(tx, params, p_shard, mesh, rng_seed: int):
  """(state, state shardings) for sharded params: fresh optimizer state (moments sharded like
  their parameter), step 0, and the RNG key data; step and rng replicated."""
  opt_shard = opt_state_shardings(tx, params, p_shard, mesh)
  opt_state = jax.jit(tx.init, out_shardings=opt_shard)(params)
  rep = mesh_lib.replicated(mesh)
  state = {"params": params, "opt_state": opt_state, "step": jnp.zeros((), jnp.int32),
           "rng": jax.random.key_data(jax.random.key(rng_seed))}
  state_shard = {"params": p_shard, "opt_state": opt_shard, "step": rep, "rng": rep}
  return jax.device_put(state, state_shard), state_shard


def setup(config, model_cfg, mesh, rules=mesh_lib.DEFAULT_RULES, init_params=None):
  """Sharded initial state and the jitted, donated train step for `mesh`.

  Returns (state, train_step, tx, schedule); train_step(state, {"x": [B, T, D]}) ->
  (state, metrics). Params follow the logical-axis rules; optimizer moments inherit them.
  """
  import flax.linen as nn

  tx, schedule = optim.make_optimizer(config.optim, config.total_steps)
  model = build_model(model_cfg, 1)
  key = jax.random.key(config.seed)
  boxed = jax.eval_shape(lambda: model.init({"params": key}, *dummy_inputs(model_cfg, 1)))
  p_shard = mesh_lib.param_shardings(boxed["params"], mesh, rules)
  if init_params is None:
    init_fn = jax.jit(lambda k: nn.unbox(model.init({"params": k},
                                                    *dummy_inputs(model_cfg, 1))["params"]),
                      out_shardings=p_shard)
    params = init_fn(key)
  else:
    params = jax.device_put(jax.tree_util.tree_map(jnp.asarray, init_params), p_shard)
  state, state_shard = initial_state(tx, params, p_shard, mesh, config.seed + 1)
  b_shard = {"x": mesh_lib.batch_sharding(mesh, 3)}
  train_step = jax.jit(step_lib.make_train_step(model_cfg, config.masking, tx, schedule,
                                                config.loss_p, config.aux_weight),
                       in_shardings=(state_shard, b_shard),
                       out_shardings=(state_shard, mesh_lib.replicated(mesh)),
                       donate_argnums=(0,))
  return state, train_step, tx, schedule


def train(config, workdir: str) -> dict:
  """Run (or resume) pretraining in `workdir`; returns the last logged metrics."""
  os.makedirs(workdir, exist_ok=True)
  model_cfg = to_model_config(config.model)
  train_data, eval_data = data_configs(config, workdir)
  summary = pipeline.dataset_summary(train_data)
  try:
    pipeline.dataset_summary(eval_data)
  except pipeline.DataConfigError as e:
    logging.warning("no held-out evaluation: %s", e)
    eval_data = None
  logging.info("data: %s", json.dumps(summary, default=str))
  d, t = summary["channels"], summary["window_len"]
  if d != model_cfg.data_dim or t != model_cfg.T:
    raise ValueError(f"data sources {[s['path'] for s in summary['sources']]} give {d} channels "
                     f"x {t} samples but the model expects {model_cfg.data_dim} x {model_cfg.T} "
                     "(set --config.model.T, --config.data.window_len, --config.model.data)")

  mesh = mesh_lib.make_mesh([config.mesh.data, config.mesh.fsdp, config.mesh.expert,
                             config.mesh.tensor])
  rules = tuple(config.logical_axis_rules or mesh_lib.DEFAULT_RULES)
  logging.info("mesh %s on %d devices (%d processes)", dict(mesh.shape), jax.device_count(),
               jax.process_count())
  init = None
  if config.init_from:
    abstract = jax.eval_shape(lambda: __import__("flax").linen.unbox(build_model(
        model_cfg, 1).init({"params": jax.random.key(0)}, *dummy_inputs(model_cfg, 1))["params"]))
    init = load_init_params(config.init_from, model_cfg, abstract)
    logging.info("initialising params from %s (optimizer state fresh)", config.init_from)
  state, train_step, _, _ = setup(config, model_cfg, mesh, rules, init_params=init)
  checkpointer = ckpt_lib.Checkpointer(workdir, config.keep_checkpoints, config.async_checkpoint)
  it = pipeline.make_iterator(train_data)
  start = 0
  if checkpointer.latest_step() is not None:
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    state, data_state = checkpointer.restore(abstract)
    it.set_state(pipeline.iterator_state_from_json(data_state))
    start = int(jax.device_get(state["step"]))
    logging.info("resumed from %s at step %d", checkpointer.latest.directory, start)

  eval_step = jax.jit(step_lib.make_eval_step(model_cfg, config.masking, config.loss_p))
  writer = metrics_lib.MetricWriter(workdir, config.total_steps)

  stop = {"sigterm": False}
  previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))

  def save(step_now: int, force: bool = False):
    checkpointer.save(step_now, state, pipeline.iterator_state_to_json(it.get_state()), force)

  pending, last = [], {}
  writer.progress(start, config.data.global_batch_size, {})
  try:
    for step in range(start, config.total_steps):
      batch = next(it)
      gb = pipeline.to_global_batch({"x": batch["x"]}, mesh)
      state, m = train_step(state, gb)
      pending.append((step, m))
      done = step + 1
      boundary = (done % config.log_every == 0 or done == config.total_steps
                  or done % config.checkpoint_every == 0 or stop["sigterm"])
      if boundary:
        for s, pm in jax.device_get(pending):
          if not pm["finite"]:
            if config.nonfinite == "stop":
              raise NonFiniteError(f"step {s}: non-finite loss or gradient; stopping (params "
                                   "of the last good step are in the last checkpoint)")
            logging.warning("step %d: non-finite loss or gradient; update skipped", s)
        last = {k: float(v) for k, v in jax.device_get(pending[-1][1]).items()}
        pending = []
        rates = writer.progress(done, config.data.global_batch_size, last)
        writer.write(done, {**last, **rates})
      if eval_data is not None and (done % config.eval_every == 0
                                    or done == config.total_steps):
        ev = evaluate(eval_step, state["params"], eval_data, config.eval_batches, mesh,
                      config.seed)
        writer.write(done, {f"eval_{k}": v for k, v in ev.items()})
        logging.info("eval at step %d: AAMP rec %.4f, random-mask rec %.4f", done,
                     ev["rec_loss_aamp"], ev["rec_loss_random"])
        checkpointer.save_best(done, state, pipeline.iterator_state_to_json(it.get_state()),
                               ev["rec_loss_aamp"])
      if done % config.plot_every == 0 or done == config.total_steps:
        k = jax.random.fold_in(jax.random.key(config.seed + 2), done)
        _, (pred, point) = eval_step(state["params"], gb, k)
        metrics_lib.plot_reconstruction(
            os.path.join(workdir, "plots", f"step_{done:07d}.png"), gb["x"], pred, point,
            model_cfg.channel_names, step=done)
      if done % config.checkpoint_every == 0 or done == config.total_steps:
        save(done)
      if stop["sigterm"]:
        logging.warning("SIGTERM: saving step %d and exiting", done)
        save(done, force=True)
        break
  finally:
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    signal.signal(signal.SIGTERM, previous)
  return last


def evaluate(eval_step, params, data_cfg, n_batches: int, mesh, seed: int) -> dict:
  """Mean eval reconstruction losses (AAMP and random masks) over the first n_batches."""
  it = pipeline.make_iterator(data_cfg)
  sums = {}
  for i in range(n_batches):
    gb = pipeline.to_global_batch({"x": next(it)["x"]}, mesh)
    out = jax.device_get(eval_step(params, gb, jax.random.fold_in(jax.random.key(seed + 3), i))[0])
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(v)
  return {k: v / n_batches for k, v in sums.items()}


def aot_compile(config, model_cfg, mesh, rules=mesh_lib.DEFAULT_RULES):
  """Ahead-of-time compile the train step for `mesh` from shapes only (no parameters are
  materialised), e.g. the paper preset on a simulated pod. Returns the jax Compiled object;
  `.memory_analysis()` gives per-device bytes."""
  import flax.linen as nn

  tx, schedule = optim.make_optimizer(config.optim, config.total_steps)
  model = build_model(model_cfg, 1)
  boxed = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)},
                                            *dummy_inputs(model_cfg, 1)))
  p_shard = mesh_lib.param_shardings(boxed["params"], mesh, rules)
  params = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                  nn.unbox(boxed["params"]), p_shard)
  rep = mesh_lib.replicated(mesh)
  opt_shard = opt_state_shardings(tx, params, p_shard, mesh)
  opt_state = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      jax.eval_shape(tx.init, params), opt_shard)
  state = {"params": params, "opt_state": opt_state,
           "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
           "rng": jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)}
  state_shard = jax.tree_util.tree_map(lambda x: x.sharding, state)
  batch = {"x": jax.ShapeDtypeStruct((config.data.global_batch_size, model_cfg.T,
                                      model_cfg.data_dim), jnp.float32,
                                     sharding=mesh_lib.batch_sharding(mesh, 3))}
  step = jax.jit(step_lib.make_train_step(model_cfg, config.masking, tx, schedule,
                                          config.loss_p, config.aux_weight),
                 in_shardings=(state_shard, {"x": batch["x"].sharding}),
                 out_shardings=(state_shard, rep), donate_argnums=(0,))
  return step.lower(state, batch).compile()
