"""Config validation before compiling: every value that would crash later, or silently run
something other than what was asked, stops the run at start with a `ConfigError` that names
the field and its value, or has the meaning documented here.

The loops call `check_pretrain` / `check_finetune` after reading the data summary
(`neuript_jax.data.pipeline.dataset_summary`) and before building the mesh; both return the
resolved plan (mesh sizes, total steps, intervals with their 0 meanings applied) so that the
loop uses exactly what was checked. The sweep launcher calls `check_sweep_args`.

Interval meanings (both loops; a negative interval is always an error):
  log_every         must be >= 1 (0 has no meaning: logging also surfaces non-finite steps).
  eval_every  = 0   pretraining: evaluate only after the last step (resolved to total_steps);
                    fine-tuning: validate once per epoch (resolved to steps_per_epoch).
  checkpoint_every = 0   at every evaluation/validation (resolved to the resolved eval_every;
                    so in pretraining with eval_every = 0 too: only after the last step).
  plot_every  = 0   pretraining: plot only after the last step (resolved to total_steps).
Every loop also evaluates, checkpoints and plots after its last step, whatever the intervals.
"""

from __future__ import annotations

import math
import os
from typing import Any

from neuript_jax.train import mesh as mesh_lib

NONFINITE_POLICIES = ("skip", "stop")
SCHEDULES = ("onecycle", "cosine", "constant")
LOSSES = ("bal_bce", "cross_entropy")


class ConfigError(ValueError):
  """A config value that cannot run as asked; the message names the field and its value."""


def _fail(field: str, value: Any, why: str) -> None:
  raise ConfigError(f"config.{field}={value!r}: {why}")


def _get(config, field: str):
  node = config
  for part in field.split("."):
    node = node[part]
  return node


def _int_field(config, field: str, minimum: int, why: str = "") -> int:
  value = _get(config, field)
  if isinstance(value, bool) or not isinstance(value, int):
    _fail(field, value, "must be an integer")
  if value < minimum:
    _fail(field, value, why or f"must be >= {minimum}")
  return int(value)


# -- shared rules ---------------------------------------------------------------------------

def resolve_mesh(config, n_devices: int) -> dict:
  """config.mesh -> {axis: size} for `n_devices` devices, with `train.mesh.make_mesh`'s
  rules: the axes are (data, fsdp, expert, tensor), each a positive size or -1 (at most one),
  -1 taking the devices the others leave; the sizes must multiply to `n_devices`."""
  mesh = config.mesh
  keys = list(mesh.keys())
  unknown = [k for k in keys if k not in mesh_lib.MESH_AXES]
  if unknown:
    _fail(f"mesh.{unknown[0]}", mesh[unknown[0]],
          f"unknown mesh axis (the axes are {', '.join(mesh_lib.MESH_AXES)})")
  sizes = {}
  for axis in mesh_lib.MESH_AXES:
    v = mesh.get(axis, 1)
    if isinstance(v, bool) or not isinstance(v, int) or (v < 1 and v != -1):
      _fail(f"mesh.{axis}", v, "must be a positive integer or -1 (the remaining devices)")
    sizes[axis] = int(v)
  free = [a for a, v in sizes.items() if v == -1]
  if len(free) > 1:
    _fail(f"mesh.{free[1]}", -1, f"only one mesh axis may be -1 (also mesh.{free[0]}=-1)")
  fixed = math.prod(v for v in sizes.values() if v != -1)
  shape = ", ".join(f"{a}={v}" for a, v in sizes.items())
  if free:
    if n_devices % fixed:
      _fail(f"mesh.{free[0]}", -1, f"the other axes ({shape}) use {fixed} devices, which does "
            f"not divide the {n_devices} devices")
    sizes[free[0]] = n_devices // fixed
  elif fixed != n_devices:
    _fail("mesh", dict(sizes), f"needs {fixed} devices but there are {n_devices} (set one "
          "axis to -1 to take the remaining devices)")
  return sizes


