"""Side-by-side timing of our train steps and forward passes (and, given its callables, the
PyTorch reference's) on one batch; MFU from the analytic FLOP count. `launch/bench.py` is the
absl main.

Parts (each timed as one call that blocks until its result is ready):
  train2    stage-2 (fine-tuning) train step: forward + cross-entropy + aux, backward, AdamW
            (`neuript_jax.train.finetune.make_train_step`, jitted and donated by its setup)
  train1    stage-1 (pretraining) train step: AAMP masks + corruption, forward, loss,
            backward, AdamW (`neuript_jax.train.step.make_train_step` via pretrain.setup)
  forward2  stage-2 eval forward (logits)
  forward1  stage-1 eval forward (prediction) with fixed AAMP block masks

The model, batch and seed come from one experiment config (`bench_configs`). On CPU a part
whose XLA temporaries would not fit in the host memory available is compiled but not run
(`<side>_<part>_error` says so); `neuript_jax/bench/children.py` runs each side in a process of
its own and sizes the batch to the host.

Method: every part is compiled first (compile time reported separately: lower + compile),
then part by part (as a training loop runs its step): `warmup` untimed calls, then `steps`
repetitions; with both sides in one process, each of our calls is followed by the reference's
same call, so slow drifts of a shared machine hit both sides alike. Reported times are
medians over the repetitions.

The input is one batch: x = A-law(N(0, 30 µV)) [B, T, D] from numpy (seed 0), labels
uniform over the classes, and the AAMP block masks that our stage-1 train step draws at step
0 (its mask key from `train.step.step_keys` of the pretraining state's rng); the
reference's stage-1 step gets exactly these masks every repetition.

MFU = analytic train FLOPs per second (`neuript_jax.model.counting.train_flops`: matmuls,
3x forward) / peak. Peak: `PEAK_TFLOPS` for the device kind and compute dtype on
accelerators; on CPU a measured fp32 matmul rate (`measure_cpu_matmul_peak`).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

PARTS = ("train2", "train1", "forward2", "forward1")

# Dense peak TFLOP/s per device kind (substring of jax's device_kind, lower case):
# (bfloat16 tensor core / MXU, float32 matmul as XLA runs it by default: TF32 on NVIDIA).
PEAK_TFLOPS = {
    "h200": (989.0, 494.0),
    "h100": (989.0, 494.0),
    "a100": (312.0, 156.0),
    "l4": (121.0, 60.0),
    "tpu v4": (275.0, 275.0),
    "tpu v5 lite": (197.0, 197.0),
    "tpu v5e": (197.0, 197.0),
    "tpu v5p": (459.0, 459.0),
    "tpu v5": (459.0, 459.0),
    "tpu v6 lite": (918.0, 918.0),
    "tpu v6e": (918.0, 918.0),
}


def part_keys(part: str) -> dict:
  """JSON key names of a part: stage 2 unprefixed (jax_train_step_s, ratio, ...), stage 1 with
  a "stage1_" prefix; forward parts use forward_ ... ratio names."""
  prefix = "stage1_" if part.endswith("1") else ""
  kind = "train_step" if part.startswith("train") else "forward"
  ratio = f"{prefix}ratio" if kind == "train_step" else f"{prefix}forward_ratio"
  return {"jax": f"jax_{prefix}{kind}_s", "torch": f"torch_{prefix}{kind}_s", "ratio": ratio,
          "prefix": prefix, "kind": kind}


# -- peaks and memory ----------------------------------------------------------------------------

def measure_cpu_matmul_peak(n: int = 1024, reps: int = 5) -> float:
  """Best fp32 FLOP/s of an [n, n] x [n, n] matmul, max over numpy (BLAS) and XLA."""
  a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
  b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
  best = []
  for _ in range(reps):
    t = time.perf_counter()
    a @ b
    best.append(time.perf_counter() - t)
  cpu = jax.devices("cpu")[0]
  aj, bj = jax.device_put(a, cpu), jax.device_put(b, cpu)
  mm = jax.jit(lambda x, y: x @ y)
  mm(aj, bj).block_until_ready()
  for _ in range(reps):
    t = time.perf_counter()
    mm(aj, bj).block_until_ready()
    best.append(time.perf_counter() - t)
  return 2.0 * n ** 3 / min(best)


def device_peak_flops(device, dtype: str) -> tuple[float | None, str]:
  """(peak FLOP/s, where it comes from) for one device and compute dtype."""
  if device.platform == "cpu":
    return measure_cpu_matmul_peak(), "measured fp32 matmul (numpy/XLA, best of 5, n=1024)"
  kind = device.device_kind.lower()
  for name, (bf16, fp32) in PEAK_TFLOPS.items():
    if name in kind:
      tf = bf16 if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else fp32
      return tf * 1e12, f"table: {name} {dtype} dense {tf:g} TFLOP/s"
  return None, f"no peak known for device kind {device.device_kind!r}"


def peak_memory(device) -> tuple[int | None, str]:
  """(bytes, what): device peak_bytes_in_use on accelerators, process peak RSS on CPU."""
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "host peak RSS"


# -- configs and the batch -----------------------------------------------------------------------

def bench_configs(config):
  """(pretraining config, fine-tuning config) that the parts of one experiment config run.

  `config` is a whole experiment (`neuript_jax/configs/pretrain.py:<preset>` or
  `finetune.py:<preset>`): its model, global batch size and seed go to both stages; the
  stage whose experiment it is keeps the rest of it (masking, optimizer, ...), the other stage
  takes its file's defaults. Stage 2's loss is cross-entropy, as the reference's.
  """
  from neuript_jax.configs import finetune as finetune_config
  from neuript_jax.configs import pretrain as pretrain_config
  for field in ("model", "data", "seed"):
    if field not in config:
      raise ValueError(f"--config: the experiment config has no {field!r} field (give a whole "
                       "experiment, e.g. --config=neuript_jax/configs/pretrain.py:small)")
  pre = (config if "masking" in config else pretrain_config.get_config()).copy_and_resolve_references()
  ft = (config if "loss" in config else finetune_config.get_config()).copy_and_resolve_references()
  batch = int(config.data.global_batch_size)
  if batch < 1:
    raise ValueError(f"--config.data.global_batch_size={batch}: must be >= 1")
  for c in (pre, ft):
    c.model = config.model.copy_and_resolve_references()
    c.data.global_batch_size = batch
    c.seed = int(config.seed)
  ft.loss = "cross_entropy"
  return pre, ft


def make_batch(model_cfg, batch: int, seed: int = 0) -> dict:
  """{"x" [B, T, D] float32 A-law of N(0, 30 µV), "label" [B] int32} (numpy)."""
  from neuript_jax import signal
  rng = np.random.default_rng(seed)
  x = signal.a_law_compress(rng.normal(0.0, 30.0, (batch, model_cfg.T, model_cfg.data_dim)))
  labels = rng.integers(0, max(model_cfg.num_classes, 2), batch)
  return {"x": x.astype(np.float32), "label": labels.astype(np.int32)}


# -- our side ------------------------------------------------------------------------------------

def stage1_masks(model_cfg, masking_cfg, rng_data, x, step: int = 0) -> list:
  """The AAMP block masks (numpy [B, D, L_l] bool) that our stage-1 train step draws at `step`
  for batch x: its mask key from `train.step.step_keys(state["rng"], step)`, then
  `masking.make_masks`, as the step does. rng_data: the train state's "rng" (key data)."""
  from neuript_jax import masking
  from neuript_jax.train.step import step_keys
  k_mask = step_keys(rng_data, step)[0]
  _, blocks, _ = jax.jit(lambda k, x: masking.make_masks(
      k, x, masking_cfg, model_cfg.block_lengths(), model_cfg.merge_layers))(
          k_mask, jnp.asarray(x))
  return [np.asarray(m) for m in blocks]


