"""Each benchmark side in a process of its own: running a child, telling how it ended (an OOM
kill included), sizing a stage's batch from a memory probe, and combining the children's JSON
into one result. `launch/bench.py` (no --side) builds the commands and drives these.

A child's result is `steps.run`'s dict for one side and one stage at one batch; the combined
result has the same keys (`steps.summarize`), each side's time being the median over rounds of
its per-round medians, plus `ratio_per_round`, `children` and `skipped`.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time

from neuript_jax import host_memory
from neuript_jax.bench import steps

STAGE_PARTS = {2: ("train2", "forward2"), 1: ("train1", "forward1")}


def config_args(argv) -> list[str]:
  """The --config and --config.* arguments of a command line (`--f=v` and `--f v` forms)."""
  out, take_next = [], False
  for arg in argv:
    if take_next:
      out.append(arg)
      take_next = False
    elif arg == "--config" or arg.startswith(("--config.", "--config=")):
      out.append(arg)
      take_next = "=" not in arg
  return out


def oom_kills(path: str = "/proc/vmstat") -> int | None:
  """The kernel's count of OOM kills since boot (`oom_kill` in /proc/vmstat), None if unknown."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("oom_kill "):
          return int(line.split()[1])
  except (OSError, ValueError, IndexError):
    return None
  return None


def exit_error(returncode: int, oom_before: int | None, oom_after: int | None,
               log_tail: list[str]) -> str:
  """What went wrong with a child that exited with `returncode` (nonzero), in one line."""
  if returncode == -signal.SIGKILL:
    if oom_before is not None and oom_after is not None:
      if oom_after > oom_before:
        return "killed by the kernel's OOM killer (host memory ran out)"
      return "killed by SIGKILL (not the OOM killer: its count did not change)"
    return "killed by SIGKILL (the kernel's OOM killer, most likely)"
  if returncode < 0:
    return f"killed by signal {signal.Signals(-returncode).name}"
  lines = [l.rstrip() for l in log_tail if l.strip()]
  errors = [l for l in lines if "Error" in l or "error:" in l]
  return f"exit status {returncode}: {(errors or lines or ['no output'])[-1][:300]}"


def run_process(cmd: list[str], json_path: str, log_path: str) -> dict:
  """Run one child (stdout and stderr to log_path) that writes its JSON result to json_path.

  Returns {"returncode", "wall_s", "result" (the JSON or None), "error" (None or one line),
  "log"}. The child is first in line for the OOM killer (`host_memory.make_oom_victim`)."""
  before = oom_kills()
  start = time.perf_counter()
  with open(log_path, "w") as log:
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                          preexec_fn=host_memory.make_oom_victim)
  out = {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - start, 1),
         "result": None, "error": None, "log": log_path}
  if proc.returncode == 0 and os.path.exists(json_path):
    with open(json_path) as f:
      out["result"] = json.loads(f.read())
    return out
  with open(log_path) as f:
    tail = f.readlines()[-200:]
  if proc.returncode == 0:
    out["error"] = f"exited 0 but wrote no {json_path}"
  else:
    out["error"] = exit_error(proc.returncode, before, oom_kills(), tail)
  out["error"] += f" (log {log_path})"
  return out


def batch_from_probe(probe: dict, cap: int, available: int, headroom: float) -> dict:
  """A stage's batch from a batch-1 probe result (`steps.run` of the train part): the probe's
  peak RSS above its RSS before building the sides is taken as one sample's cost (so the
  model and optimizer count per sample too: an over-estimate), and the batch is the largest
  <= cap with base + batch * per_sample <= headroom * available.

  Returns {"batch", "per_sample_bytes", "base_bytes", "available_bytes"}."""
  if probe.get("batch") != 1:
    raise ValueError(f"the memory probe must run at batch 1, got {probe.get('batch')}")
  base = int(probe.get("rss_before_sides_bytes") or 0)
  per_sample = max(int(probe["peak_memory_bytes"]) - base, 0)
  batch = host_memory.largest_fitting_batch(base, per_sample, available, cap, headroom)
  return {"batch": batch, "per_sample_bytes": per_sample, "base_bytes": base,
          "available_bytes": int(available)}