def check_axis_rules(config) -> None:
  """Every mesh axis named in config.logical_axis_rules exists."""
  rules = config.get("logical_axis_rules")
  if not rules:
    return
  for i, rule in enumerate(rules):
    if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
      _fail(f"logical_axis_rules[{i}]", rule, "must be a (logical name, mesh axes) pair")
    axes = rule[1]
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    for a in names:
      if a not in mesh_lib.MESH_AXES:
        _fail(f"logical_axis_rules[{i}]", tuple(rule), f"unknown mesh axis {a!r} (the axes are "
              f"{', '.join(mesh_lib.MESH_AXES)})")


def check_batch(field: str, value, mesh_sizes: dict, n_processes: int) -> None:
  """A global batch splits evenly over the processes and the batch mesh axes (data x fsdp),
  and those axes give every process its own rows."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    _fail(field, value, "must be a positive integer")
  if value % n_processes:
    _fail(field, value, f"is not divisible by the {n_processes} processes (each reads "
          "global_batch_size / processes rows)")
  shards = math.prod(mesh_sizes[a] for a in mesh_lib.BATCH_AXES)
  if value % shards:
    _fail(field, value, f"is not divisible by the batch mesh axes data x fsdp = "
          f"{mesh_sizes['data']} x {mesh_sizes['fsdp']} = {shards}")
  if shards % n_processes:
    _fail("mesh", dict(mesh_sizes), f"the batch axes data x fsdp = {shards} must be a multiple "
          f"of the {n_processes} processes (each process feeds its own rows)")


def check_moe_groups(config, batch_fields) -> None:
  """model.moe_groups (PMoE routing groups per batch, model/moe.py) is an int >= 0 that
  divides every batch the model sees (`batch_fields`); 0 (one group per batch shard) always
  does, because those batches are checked against the batch mesh axes."""
  g = _int_field(config, "model.moe_groups", 0, "must be >= 0 (0: one routing group per batch "
                 "shard of the mesh)")
  for field in batch_fields:
    value = _get(config, field)
    if g and value % g:
      _fail("model.moe_groups", g, f"does not divide {field}={value} (every batch is split "
            "into moe_groups routing groups of equal size)")


def check_optim(config, total_steps: int) -> None:
  """Schedule name, positive lr, and a warm-up of at least one step when one is asked for."""
  o = config.optim
  if o.schedule not in SCHEDULES:
    _fail("optim.schedule", o.schedule, f"must be one of {', '.join(SCHEDULES)}")
  if not o.lr > 0:
    _fail("optim.lr", o.lr, "must be positive")
  if o.schedule == "constant":
    return
  if not 0 <= o.pct_start < 1:
    _fail("optim.pct_start", o.pct_start, "the warm-up fraction must be in [0, 1)")
  if o.pct_start > 0 and o.pct_start * total_steps < 1:
    _fail("total_steps", total_steps, f"is shorter than the warm-up: optim.pct_start="
          f"{o.pct_start} x {total_steps} steps = {o.pct_start * total_steps:g} steps (< 1), "
          "so the run would start at the peak lr (more steps, or optim.pct_start=0 for no "
          "warm-up)")
  if o.schedule == "onecycle" and not (o.div_factor > 0 and o.final_div_factor > 0):
    _fail("optim.div_factor", o.div_factor, "div_factor and final_div_factor must be positive")


def check_model_and_window(config, data_summary: dict | None) -> None:
  """ModelConfig accepts the model block; data.window_len and the records' windows fit
  model.T and the records' channels fit the model."""
  from neuript_jax.configs.common import to_model_config
  try:
    model_cfg = to_model_config(config.model)
  except (ValueError, TypeError, KeyError) as e:
    raise ConfigError(f"config.model: {e}") from e
  window_len = config.data.get("window_len")
  if window_len is not None:
    if isinstance(window_len, bool) or not isinstance(window_len, int) or window_len < 1:
      _fail("data.window_len", window_len, "must be a positive integer or None (whole records)")
    if window_len != model_cfg.T:
      _fail("data.window_len", window_len, f"differs from config.model.T={model_cfg.T} (the "
            "model is built for T samples per window)")
  if data_summary is None:
    return
  sources = data_summary.get("sources", [])
  if window_len is not None:
    short = [f"{s['path']} ({s['window_samples']} samples)" for s in sources
             if s.get("window_samples") is not None and s["window_samples"] < window_len]
    if short:
      _fail("data.window_len", window_len, "is longer than the records of " + ", ".join(short))
  t = int(data_summary["window_len"])
  if t != model_cfg.T:
    _fail("model.T", model_cfg.T, f"differs from the window length of the data ({t} samples "
          f"per record in {', '.join(s['path'] for s in sources)}; set data.window_len={t} or "
          "model.T to match)")
  if int(data_summary["channels"]) != model_cfg.data_dim:
    _fail("model.data", model_cfg.data,
          f"gives {model_cfg.data_dim} channels but the data have {data_summary['channels']} "
          "(set model.data or model.channels)")