def train_rng(seed: int):
  """The pretraining state's initial "rng" (key data) for config seed `seed`: the "train"
  stream of `train.loop.rng_key`, as `pretrain.setup` seeds it."""
  from neuript_jax.train import loop
  return jax.random.key_data(loop.rng_key(seed, "train"))


def stage1_state(pre, model_cfg, mesh=None):
  """(initial state, jitted train step) of pretraining config `pre` on a one-device mesh."""
  from neuript_jax.train import mesh as mesh_lib, pretrain
  mesh = mesh or mesh_lib.make_mesh([1, 1, 1, 1], devices=jax.devices()[:1])
  state, step, _, _ = pretrain.setup(pre, model_cfg, mesh)
  return state, step


class DoesNotFit(RuntimeError):
  """A compiled part's temporaries would not fit in the host memory available now."""


def check_fits_host(part: str, temp_bytes: int, headroom: float = 0.85) -> None:
  """Raise DoesNotFit when XLA's temporaries of a CPU part exceed `headroom` of MemAvailable
  (the process's own memory already counts as used; None: unknown, no check)."""
  from neuript_jax import host_memory
  available = host_memory.mem_available_bytes()
  if available is not None and temp_bytes > headroom * available:
    raise DoesNotFit(f"{part}: XLA's temporaries {temp_bytes / 2 ** 30:.1f} GiB > "
                     f"{headroom:.0%} of the {available / 2 ** 30:.1f} GiB host memory "
                     "available; lower --config.data.global_batch_size")


