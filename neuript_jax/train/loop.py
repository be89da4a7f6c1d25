"""What the pretraining and the fine-tuning loops share.

- RNG streams: one config seed, a fixed offset per use (`rng_key`).
- Mesh from config, logical-axis rules, the data-shape check; model functions traced with
  the mesh as their context (`traced_under`).
- Sharded state: params initialised straight into their shardings (eval_shape + jit),
  optimizer moments sharded like their parameter; the abstract state for AOT compiles and for
  restoring a checkpoint onto any mesh.
- Resume from the latest checkpoint; SIGTERM as a "save and stop" request (`Preemption`).
- The non-finite policy applied to the metrics of the steps since the last flush (`flush`).
- Files that several processes need (`prepare_once`): one process writes, the others wait.

State is a plain dict pytree: {"params", "opt_state", "step" (int32), "rng" (uint32 key data)}.
"""

from __future__ import annotations

import functools
import signal
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from neuript_jax.train import mesh as mesh_lib

# Offsets from config.seed of every random stream of a run. "train" seeds the state's RNG,
# from which step s draws fold_in(rng, s) (masks, dropout, router noise).
RNG_STREAMS = {"init": 0, "train": 1, "plot": 2, "eval": 3}


class NonFiniteError(RuntimeError):
  """A step's loss or gradient norm was not finite and config.nonfinite == "stop"."""


def rng_key(seed: int, stream: str) -> jax.Array:
  """The key of one random stream of a run (RNG_STREAMS)."""
  return jax.random.key(int(seed) + RNG_STREAMS[stream])


# -- mesh and data ------------------------------------------------------------------------------

def make_mesh(config):
  """The (data, fsdp, expert, tensor) mesh of config.mesh over all devices."""
  m = config.mesh
  return mesh_lib.make_mesh([m.data, m.fsdp, m.expert, m.tensor])


def traced_under(mesh, fn: Callable) -> Callable:
  """fn traced with `mesh` as the context mesh (jax.sharding.use_abstract_mesh), for jax.jit.

  The model's per-device code reads the mesh it is compiled for from that context
  (model/mesh_axes.py): activations kept on their batch shard, PMoE routing groups per batch
  shard, Pallas kernels in a shard_map. Without it a jitted step sees no mesh and the SPMD
  partitioner is free to gather the whole global batch onto every device. On a mesh whose
  batch axes have size 1 nothing changes.
  """
  @functools.wraps(fn)
  def traced(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args, **kwargs)
  return traced


def axis_rules(config) -> tuple:
  return tuple(config.logical_axis_rules or mesh_lib.DEFAULT_RULES)


def check_data_shape(summary: dict, model_cfg) -> None:
  """ValueError if the data's channels x samples differ from the model's D x T."""
  d, t = summary["channels"], summary["window_len"]
  if d != model_cfg.data_dim or t != model_cfg.T:
    raise ValueError(f"data sources {[s['path'] for s in summary['sources']]} "
                     f"({summary.get('split')}) give {d} channels x {t} samples but the model "
                     f"expects {model_cfg.data_dim} x {model_cfg.T} (set --config.model.T, "
                     "--config.data.window_len, --config.model.data or --config.model.channels)")


# -- sharded state ------------------------------------------------------------------------------

def boxed_params(model, init_args) -> dict:
  """Shapes of the model's logically partitioned params (nothing is computed)."""
  return jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *init_args))["params"]


def abstract_params(model, init_args) -> dict:
  """Plain ShapeDtypeStruct tree of the model's params."""
  return nn.unbox(boxed_params(model, init_args))


def init_params(model, init_args, mesh, rules, key) -> tuple[dict, dict]:
  """(params, shardings): params initialised directly into their shardings (no host copy)."""
  p_shard = mesh_lib.param_shardings(boxed_params(model, init_args), mesh, rules)
  # The dummy inputs are arguments, not closed-over constants: XLA would constant-fold the
  # whole forward pass through constant inputs (minutes of compile time).
  init_fn = jax.jit(lambda k, args: nn.unbox(model.init({"params": k}, *args)["params"]),
                    out_shardings=p_shard)
  return init_fn(key, init_args), p_shard


def place(tree, shardings):
  """Host arrays (e.g. loaded weights, the same on every process) onto devices with the given
  shardings; each process builds only its own shards (no cross-process check)."""
  def one(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree_util.tree_map(one, tree, shardings)


def opt_state_shardings(tx, params, p_shard, mesh):
  """Optimizer-state shardings: moments follow their parameter, counters are replicated."""
  rep = mesh_lib.replicated(mesh)
  return optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, params), p_shard,
                               transform_non_params=lambda _: rep)


def state_shardings(tx, params, p_shard, mesh) -> dict:
  rep = mesh_lib.replicated(mesh)
  return {"params": p_shard, "opt_state": opt_state_shardings(tx, params, p_shard, mesh),
          "step": rep, "rng": rep}


def initial_state(tx, params, p_shard, mesh, rng: jax.Array) -> tuple[dict, dict]:
  """(state, state shardings): fresh optimizer state, step 0, the RNG key data of `rng`."""
  shard = state_shardings(tx, params, p_shard, mesh)
  opt_state = jax.jit(tx.init, out_shardings=shard["opt_state"])(params)
  # Step and RNG made by a jitted function straight into their (replicated) sharding: a
  # device_put of host values onto several processes' devices would first compare them
  # across processes.
  rng_data = np.asarray(jax.random.key_data(rng))
  step, rng_dev = jax.jit(lambda: (jnp.zeros((), jnp.int32), jnp.asarray(rng_data)),
                          out_shardings=(shard["step"], shard["rng"]))()
  state = {"params": params, "opt_state": opt_state, "step": step, "rng": rng_dev}
  return state, shard