def _common(config, n_devices: int, n_processes: int) -> dict:
  if n_processes < 1 or n_devices < 1 or n_devices % n_processes:
    raise ConfigError(f"{n_devices} devices over {n_processes} processes: need at least one "
                      "device per process, the same number on each")
  mesh_sizes = resolve_mesh(config, n_devices)
  check_axis_rules(config)
  check_batch("data.global_batch_size", config.data.global_batch_size, mesh_sizes, n_processes)
  if config.nonfinite not in NONFINITE_POLICIES:
    _fail("nonfinite", config.nonfinite, f"must be one of {', '.join(NONFINITE_POLICIES)}")
  _int_field(config, "log_every", 1, "must be >= 1 (0 has no meaning: logging is where "
             "non-finite steps are reported)")
  _int_field(config, "keep_checkpoints", 1)
  return mesh_sizes


def _interval(config, field: str) -> int:
  return _int_field(config, field, 0, "must be >= 0 (0 has a documented meaning, negative none)")


def _check_init_from(config, special=()) -> None:
  path = config.get("init_from") or ""
  if path and path not in special and not os.path.exists(path):
    _fail("init_from", path, "does not exist (an orbax workdir or step folder, or a reference "
          ".pth/.pt/.npz file)")


# -- the loops ------------------------------------------------------------------------------

def check_pretrain(config, *, n_devices: int, n_processes: int,
                   data_summary: dict | None = None) -> dict:
  """Validate a pretraining config (neuript_jax/configs/pretrain.py fields) before compiling.

  Args:
    config: the experiment ConfigDict.
    n_devices, n_processes: jax.device_count(), jax.process_count().
    data_summary: `pipeline.dataset_summary(train data config)`; None skips the data rules.

  Returns: {"mesh": {axis: size}, "total_steps", "log_every", "eval_every",
    "checkpoint_every", "plot_every"}, the intervals with 0 resolved: eval_every 0 ->
    total_steps (evaluate only after the last step), plot_every 0 -> total_steps,
    checkpoint_every 0 -> the resolved eval_every.

  Raises: ConfigError naming the field and its value.
  """
  mesh_sizes = _common(config, n_devices, n_processes)
  total = _int_field(config, "total_steps", 1)
  eval_every = _interval(config, "eval_every") or total
  plot_every = _interval(config, "plot_every") or total
  ckpt_every = _interval(config, "checkpoint_every") or eval_every
  _int_field(config, "eval_batches", 1, "must be >= 1 (evaluation averages over eval_batches "
             "batches)")
  check_optim(config, total)
  check_model_and_window(config, data_summary)
  check_moe_groups(config, ("data.global_batch_size",))
  _check_init_from(config)
  epochs = config.data.get("num_epochs")
  if epochs is not None and data_summary is not None:
    batches = int(data_summary["n_records"]) * int(epochs) // int(config.data.global_batch_size)
    if batches < total:
      _fail("data.num_epochs", epochs, f"gives {batches} batches of "
            f"{config.data.global_batch_size} from {data_summary['n_records']} records, fewer "
            f"than total_steps={total} (None repeats the data forever)")
  return {"mesh": mesh_sizes, "total_steps": total, "log_every": int(config.log_every),
          "eval_every": eval_every, "checkpoint_every": ckpt_every, "plot_every": plot_every}