class JaxParts:
  """Compiled, ready-to-time callables of our model for the requested parts.

  `calls[part]()` runs one call and blocks; `compile_s[part]`; `temp_bytes[part]`;
  `skipped[part]` (why a compiled part is not run: it would not fit in host memory);
  `block_masks` (numpy list of [B, D, L_l] bool, None without stage-1 parts) are the stage-1
  masks every side uses.
  """

  def __init__(self, config, batch_np: dict, parts=PARTS, total_steps: int = 10_000):
    from neuript_jax.configs.common import to_model_config
    from neuript_jax.model import Stage1Model
    from neuript_jax.train import finetune, mesh as mesh_lib

    pre, ft = bench_configs(config)
    self.model_cfg = cfg = to_model_config(config.model)
    self.calls: dict[str, Callable[[], object]] = {}
    self.compile_s: dict[str, float] = {}
    self.temp_bytes: dict[str, int] = {}     # XLA's temporaries of each compiled part
    self.skipped: dict[str, str] = {}
    self.compiled: dict[str, object] = {}    # each part's compiled program (HLO: as_text())
    self._cpu = jax.devices()[0].platform == "cpu"
    mesh = mesh_lib.make_mesh([1, 1, 1, 1], devices=jax.devices()[:1])
    gb = {k: jax.device_put(v, mesh_lib.batch_sharding(mesh, v.ndim))
          for k, v in batch_np.items()}

    self.block_masks = None
    if "train1" in parts or "forward1" in parts:
      pre.total_steps = total_steps
      state1, step1 = stage1_state(pre, cfg, mesh)
      self.block_masks = stage1_masks(cfg, pre.masking, state1["rng"], gb["x"])
      blocks = [jnp.asarray(m) for m in self.block_masks]
      if "forward1" in parts:
        model1 = Stage1Model(cfg)
        fwd1 = jax.jit(lambda p, x, m: model1.apply({"params": p}, x, m, m, True)[0])
        self._add_call("forward1", fwd1, state1["params"], gb["x"], list(blocks))
      if "train1" in parts:
        self._add_step("train1", step1, state1, {"x": gb["x"]})
    if "train2" in parts or "forward2" in parts:
      state2, step2, predict = finetune.setup(
          ft, cfg, mesh, mesh_lib.DEFAULT_RULES, total_steps, 0,
          np.ones(max(cfg.num_classes, 2), np.int64))
      if "forward2" in parts:
        self._add_call("forward2", predict, state2["params"], gb["x"])
      if "train2" in parts:
        self._add_step("train2", step2, state2, gb)

  def _compile(self, part, fn, *args):
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    self.compile_s[part] = time.perf_counter() - start
    self.compiled[part] = compiled
    mem = compiled.memory_analysis()
    if mem is not None:
      self.temp_bytes[part] = int(mem.temp_size_in_bytes)
      if self._cpu:
        try:
          check_fits_host(part, self.temp_bytes[part])
        except DoesNotFit as e:
          self.skipped[part] = str(e)
          return None
    return compiled

  def _add_step(self, part, step, state, batch):
    compiled = self._compile(part, step, state, batch)
    if compiled is None:
      return
    holder = {"state": state}

    def call():
      holder["state"], metrics = compiled(holder["state"], batch)
      jax.block_until_ready((holder["state"], metrics))

    self.calls[part] = call

  def _add_call(self, part, fn, params, *args):
    # A copy: the train steps donate (delete) the state's own params.
    args = (jax.tree_util.tree_map(jnp.copy, params),) + args
    compiled = self._compile(part, fn, *args)
    if compiled is not None:
      self.calls[part] = lambda: jax.block_until_ready(compiled(*args))


