r"""Benchmark: our stage-1/stage-2 train steps and forwards, beside the PyTorch reference's.

  python -m launch.bench --config=neuript_jax/configs/pretrain.py:small --torch_ref=PATH
  python -m launch.bench --config=neuript_jax/configs/pretrain.py:small --torch_ref=PATH \
      --config.data.global_batch_size=8 --parts=train2,forward2 --steps=3 --rounds=3
  python -m launch.bench --config=neuript_jax/configs/pretrain.py:paper --parts=train1,train2
  python -m launch.bench --input_pipeline --config=neuript_jax/configs/pretrain.py:paper
  python -m launch.bench --config=neuript_jax/configs/finetune.py:small --side=jax \
      --parts=forward2 --thunk_profile=/tmp/thunks

The model, the batch (`data.global_batch_size`) and the seed come from a whole experiment
config (`--config=FILE[:ARG]` plus `--config.*` overrides; `neuript_jax/bench/steps.py`
`bench_configs` says which stage takes what). Flags hold what is not config: the parts,
steps, sides and the reference's path.

Without --side, every side runs in a child process of its own (`--side=jax` / `--side=torch`
of this launcher), one after the other, stage by stage and round by round, and this process
collects their JSON and prints the combined table and ratios. Batches are picked to fit the
host's memory: for each stage a one-sample probe of the reference's train step (a child
too) measures its peak RSS per sample, and the stage runs at the largest batch up to the
config's that fits --memory_headroom of MemAvailable on both sides (our side checks XLA's
temporaries after compiling and skips a part that would not fit). A part that would not fit is
skipped with a line that says which and why; a child that the kernel's OOM killer ends is
reported as such and the other parts go on. Children are marked first in line for the OOM
killer (oom_score_adj 1000), so that they, not a neighbour's process, are the ones it ends.

--side=jax|torch times one side in this process; --side=both alternates the sides in one
process (on CPU the two sides then slow each other through host memory; BENCHMARKS.md).
--side=jax --thunk_profile=DIR then traces --steps calls of each part with the jax profiler
and writes, per part, DIR/<part>_thunks.csv (ms per call of every XLA:CPU thunk, with its
kind, shape and jax op_name) and DIR/<part>_thunks.png (the time by module and kind);
`neuript_jax/bench/thunk_profile.py`.

Prints a table and, last, one JSON line. Keys (stage 2 unprefixed, stage 1 with "stage1_"):
batch / stage1_batch, jax_train_step_s, torch_train_step_s, ratio (ours / reference; with
--rounds, medians over rounds of each side's per-round median), ratio_per_round, the same for
stage1_ and forward_ (jax_forward_s, torch_forward_s, forward_ratio, ...), samples_per_s,
gflops_per_s, mfu (train step; analytic FLOPs from neuript_jax.model.counting), compile_s per
part, peak_flops and its source, peak_memory_bytes (device peak on accelerators, process RSS
on CPU; per child in `children`), skipped (part -> why), device_kind, cpu_count,
torch_threads, jax_version, torch_version, load averages. Method: neuript_jax/bench/steps.py.

--input_pipeline instead measures the grain pipeline's windows/s from ArrayRecord shards
(A-law on read) alone and with the AAMP masks (block lengths of the config's model) computed
per batch on the host, against what one GPU at --gpu_samples_per_s consumes
(neuript_jax/bench/input_pipeline.py). The shards are the pretraining demo's synthetic corpus
converted with pretrain_tcp20 (4 s windows, 256 x 20), written under --workdir once.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import app, flags
from ml_collections import config_flags

from neuript_jax import host_memory

CONFIG = config_flags.DEFINE_config_file(
    "config", "neuript_jax/configs/pretrain.py:small", "experiment config FILE[:ARG] "
    "(neuript_jax/configs/pretrain.py or finetune.py, ARG tiny|small|paper): model, "
    "data.global_batch_size, seed")
TORCH_REF = flags.DEFINE_string("torch_ref", None, "the reference source folder (holds "
                                "cross_models/ and utils/); omit for our side only")
STEPS = flags.DEFINE_integer("steps", 3, "timed repetitions per part (medians are reported)")
WARMUP = flags.DEFINE_integer("warmup", 1, "untimed calls per part after compilation")
PARTS = flags.DEFINE_list("parts", ["train2", "train1", "forward2", "forward1"],
                          "parts to time: train2, train1, forward2, forward1")
SIDE = flags.DEFINE_enum("side", None, ["jax", "torch", "both"], "time one side in this "
                         "process (jax, torch) or both alternating in this process; unset: "
                         "each side in a child process of its own")
ROUNDS = flags.DEFINE_integer("rounds", 1, "without --side: rounds of children (each round "
                              "runs every stage's sides once, in fresh processes)")
HEADROOM = flags.DEFINE_float("memory_headroom", 0.85, "fraction of MemAvailable a child may "
                              "be predicted to use")
JSON_OUT = flags.DEFINE_string("json_out", None, "also write the JSON result to this file")
RELEASE = flags.DEFINE_bool("release_memory", False, "--side=both: malloc_trim after every "
                            "timed call (untimed), when both sides do not fit in host memory "
                            "together; costs the reference ~10%, so the result records it")
THUNKS = flags.DEFINE_string("thunk_profile", None, "--side=jax: after timing, trace --steps "
                             "calls of each part with the jax profiler and write "
                             "DIR/<part>_thunks.csv (ms per XLA:CPU thunk with its kind, shape "
                             "and op_name) and DIR/<part>_thunks.png (by module and kind)")
INPUT = flags.DEFINE_bool("input_pipeline", False, "benchmark the input pipeline instead")
WORKDIR = flags.DEFINE_string("workdir", "/tmp/neuript_bench", "input pipeline: where the "
                              "synthetic corpus and its shards are written (reused)")
WORKERS = flags.DEFINE_list("pipeline_workers", ["0", "2"], "input pipeline: grain worker counts")
BATCHES = flags.DEFINE_integer("pipeline_batches", 50, "input pipeline: timed batches per setting")
GPU_RATE = flags.DEFINE_float("gpu_samples_per_s", 600.0, "input pipeline: what one GPU "
                              "consumes (samples/s)")
# The grammar before --config: named here only to say what replaces it.
_REMOVED = {
    "preset": "--config=neuript_jax/configs/pretrain.py:<tiny|small|paper>",
    "model_override": "--config.model.<field>=<value>",
    "batch": "--config.data.global_batch_size=<batch>",
}
for _name, _use in _REMOVED.items():
  flags.DEFINE_string(_name, None, f"removed: use {_use}")

LOG_PREFIX = "[bench]"


def say(text: str) -> None:
  print(f"{LOG_PREFIX} {text}", flush=True)


# -- one side in this process ---------------------------------------------------------------------

def run_here(side: str) -> dict:
  from neuript_jax.bench import steps as bench
  factory = None
  if side == "torch" and not TORCH_REF.value:
    raise app.UsageError("--side=torch needs --torch_ref")
  if TORCH_REF.value and side != "jax":
    from neuript_jax.bench import torch_reference
    dtype = CONFIG.value.model.dtype
    factory = lambda cfg, batch_np, masks, parts: torch_reference.bench_parts(
        TORCH_REF.value, cfg, batch_np, masks, parts, dtype)
  try:
    result = bench.run(CONFIG.value, STEPS.value, WARMUP.value, tuple(PARTS.value), factory,
                       CONFIG.value.get("name", ""), RELEASE.value, ours=side != "torch",
                       thunk_profile_dir=THUNKS.value)
  except ValueError as e:
    raise app.UsageError(str(e))
  print(bench.format_table(result))
  for part, prof in result.get("thunk_profile", {}).items():
    kinds = ", ".join(f"{k} {v:.1f}" for k, v in prof["ms_per_call_by_kind"].items())
    say(f"{part} thunks, ms per call: {kinds}; {prof['csv']}, {prof['png']}")
    for name, ms in prof["top_scopes"].items():
      say(f"  {ms:8.1f}  {name}")
  return result


# -- each side in a child process -----------------------------------------------------------------

def child_command(side: str, parts, batch: int, steps: int, json_path: str) -> list[str]:
  """This launcher for one side, the same config (at `batch`), writing JSON to json_path."""
  from neuript_jax.bench import children
  cmd = [sys.executable, "-m", "launch.bench", *children.config_args(sys.argv[1:]),
         f"--config.data.global_batch_size={batch}", f"--side={side}",
         f"--parts={','.join(parts)}", f"--steps={steps}", f"--warmup={WARMUP.value}",
         f"--json_out={json_path}"]
  return cmd + ([f"--torch_ref={TORCH_REF.value}"] if TORCH_REF.value else [])


def run_child(side: str, parts, batch: int, steps: int, tmpdir: str, tag: str, **info) -> dict:
  from neuript_jax.bench import children
  json_path = os.path.join(tmpdir, f"{tag}.json")
  out = children.run_process(child_command(side, parts, batch, steps, json_path), json_path,
                             os.path.join(tmpdir, f"{tag}.log"))
  out.update(side=side, parts=list(parts), batch=batch, **info)
  return out


def pick_batch(stage: int, cap: int, tmpdir: str, skipped: dict, log: list) -> int:
  """The largest batch <= cap whose reference train step is predicted to fit the host's
  memory (a batch-1 probe child); cap without --torch_ref; 0 if not one sample fits; None
  if the probe failed."""
  from neuript_jax.bench import children
  if not TORCH_REF.value:
    return cap
  probe = run_child("torch", [f"train{stage}"], 1, 0, tmpdir, f"probe_stage{stage}",
                    stage=stage, role="memory probe")
  log.append(probe)
  if probe["result"] is None:
    skipped[f"torch_stage{stage}"] = f"memory probe at batch 1 failed: {probe['error']}"
    return None
  available = host_memory.mem_available_bytes()
  if available is None:
    say(f"stage {stage}: MemAvailable unknown; batch {cap} without a memory check")
    return cap
  fit = children.batch_from_probe(probe["result"], cap, available, HEADROOM.value)
  gib = lambda b: f"{b / 2 ** 30:.1f} GiB"
  say(f"stage {stage}: the reference's train step takes ~{gib(fit['per_sample_bytes'])} per "
      f"sample over {gib(fit['base_bytes'])} (probe at batch 1); {gib(available)} available, "
      f"{HEADROOM.value:.0%} of it usable -> batch {fit['batch']}" +
      ("" if fit["batch"] == cap else f" (the config asks for {cap})"))
  return fit["batch"]


def run_children() -> dict:
  """Each side in its own process, stage by stage, round by round (module docstring)."""
  from neuript_jax.bench import children
  from neuript_jax.configs.common import to_model_config
  sides = ["jax"] + (["torch"] if TORCH_REF.value else [])
  cap = int(CONFIG.value.data.global_batch_size)
  skipped, log, stage_runs = {}, [], {}
  tmpdir = tempfile.mkdtemp(prefix="neuript_bench_")
  say(f"children's logs and JSON: {tmpdir}")
  for stage in (2, 1):
    parts = [p for p in PARTS.value if p in children.STAGE_PARTS[stage]]
    if not parts:
      continue
    batch = pick_batch(stage, cap, tmpdir, skipped, log)
    stage_sides = list(sides)
    if batch is None:          # the probe failed: ours alone at the config's batch
      stage_sides, batch = ["jax"], cap
    elif batch == 0:
      for p in parts:
        skipped[f"torch_{p}"] = (f"the reference's step is predicted not to fit in "
                                 f"{HEADROOM.value:.0%} of the host memory available, even "
                                 "at batch 1")
      stage_sides, batch = ["jax"], cap
    stage_runs[stage] = {"batch": batch, "parts": parts, "sides": stage_sides,
                         "children": []}
  for r in range(1, ROUNDS.value + 1):
    for stage, run in stage_runs.items():
      for side in run["sides"]:
        child = run_child(side, run["parts"], run["batch"], STEPS.value, tmpdir,
                          f"round{r}_stage{stage}_{side}", stage=stage, round=r,
                          role="timed")
        log.append(child)
        run["children"].append(child)
        say(f"round {r}/{ROUNDS.value} {children.child_line(child)}")
        if child["result"] is None:
          skipped[f"{side}_stage{stage}_round{r}"] = child["error"]
  meta = {"preset": CONFIG.value.get("name", ""), "steps": STEPS.value,
          "rounds": ROUNDS.value, "one_side_per_process": True,
          "dtype": CONFIG.value.model.dtype, "attention": CONFIG.value.model.attention,
          "remat": CONFIG.value.model.remat, "memory_headroom": HEADROOM.value,
          "skipped": skipped}
  result = children.combine(stage_runs, to_model_config(CONFIG.value.model), PARTS.value,
                            meta)
  result["children"] = [children.child_summary(c) for c in log]
  return result


def main(argv):
  del argv
  for name, use in _REMOVED.items():
    if flags.FLAGS[name].value is not None:
      raise app.UsageError(f"--{name} was removed: use {use}")
  if THUNKS.value and SIDE.value != "jax":
    raise app.UsageError("--thunk_profile needs --side=jax (it traces our side in this process)")
  if ROUNDS.value < 1 or STEPS.value < 0:
    raise app.UsageError(f"--rounds must be >= 1 and --steps >= 0 "
                         f"(got {ROUNDS.value}, {STEPS.value})")
  from neuript_jax.bench import steps as bench
  bad = [p for p in PARTS.value if p not in bench.PARTS]
  if bad:
    raise app.UsageError(f"--parts {bad}: choose from {', '.join(bench.PARTS)}")
  if INPUT.value:
    from data_prep import demo
    from neuript_jax.bench import input_pipeline as throughput
    from neuript_jax.configs import pretrain as pretrain_config
    from neuript_jax.configs.common import to_model_config
    synthetic = pretrain_config.get_config().synthetic     # 4 s windows, 20 TCP channels
    shards = demo.pretrain_corpus(WORKDIR.value, synthetic)
    model_cfg = to_model_config(CONFIG.value.model)
    result = throughput.run(shards, int(CONFIG.value.data.global_batch_size), BATCHES.value,
                            [int(w) for w in WORKERS.value], GPU_RATE.value,
                            model_cfg.block_lengths(), model_cfg.merge_layers)
    print(throughput.format_table(result))
  elif SIDE.value is None:
    result = run_children()
    for key, why in result["skipped"].items():
      say(f"skipped {key}: {why}")
    print(bench.format_table(result))
  else:
    result = run_here(SIDE.value)
  line = json.dumps(result, default=str)
  if JSON_OUT.value:
    from neuript_jax.files import atomic_write_text
    atomic_write_text(JSON_OUT.value, line + "\n")
  print(line)


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  app.run(main)