def abstract_state(tx, model, init_args, mesh, rules) -> tuple[dict, dict]:
  """(state of ShapeDtypeStructs with shardings, state shardings) for AOT compiles: nothing
  is materialised, so the paper model can be planned for a pod on a laptop."""
  boxed = boxed_params(model, init_args)
  p_shard = mesh_lib.param_shardings(boxed, mesh, rules)
  sds = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  params = jax.tree_util.tree_map(sds, nn.unbox(boxed), p_shard)
  shard = state_shardings(tx, params, p_shard, mesh)
  rep = mesh_lib.replicated(mesh)
  state = {"params": params,
           "opt_state": jax.tree_util.tree_map(sds, jax.eval_shape(tx.init, params),
                                               shard["opt_state"]),
           "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
           "rng": jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)}
  return state, shard


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of a tree of arrays: the target of a restore."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


# -- resume, preemption, the non-finite policy --------------------------------------------------

def resume(checkpointer, state):
  """(state, saved data JSON, start step) from the latest good checkpoint, restored onto
  `state`'s shardings (any mesh, any process count); (state, None, 0) if there is none."""
  if checkpointer.latest_step() is None:
    return state, None, 0
  step, restored, data_state = checkpointer.restore_latest_good(abstract_like(state))
  logging.info("resumed from %s/%d", checkpointer.latest.directory, step)
  return restored, data_state, int(jax.device_get(restored["step"]))


class Preemption:
  """SIGTERM (a preempted VM, a scheduler's kill) sets `.requested`; the loop then saves and
  stops at the end of the current step. A context manager restoring the previous handler."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, *_):
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)
    return False


def flush(pending: list, policy: str) -> dict:
  """Fetch the metrics of the steps since the last flush ([(step, metrics)]) and apply the
  non-finite policy: "skip" (the step's update was not applied; warn) or "stop" (raise
  NonFiniteError naming the step). Returns the last step's metrics as floats."""
  for s, m in jax.device_get(pending):
    if not m["finite"]:
      if policy == "stop":
        raise NonFiniteError(f"step {s}: non-finite loss or gradient; stopping (the params "
                             "of the last good step are in the last checkpoint)")
      logging.warning("step %d: non-finite loss or gradient; update skipped", s)
  last = {k: float(v) for k, v in jax.device_get(pending[-1][1]).items()}
  pending.clear()
  return last


def every(done: int, interval: int, total: int) -> bool:
  """True at multiples of `interval` and after the last step; interval 0 = only at the end."""
  return done == total or (interval > 0 and done % interval == 0)


# -- several processes --------------------------------------------------------------------------

def is_writer() -> bool:
  """True on the one process that writes the workdir's shared files (metrics, plots, JSON)."""
  return jax.process_index() == 0


def prepare_once(name: str, fn: Callable[[], str], timeout_s: float = 3600.0) -> str:
  """fn() on process 0; the other processes wait for its result (a string, e.g. a path).

  With several processes, process 0 publishes "ok:<result>" or "error:<message>" in the
  distributed key-value store; the others block on it up to `timeout_s` and raise with a
  message naming `name` if it fails or times out. Never two writers.
  """
  if jax.process_count() == 1:
    return fn()
  from jax._src import distributed  # the coordinator's key-value store
  client = distributed.global_state.client
  key = f"neuript_prepare/{name}"
  if jax.process_index() == 0:
    try:
      result = fn()
    except BaseException as e:
      client.key_value_set(key, f"error:{type(e).__name__}: {e}")
      raise
    client.key_value_set(key, f"ok:{result}")
    return result
  logging.info("process %d: waiting for process 0 to prepare %s (up to %.0f s)",
               jax.process_index(), name, timeout_s)
  try:
    value = client.blocking_key_value_get(key, int(timeout_s * 1000))
  except Exception as e:  # the store raises on timeout
    raise TimeoutError(f"process {jax.process_index()}: process 0 did not prepare {name} "
                       f"within {timeout_s:.0f} s ({e})") from e
  status, _, result = value.partition(":")
  if status != "ok":
    raise RuntimeError(f"process 0 failed to prepare {name}: {result}")
  return result


def barrier(name: str, timeout_s: float = 3600.0) -> None:
  """Every process waits here until all have arrived (the coordinator's key-value store, so a
  slow process, e.g. one still compiling, has `timeout_s`); nothing with one process."""
  if jax.process_count() > 1:
    from jax._src import distributed
    distributed.global_state.client.wait_at_barrier(f"neuript/{name}", int(timeout_s * 1000))


def compiled_together(fn, name: str):
  """fn (a jitted function) compiled on every process before any process runs it.

  The first cross-process collective of a program also sets up the CPU collectives (gloo),
  which waits only 30 s for the other processes; a process that finishes compiling minutes
  before another (a loaded machine, a cold compilation cache) would fail there. So with
  several processes each new input signature is compiled first, then all processes meet at
  a barrier, then the compiled program runs. With one process, fn itself.
  """
  if jax.process_count() == 1:
    return fn
  programs = {}

  def call(*args):
    key = str(jax.tree_util.tree_map(
        lambda a: (getattr(a, "shape", None), str(getattr(a, "dtype", type(a))),
                   str(getattr(a, "sharding", None))), args))
    if key not in programs:
      programs[key] = fn.lower(*args).compile()
      barrier(f"{name}/{len(programs)}")
    return programs[key](*args)

  return call