# -- timing ---------------------------------------------------------------------------------------

def release_free_host_memory() -> bool:
  """glibc malloc_trim(0): hand the heap's free pages back to the kernel. True if it ran.

  Between the timed calls of two sides in one process (launch.bench --release_memory): the
  reference's CPU tensors below glibc's mmap threshold (which rises to 32 MB after the first
  large free) stay in malloc's free lists after its step, 14 GB at `small` stage 1 batch 4,
  and our step's 9 GB temporary block then comes on top (OOM on a 23 GiB machine). The price:
  the reference faults its memory in again at every step (~10% slower at that size).
  """
  import ctypes
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    return False
  return True


def time_alternating(sides: dict, parts, steps: int, warmup: int = 1,
                     errors: dict | None = None, between=None) -> dict:
  """sides: {"jax": {part: call}, "torch": {part: call}} -> {side: {part: [seconds, ...]}}.

  Part by part, like a training loop runs its step: every side's call of the part warms up
  `warmup` times (at least once), then repetition r runs every side's call once, alternating
  the sides. Parts are not interleaved: on this project's CPU VM a step that follows a
  different computation pays ~2 s more kernel time for the same page faults (BENCHMARKS.md,
  "Timing order"). A call that raises during warm-up (e.g. out of memory) is dropped and its
  error recorded in `errors` as "<side>_<part>_error". `between()`, when given, runs after
  every call, outside the timed region.
  """
  errors = {} if errors is None else errors
  between = between or (lambda: None)
  sides = {side: dict(calls) for side, calls in sides.items()}
  times = {side: {} for side in sides}
  for part in parts:
    for side, calls in sides.items():
      if part in calls:
        try:
          for _ in range(max(1, warmup)):
            calls[part]()
            between()
        except Exception as e:  # pylint: disable=broad-except
          errors[f"{side}_{part}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
          del calls[part]
        else:
          times[side][part] = []
    for _ in range(steps):
      for side, calls in sides.items():
        if part in calls:
          start = time.perf_counter()
          calls[part]()
          times[side][part].append(time.perf_counter() - start)
          between()
  return times


def summarize(times: dict, model_cfg, batch: int, parts, peak_flops: float | None) -> dict:
  """Medians, ratios, samples/s, GFLOP/s and MFU per part, under the JSON key names."""
  from neuript_jax.model.counting import forward_flops, train_flops
  out = {}
  for part in parts:
    keys = part_keys(part)
    if times.get("torch", {}).get(part):
      out[keys["torch"]] = statistics.median(times["torch"][part])
    if not times.get("jax", {}).get(part):
      continue
    stage = int(part[-1])
    jax_s = statistics.median(times["jax"][part])
    out[keys["jax"]] = jax_s
    if keys["torch"] in out:
      out[keys["ratio"]] = jax_s / out[keys["torch"]]
    flops = (train_flops if keys["kind"] == "train_step" else forward_flops)(model_cfg, batch,
                                                                             stage)
    name = keys["prefix"] + ("" if keys["kind"] == "train_step" else "forward_")
    out[f"{name}flops"] = flops
    out[f"{name}samples_per_s"] = batch / jax_s
    out[f"{name}gflops_per_s"] = flops / jax_s / 1e9
    out[f"{name}mfu"] = flops / jax_s / peak_flops if peak_flops else None
  return out


def profile_thunks(jax_parts: JaxParts, out_dir: str, calls: int) -> dict:
  """Per part of jax_parts that runs (warm: `run` has timed it): `calls` calls traced, written as
  out_dir/<part>_thunks.csv and <part>_thunks.png; returns {part: {csv, png,
  ms_per_call_by_kind, top_scopes}}."""
  from neuript_jax.bench import thunk_profile as tp
  os.makedirs(out_dir, exist_ok=True)
  out = {}
  for part, call in jax_parts.calls.items():
    rows = tp.profile_calls(call, calls, jax_parts.compiled[part].as_text(),
                            os.path.join(out_dir, f"{part}_trace"))
    out[part] = {
        "csv": tp.write_csv(rows, os.path.join(out_dir, f"{part}_thunks.csv")),
        "png": tp.plot_scopes(rows, os.path.join(out_dir, f"{part}_thunks.png"),
                              f"{part}: XLA:CPU thunk time by module and kind ({calls} calls)"),
        "ms_per_call_by_kind": {k: round(v, 1) for k, v in tp.by_kind(rows).items()},
        "top_scopes": {k: round(v, 1) for k, v in list(tp.by_scope(rows).items())[:10]}}
  return out


def run(config, steps: int, warmup: int = 1, parts=PARTS, torch_factory=None,
        preset: str = "", trim: bool = False, ours: bool = True,
        thunk_profile_dir: str | None = None) -> dict:
  """Build, compile, time; returns the result dict (see launch/bench.py for the keys).

  config: a whole experiment config (`bench_configs`); the batch is its
  data.global_batch_size. torch_factory(model_cfg, batch_np, block_masks, parts) ->
  ({part: call}, info dict), or None for our side only. trim: `release_free_host_memory()`
  after every call (untimed), for sizes where both sides do not fit in host memory together;
  it costs the reference ~10% (it faults its memory in again every step instead of reusing
  malloc's free lists). ours=False: the reference's side only (launch.bench --side=torch).
  thunk_profile_dir: after timing, `profile_thunks` of our parts there (result key
  "thunk_profile").
  """
  from neuript_jax import host_memory
  from neuript_jax.configs.common import to_model_config
  device = jax.devices()[0]
  load_before = os.getloadavg()
  model_block = config.model
  peak_flops, peak_source = device_peak_flops(device, model_block.dtype)
  model_cfg = to_model_config(model_block)
  batch = int(config.data.global_batch_size)
  batch_np = make_batch(model_cfg, batch)
  rss_before = host_memory.rss_bytes()    # before building the timed sides (see below)
  sides, info, compile_s, temp_bytes, errors = {}, {}, {}, {}, {}
  jax_parts = None
  if ours:
    jax_parts = JaxParts(config, batch_np, parts)
    sides["jax"] = jax_parts.calls
    compile_s, temp_bytes = jax_parts.compile_s, jax_parts.temp_bytes
    errors.update({f"jax_{p}_error": f"skipped: {why}" for p, why in jax_parts.skipped.items()})
  if torch_factory is not None:
    masks = jax_parts.block_masks if jax_parts is not None else None
    if masks is None and any(p.endswith("1") for p in parts):
      masks = stage1_masks(model_cfg, bench_configs(config)[0].masking,
                           train_rng(config.seed), batch_np["x"])
    if not ours:      # the reference alone: its own memory starts after our masks
      rss_before = host_memory.rss_bytes()
    sides["torch"], info = torch_factory(model_cfg, batch_np, masks, parts)
  trim = trim and release_free_host_memory()
  times = time_alternating(sides, parts, steps, warmup, errors,
                           release_free_host_memory if trim else None)
  mem, mem_kind = peak_memory(device)
  result = {"preset": preset, "batch": batch, "steps": steps, "parts": list(parts),
            "dtype": model_block.dtype, "attention": model_block.attention,
            "remat": model_block.remat, "malloc_trim_between_calls": trim,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
  result.update(summarize(times, model_cfg, batch, parts, peak_flops))
  result.update({
      "sides": sorted(sides),
      "compile_s": {p: round(s, 2) for p, s in compile_s.items()},
      "jax_temp_bytes": temp_bytes, **errors,
      "peak_flops": peak_flops, "peak_source": peak_source,
      "peak_memory_bytes": mem, "peak_memory_kind": mem_kind,
      "rss_before_sides_bytes": rss_before,
      "platform": device.platform, "device_kind": device.device_kind,
      "cpu_count": os.cpu_count(), "load_before": [round(v, 2) for v in load_before],
      "load_after": [round(v, 2) for v in os.getloadavg()],
      "jax_version": jax.__version__, "python": platform.python_version(),
      "times": {side: {p: [round(t, 4) for t in ts] for p, ts in per.items()}
                for side, per in times.items()}})
  result.update(info)
  if thunk_profile_dir and jax_parts is not None:
    result["thunk_profile"] = profile_thunks(jax_parts, thunk_profile_dir, max(steps, 1))
  return result


def format_table(result: dict) -> str:
  """The human-readable table of a run() result (or of launch.bench's combined children)."""
  batch = f"batch {result['batch']}"
  if result.get("stage1_batch") not in (None, result["batch"]):
    batch = f"batch {result['batch']} (stage 1: {result['stage1_batch']})"
  rounds = f", {result['rounds']} rounds" if result.get("rounds", 1) > 1 else ""
  lines = [f"{result['preset']}, {batch}, {result['steps']} timed repetitions{rounds}, dtype "
           f"{result['dtype']}, attention {result['attention']}, remat {result['remat']}; "
           f"{result['device_kind']} ({result['platform']}), {result['cpu_count']} CPUs, load "
           f"{result['load_before']} -> {result['load_after']}",
           f"{'part':<10} {'ours s':>9} {'ref s':>9} {'ratio':>7} {'samples/s':>10} "
           f"{'GFLOP/s':>9} {'MFU':>7} {'compile s':>10}"]
  for part in result["parts"]:
    keys = part_keys(part)
    for side in ("jax", "torch"):
      if f"{side}_{part}_error" in result:
        lines.append(f"{part:<10} {side} failed: {result[f'{side}_{part}_error'][:100]}")
    if keys["jax"] not in result:
      if keys["torch"] in result:
        lines.append(f"{part:<10} {'-':>9} {result[keys['torch']]:>9.4f}")
      continue
    name = keys["prefix"] + ("" if keys["kind"] == "train_step" else "forward_")
    ref = result.get(keys["torch"])
    ratio = result.get(keys["ratio"])
    mfu = result.get(f"{name}mfu")
    lines.append(f"{part:<10} {result[keys['jax']]:>9.4f} "
                 f"{'-' if ref is None else f'{ref:.4f}':>9} "
                 f"{'-' if ratio is None else f'{ratio:.3f}':>7} "
                 f"{result[f'{name}samples_per_s']:>10.1f} "
                 f"{result[f'{name}gflops_per_s']:>9.1f} "
                 f"{'-' if mfu is None else f'{100 * mfu:.1f}%':>7} "
                 f"{result['compile_s'].get(part, float('nan')):>10.1f}")
  peak, mem = result["peak_flops"], result["peak_memory_bytes"]
  lines.append(f"peak {'-' if peak is None else f'{peak / 1e9:.1f} GFLOP/s'} "
               f"({result['peak_source']}); peak memory "
               f"{'-' if mem is None else f'{mem / 2 ** 30:.2f} GiB'} "
               f"({result['peak_memory_kind']})")
  return "\n".join(lines)
