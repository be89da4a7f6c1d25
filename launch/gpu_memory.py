r"""Peak accelerator memory of the paper stage-1 train step, ours or the reference's, at a few
batch sizes, and the largest batch that fits.

  python -m launch.gpu_memory --side=jax --batches=1,2,4 --json_out=FILE
  python -m launch.gpu_memory --side=torch --torch_ref=/path/to/NeurIPT --batches=1,2,4
  python -m launch.gpu_memory --config=neuript_jax/configs/pretrain.py:tiny --capacity_gib=4

The model is the experiment config's (`--config=FILE[:ARG]`, default
`neuript_jax/configs/pretrain.py:paper`: bf16 compute, remat per block; `--config.*`
overrides); its data.global_batch_size is replaced by each batch. Every batch runs in a
process of its own (`--eval_batch=B`: `neuript_jax.bench.steps.run` of the train1 part, one
warm-up and one timed step on the step-0 AAMP masks), so one batch's peak is not another's
and an out-of-memory error ends only that process. Ours: the device's `peak_bytes_in_use`
(XLA_PYTHON_CLIENT_PREALLOCATE=false); the reference's: `torch.cuda.max_memory_allocated`
(and the reserved peak), with JAX on the CPU for the masks. Without a GPU the peak is the
process's peak RSS.

After the listed batches, `neuript_jax.bench.memory_fit.largest_fitting_batch` searches the
largest batch that fits the device (its memory limit, or --capacity_gib), from the linear fit
of the peaks, up to --max_evals processes in all and within --time_budget_s; a batch that
fails counts as not fitting. The JSON (rewritten after every batch, so a run cut short keeps
what it measured) has one row per batch and the search result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
    "config", "neuript_jax/configs/pretrain.py:paper", "experiment config FILE[:ARG] whose "
    "model is measured")
SIDE = flags.DEFINE_enum("side", "jax", ["jax", "torch"], "whose step: ours or the reference's")
BATCHES = flags.DEFINE_list("batches", ["1", "2", "4"], "batch sizes measured first")
TORCH_REF = flags.DEFINE_string("torch_ref", None, "reference source folder (--side=torch)")
CAPACITY = flags.DEFINE_float("capacity_gib", None, "memory to fit (default: the device's "
                              "limit as the first batch's process reports it)")
MAX_EVALS = flags.DEFINE_integer("max_evals", 6, "batch processes in all (the listed first)")
BUDGET = flags.DEFINE_float("time_budget_s", 300.0, "start no batch process after this long")
EVAL_TIMEOUT = flags.DEFINE_float("eval_timeout_s", 240.0, "time limit of one batch process")
JSON_OUT = flags.DEFINE_string("json_out", None, "write the result JSON here")
EVAL_BATCH = flags.DEFINE_integer("eval_batch", None, "internal: measure this one batch in "
                                  "this process and print one JSON line")

GIB = 2 ** 30


def config_at(batch: int):
  config = CONFIG.value.copy_and_resolve_references()
  config.data.global_batch_size = batch
  return config


def measure_jax(batch: int) -> dict:
  import jax
  from neuript_jax.bench import steps
  result = steps.run(config_at(batch), 1, 1, ("train1",))
  if "jax_train1_error" in result:
    raise RuntimeError(result["jax_train1_error"])
  stats = jax.devices()[0].memory_stats() or {}
  return {"peak_bytes": result["peak_memory_bytes"], "peak_kind": result["peak_memory_kind"],
          "limit_bytes": stats.get("bytes_limit"),
          "xla_temp_bytes": result["jax_temp_bytes"].get("train1"),
          "compile_s": result["compile_s"].get("train1"),
          "step_s": result.get("jax_stage1_train_step_s"),
          "device_kind": result["device_kind"], "jax_version": result["jax_version"]}


def measure_torch(batch: int) -> dict:
  import resource
  import torch
  from neuript_jax.bench import steps, torch_reference
  config = config_at(batch)
  dtype = config.model.dtype
  factory = lambda cfg, batch_np, masks, parts: torch_reference.bench_parts(
      TORCH_REF.value, cfg, batch_np, masks, parts, dtype)
  result = steps.run(config, 1, 1, ("train1",), factory, ours=False)
  if "torch_train1_error" in result:
    raise RuntimeError(result["torch_train1_error"])
  out = {"torch_version": torch.__version__, "torch_device": result.get("torch_device"),
         "step_s": result.get("torch_stage1_train_step_s")}
  if torch.cuda.is_available():
    out.update(peak_bytes=int(torch.cuda.max_memory_allocated()),
               peak_kind="torch.cuda.max_memory_allocated",
               reserved_peak_bytes=int(torch.cuda.max_memory_reserved()),
               limit_bytes=int(torch.cuda.mem_get_info()[1]),
               device_kind=torch.cuda.get_device_name())
  else:
    out.update(peak_bytes=int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
               peak_kind="host peak RSS", limit_bytes=None, device_kind="cpu")
  return out


def config_args(argv) -> list[str]:
  """The --config / --config.* arguments of argv (values given as separate words kept)."""
  out, take = [], False
  for a in argv:
    if take:
      out.append(a)
      take = False
    elif a == "--config" or (a.startswith("--config.") and "=" not in a):
      out.append(a)
      take = True
    elif a.startswith("--config=") or a.startswith("--config."):
      out.append(a)
  return out


def run_eval(batch: int) -> dict:
  """One batch in a child process -> its JSON row (ok False with the error on failure)."""
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
  if SIDE.value == "torch":
    env["JAX_PLATFORMS"] = "cpu"          # the masks only; the GPU is the reference's
  argv = [sys.executable, "-m", "launch.gpu_memory", f"--side={SIDE.value}",
          *config_args(sys.argv[1:]), f"--eval_batch={batch}"]
  if TORCH_REF.value:
    argv.append(f"--torch_ref={TORCH_REF.value}")
  start = time.perf_counter()
  try:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                          timeout=EVAL_TIMEOUT.value)
  except subprocess.TimeoutExpired:
    return {"batch": batch, "ok": False, "error": f"timed out after {EVAL_TIMEOUT.value:.0f} s",
            "wall_s": round(time.perf_counter() - start, 1)}
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode == 0 and lines:
    row = json.loads(lines[-1])
  else:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    row = {"batch": batch, "ok": False, "error": " | ".join(tail)[-600:] or
           f"exit {proc.returncode}"}
  row["wall_s"] = round(time.perf_counter() - start, 1)
  return row


def search(side, batches, capacity_gib, max_evals, budget_s, evaluate,
           write=lambda res: None):
  """Measure `batches` in order, then search the largest fitting batch; -> result dict.

  evaluate(b) -> row with ok, peak_bytes, limit_bytes. The capacity is `capacity_gib`, else
  the first reported limit_bytes. A failed batch counts as twice the capacity.
  """
  from neuript_jax.bench.memory_fit import largest_fitting_batch
  start = time.perf_counter()
  rows = []
  result = {"side": side, "rows": rows}
  state = {"capacity": capacity_gib * GIB if capacity_gib else None}

  def peak_of(b):
    if time.perf_counter() - start > budget_s:
      raise TimeoutError(b)
    row = evaluate(b)
    rows.append(row)
    if state["capacity"] is None and row.get("limit_bytes"):
      state["capacity"] = float(row["limit_bytes"])
    result["capacity_bytes"] = state["capacity"]
    write(result)
    if not row.get("ok"):
      return 2.0 * (state["capacity"] or float(2 ** 62))
    return float(row["peak_bytes"])

  evaluated = {}
  try:
    for b in batches:
      evaluated[b] = peak_of(b)
    if state["capacity"] is None:
      result["largest"] = None
      result["note"] = "no memory limit reported: give --capacity_gib for the search"
    else:
      result["largest"] = largest_fitting_batch(
          peak_of, state["capacity"], evaluated, max(0, max_evals - len(batches)), first=())
  except TimeoutError as e:
    result["largest"] = None
    result["note"] = f"time budget {budget_s:.0f} s spent before batch {e.args[0]}"
  write(result)
  return result


def main(argv):
  del argv
  if EVAL_BATCH.value is not None:
    b = EVAL_BATCH.value
    try:
      row = (measure_jax if SIDE.value == "jax" else measure_torch)(b)
      row.update(batch=b, ok=True)
    except app.UsageError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (out of memory, mostly)
      row = {"batch": b, "ok": False, "error": f"{type(e).__name__}: {str(e)[:500]}"}
    print(json.dumps(row, default=str))
    return
  if SIDE.value == "torch" and not TORCH_REF.value:
    raise app.UsageError("--side=torch needs --torch_ref")
  try:
    batches = [int(b) for b in BATCHES.value]
  except ValueError:
    raise app.UsageError(f"--batches {BATCHES.value}: integers please") from None

  def write(result):
    if JSON_OUT.value:
      from neuript_jax.files import atomic_write_text
      atomic_write_text(JSON_OUT.value, json.dumps(result, default=str) + "\n")

  result = search(SIDE.value, batches, CAPACITY.value, MAX_EVALS.value, BUDGET.value,
                  run_eval, write)
  print(format_table(result))
  print(json.dumps(result, default=str))


def format_table(result: dict) -> str:
  lines = [f"{result['side']} stage-1 train step: batch, peak GiB (ok / error)"]
  for r in result["rows"]:
    if r.get("ok"):
      lines.append(f"  {r['batch']:>4}  {r['peak_bytes'] / GIB:8.2f}  ({r.get('peak_kind')})")
    else:
      lines.append(f"  {r['batch']:>4}  failed: {str(r.get('error'))[:160]}")
  cap = result.get("capacity_bytes")
  largest = result.get("largest")
  if largest:
    lines.append(f"largest fitting batch at {cap / GIB:.1f} GiB: {largest['batch']} "
                 f"({'exact' if largest['exact'] else 'not bracketed'}; linear fit "
                 f"{largest['predicted']})")
  else:
    lines.append(f"largest fitting batch: not found ({result.get('note', '')})")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
