"""Input-pipeline throughput: windows/s that `pipeline.make_iterator` delivers from ArrayRecord
shards (decode + A-law on read, batching, shuffling), alone and followed by the AAMP masks
(`masking.make_masks`: point masks, per-block pooling, BERT corruption; jitted on the host
CPU), against what one accelerator consumes.

In training the masks are drawn inside the jitted train step on the accelerator, so the
"+ AAMP on host" row is a pessimistic bound: it charges the mask computation to the host.
`launch.bench --input_pipeline` is the command.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from neuript_jax.data import pipeline


def _data_config(shards: str, batch: int, workers: int):
  cfg = pipeline.default_data_config()
  cfg.sources = [(shards, 1.0)]
  cfg.global_batch_size = batch
  cfg.worker_count = workers
  return cfg


def pipeline_rate(shards: str, batch: int, n_batches: int, workers: int, masks_fn=None,
                  warmup: int = 3) -> tuple[float, float]:
  """(windows per wall second, windows per CPU second of this process) over `n_batches`
  batches after `warmup` (worker start-up is not timed); the CPU rate ignores grain worker
  processes, so it is meaningful for workers=0. masks_fn(i, x) is applied to every batch (and
  waited for) when given."""
  it = pipeline.make_iterator(_data_config(shards, batch, workers), process_index=0,
                              process_count=1)
  try:
    for i in range(warmup):
      x = next(it)["x"]
      if masks_fn is not None:
        jax.block_until_ready(masks_fn(i, x))
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(n_batches):
      x = next(it)["x"]
      if masks_fn is not None:
        jax.block_until_ready(masks_fn(i, x))
    n = n_batches * batch
    return n / (time.perf_counter() - start), n / max(time.process_time() - cpu, 1e-9)
  finally:
    it.close()


def aamp_masks_fn(block_lengths, merge_layers, masking_cfg=None, seed: int = 0):
  """(i, x [B, T, D] numpy) -> (point mask, block masks, corrupted x), jitted on the CPU."""
  from neuript_jax import masking
  masking_cfg = masking_cfg or masking.default_masking_config()
  cpu = jax.devices("cpu")[0]
  fn = jax.jit(lambda k, x: masking.make_masks(k, x, masking_cfg, tuple(block_lengths),
                                               tuple(merge_layers)))
  key = jax.random.key(seed)
  return lambda i, x: fn(jax.random.fold_in(key, i), jax.device_put(x, cpu))


def run(shards: str, batch: int, n_batches: int, worker_counts, gpu_samples_per_s: float,
        block_lengths, merge_layers) -> dict:
  """{"rows": [{"setting", "workers", "windows_per_s", "windows_per_cpu_s", "x_gpu"}], ...};
  x_gpu = windows/s divided by what one accelerator consumes at `gpu_samples_per_s`."""
  import os
  summary = pipeline.dataset_summary(_data_config(shards, batch, 0))
  masks_fn = aamp_masks_fn(block_lengths, merge_layers)
  rows = []
  for w in worker_counts:
    for label, fn in (("pipeline (A-law)", None), ("pipeline + AAMP on host", masks_fn)):
      rate, cpu_rate = pipeline_rate(shards, batch, n_batches, w, fn)
      rows.append({"setting": label, "workers": w, "windows_per_s": rate,
                   "windows_per_cpu_s": cpu_rate if w == 0 else None,
                   "x_gpu": rate / gpu_samples_per_s})
  x = np.zeros((batch, summary["window_len"], summary["channels"]), np.float32)
  jax.block_until_ready(masks_fn(0, x))
  start = time.perf_counter()
  for i in range(n_batches):
    jax.block_until_ready(masks_fn(i, x))
  mask_rate = n_batches * batch / (time.perf_counter() - start)
  return {"input_pipeline": True, "shards": shards, "records": summary["n_records"],
          "window_len": summary["window_len"], "channels": summary["channels"], "batch": batch,
          "batches": n_batches, "rows": rows, "aamp_only_windows_per_s": mask_rate,
          "gpu_samples_per_s": gpu_samples_per_s, "cpu_count": os.cpu_count(),
          "load_after": [round(v, 2) for v in os.getloadavg()]}


def format_table(result: dict) -> str:
  lines = [f"input pipeline: {result['records']} records [{result['window_len']} x "
           f"{result['channels']}] in {result['shards']}, batch {result['batch']}, "
           f"{result['batches']} timed batches, {result['cpu_count']} CPUs, load "
           f"{result['load_after']}",
           f"{'setting':<26} {'workers':>7} {'windows/s':>10} {'x one GPU':>10} "
           f"{'windows/CPU-s':>14}"]
  for r in result["rows"]:
    cpu = r["windows_per_cpu_s"]
    lines.append(f"{r['setting']:<26} {r['workers']:>7} {r['windows_per_s']:>10.0f} "
                 f"{r['x_gpu']:>9.1f}x {'-' if cpu is None else f'{cpu:.0f}':>14}")
  lines.append(f"AAMP masks alone (host CPU, jitted): {result['aamp_only_windows_per_s']:.0f} "
               f"windows/s; one GPU consumes {result['gpu_samples_per_s']:g} samples/s")
  return "\n".join(lines)