def combine(stage_runs: dict, model_cfg, parts, meta: dict) -> dict:
  """One result from the timed children.

  stage_runs: {stage: {"batch", "children": [{"result": steps.run dict or None, ...}]}};
  parts: the requested parts (order kept); meta: keys copied into the result (preset, steps,
  rounds, dtype, ...). Per part and side: the median over rounds of each child's median, the
  ratio of those medians (summarize's keys), and `ratio_per_round`.
  """
  out = dict(meta)
  out.update({"parts": [], "compile_s": {}, "ratio_per_round": {}, "times": {}})
  first = {}
  for stage, run in stage_runs.items():
    batch = run["batch"]
    out["batch" if stage == 2 else "stage1_batch"] = batch
    times = {"jax": {}, "torch": {}}
    for child in run["children"]:
      res = child.get("result")
      if res is None:
        continue
      out["compile_s"].update(res.get("compile_s", {}))
      for side, per in res.get("times", {}).items():
        first.setdefault(side, res)
        for part, ts in per.items():
          if ts:
            times[side].setdefault(part, []).append(statistics.median(ts))
      out.update({k: v for k, v in res.items() if k.endswith("_error")})
    stage_parts = [p for p in parts if p in STAGE_PARTS[stage]]
    out["parts"] += stage_parts
    peak = first.get("jax", {}).get("peak_flops")
    out.update(steps.summarize(times, model_cfg, batch, stage_parts, peak))
    for part in stage_parts:
      j, t = times["jax"].get(part, []), times["torch"].get(part, [])
      if j and t:
        out["ratio_per_round"][part] = [round(a / b, 4) for a, b in zip(j, t)]
      for side in times:
        if part in times[side]:
          out["times"].setdefault(side, {})[part] = [round(v, 4) for v in times[side][part]]
  if "batch" not in out:
    out["batch"] = out.get("stage1_batch")
  ref = first.get("jax") or first.get("torch") or {}
  for key in ("peak_flops", "peak_source", "platform", "device_kind", "cpu_count",
              "jax_version", "python", "glibc_tunables", "xla_flags"):
    out[key] = ref.get(key)
  for key in ("torch_version", "torch_threads", "torch_device"):
    if key in first.get("torch", {}):
      out[key] = first["torch"][key]
  done = [c["result"] for run in stage_runs.values() for c in run["children"] if c.get("result")]
  out["peak_memory_bytes"] = max((r["peak_memory_bytes"] for r in done), default=None)
  out["peak_memory_kind"] = "host peak RSS of the largest child"
  out["load_before"] = done[0]["load_before"] if done else None
  out["load_after"] = done[-1]["load_after"] if done else None
  return out


def child_summary(child: dict) -> dict:
  """The JSON-safe record of one child in the combined result."""
  rec = {k: child.get(k) for k in ("role", "stage", "round", "side", "batch", "parts",
                                   "returncode", "wall_s", "error")}
  res = child.get("result")
  if res:
    rec.update(peak_memory_bytes=res["peak_memory_bytes"], load_before=res["load_before"],
               load_after=res["load_after"])
  return rec


def child_line(child: dict) -> str:
  """One line about a finished child: its times, or how it failed."""
  head = f"stage {child['stage']} {child['side']:<5} batch {child['batch']}"
  res = child.get("result")
  if res is None:
    return f"{head}: FAILED, {child['error']}"
  timed = []
  for p in child["parts"]:
    key = steps.part_keys(p)[child["side"]]
    if key in res:
      timed.append(f"{p} {res[key]:.3f} s")
    elif f"{child['side']}_{p}_error" in res:
      why = res[f"{child['side']}_{p}_error"]
      timed.append(f"{p} {why[:120]}")
  return (f"{head}: {', '.join(timed) or 'nothing timed'} (peak RSS "
          f"{res['peak_memory_bytes'] / 2 ** 30:.1f} GiB, {child['wall_s']:.0f} s wall)")