def check_finetune(config, *, n_devices: int, n_processes: int,
                   data_summary: dict | None = None) -> dict:
  """Validate a fine-tuning config (neuript_jax/configs/finetune.py fields) before compiling.

  Args: as `check_pretrain`; data_summary is the training split's.

  Returns: {"mesh", "steps_per_epoch", "total_steps", "freeze_steps", "log_every",
    "eval_every", "checkpoint_every"}: total_steps = config.total_steps or epochs x
    steps_per_epoch; eval_every 0 -> steps_per_epoch (once per epoch); checkpoint_every 0 ->
    the resolved eval_every (at every validation). Without data_summary the fields that need
    steps_per_epoch are None.

  Raises: ConfigError naming the field and its value.
  """
  mesh_sizes = _common(config, n_devices, n_processes)
  check_batch("eval_batch_size", config.eval_batch_size, mesh_sizes, n_processes)
  given_total = _int_field(config, "total_steps", 0, "must be >= 0 (0 = epochs x steps per "
                           "epoch)")
  epochs = _int_field(config, "epochs", 0)
  if not given_total and epochs < 1:
    _fail("epochs", epochs, "must be >= 1 when total_steps=0")
  freeze_epochs = _int_field(config, "freeze_epochs", 0)
  _int_field(config, "early_stopping_patience", 0, "must be >= 0 (0 = never stop early)")
  eval_every, ckpt_every = _interval(config, "eval_every"), _interval(config, "checkpoint_every")
  if config.loss not in LOSSES:
    _fail("loss", config.loss, f"must be one of {', '.join(LOSSES)}")
  if not 0 <= config.label_smoothing < 1:
    _fail("label_smoothing", config.label_smoothing, "must be in [0, 1)")
  if config.bal_bce_k < 0:
    _fail("bal_bce_k", config.bal_bce_k, "must be >= 0")
  from neuript_jax.evaluation import metrics as metrics_lib
  names = tuple(metrics_lib.METRIC_NAMES) + ("nll",)
  if config.select_metric not in names:
    _fail("select_metric", config.select_metric, f"must be one of {', '.join(names)}")
  rule = config.get("decision_rule", "half")
  if rule not in metrics_lib.DECISION_RULES:
    _fail("decision_rule", rule, f"must be one of {', '.join(metrics_lib.DECISION_RULES)}")
  if rule == "validation" and config.model.num_classes > 2:
    _fail("decision_rule", rule, f"is defined for binary tasks only (model.num_classes="
          f"{config.model.num_classes}); use \"prior\" or \"half\"")
  check_model_and_window(config, data_summary)
  check_moe_groups(config, ("data.global_batch_size", "eval_batch_size"))
  _check_init_from(config, special=("pretrain_demo",))
  plan = {"mesh": mesh_sizes, "steps_per_epoch": None, "total_steps": given_total or None,
          "freeze_steps": None, "log_every": int(config.log_every),
          "eval_every": eval_every or None, "checkpoint_every": ckpt_every or eval_every or None}
  if data_summary is None:
    if given_total:
      check_optim(config, given_total)
    return plan
  bs = int(config.data.global_batch_size)
  steps_per_epoch = int(data_summary["n_records"]) // bs
  if steps_per_epoch < 1:
    _fail("data.global_batch_size", bs, f"is larger than the {data_summary['n_records']} "
          f"records of the {data_summary.get('split', 'train')!r} split (no full batch)")
  total = given_total or epochs * steps_per_epoch
  check_optim(config, total)
  eval_every = eval_every or steps_per_epoch
  plan.update(steps_per_epoch=steps_per_epoch, total_steps=total,
              freeze_steps=freeze_epochs * steps_per_epoch, eval_every=eval_every,
              checkpoint_every=ckpt_every or eval_every)
  return plan


def check_sweep_args(*, parallel: int, devices_per_run: int, n_devices: int) -> None:
  """--parallel >= 1; --devices_per_run >= 0 and, when > 0, parallel x devices_per_run <=
  n_devices (each parallel slot gets its own devices). Raises ConfigError naming the flag."""
  if parallel < 1:
    raise ConfigError(f"--parallel={parallel}: must be >= 1")
  if devices_per_run < 0:
    raise ConfigError(f"--devices_per_run={devices_per_run}: must be >= 0 (0 = all devices)")
  if devices_per_run and parallel * devices_per_run > n_devices:
    raise ConfigError(f"--devices_per_run={devices_per_run}: --parallel={parallel} slots x "
                      f"{devices_per_run} = {parallel * devices_per_run} devices, but there are "
                      f"{n_devices}")
