r"""Benchmark: our stage-1/stage-2 train steps and forwards, beside the PyTorch reference's.

  python -m launch.bench --preset=small --torch_ref=/path/to/NeurIPT [--steps=5] [--batch=8]
  python -m launch.bench --preset=paper --model_override=dtype=bfloat16 --parts=train1,train2
  python -m launch.bench --input_pipeline [--batch=64] [--workdir=/tmp/neuript_bench]

Prints a table and, last, one JSON line. Keys (stage 2 unprefixed, stage 1 with "stage1_"):
preset, batch, jax_train_step_s, torch_train_step_s, ratio (ours / reference), the same for
stage1_ and forward_ (jax_forward_s, torch_forward_s, forward_ratio, ...), samples_per_s,
gflops_per_s, mfu (train step; analytic FLOPs from neuript_jax.model.counting), compile_s per
part, peak_flops and its source, peak_memory_bytes (device peak on accelerators, process RSS
on CPU), device_kind, cpu_count, torch_threads, jax_version, torch_version, load averages
before and after, and every timed repetition. Method: neuript_jax/bench/steps.py.

--input_pipeline instead measures the grain pipeline's windows/s from ArrayRecord shards
(A-law on read) alone and with the AAMP masks (block lengths of --preset) computed per batch
on the host, against what one GPU at --gpu_samples_per_s consumes
(neuript_jax/bench/input_pipeline.py). The shards are the pretraining demo's synthetic corpus
converted with pretrain_tcp20 (4 s windows, 256 x 20), written under --workdir once.
"""

from __future__ import annotations

import json

from absl import app, flags

from neuript_jax import host_memory

PRESET = flags.DEFINE_enum("preset", "small", ["tiny", "small", "paper"],
                           "model preset (neuript_jax/configs/<preset>.py)")
TORCH_REF = flags.DEFINE_string("torch_ref", None, "the reference source folder (holds "
                                "cross_models/ and utils/); omit for our side only")
STEPS = flags.DEFINE_integer("steps", 5, "timed repetitions (medians are reported)")
WARMUP = flags.DEFINE_integer("warmup", 1, "untimed calls per part after compilation")
BATCH = flags.DEFINE_integer("batch", None, "batch size (default: the preset's)")
PARTS = flags.DEFINE_list("parts", ["train2", "train1", "forward2", "forward1"],
                          "parts to time: train2, train1, forward2, forward1")
OVERRIDES = flags.DEFINE_multi_string("model_override", [], "model field=value, e.g. "
                                      "dtype=bfloat16, attention=dot_product_attention")
JSON_OUT = flags.DEFINE_string("json_out", None, "also write the JSON result to this file")
RELEASE = flags.DEFINE_bool("release_memory", False, "malloc_trim after every timed call "
                            "(untimed), when both sides do not fit in host memory together; "
                            "costs the reference ~10%, so the result records it")
SIDE = flags.DEFINE_enum("side", "both", ["both", "jax", "torch"], "which sides to time in "
                         "this process: both (alternating), or one (run the other in a process "
                         "of its own; BENCHMARKS.md explains why)")
INPUT = flags.DEFINE_bool("input_pipeline", False, "benchmark the input pipeline instead")
WORKDIR = flags.DEFINE_string("workdir", "/tmp/neuript_bench", "input pipeline: where the "
                              "synthetic corpus and its shards are written (reused)")
WORKERS = flags.DEFINE_list("pipeline_workers", ["0", "2"], "input pipeline: grain worker counts")
BATCHES = flags.DEFINE_integer("pipeline_batches", 50, "input pipeline: timed batches per setting")
GPU_RATE = flags.DEFINE_float("gpu_samples_per_s", 600.0, "input pipeline: what one GPU "
                              "consumes (samples/s)")


def main(argv):
  del argv
  if INPUT.value:
    from neuript_jax.configs import pretrain as pretrain_config
    from neuript_jax.configs.common import to_model_config
    from neuript_jax.bench import input_pipeline as throughput
    from neuript_jax.bench import steps as bench
    from neuript_jax.train import pretrain
    shards = pretrain.prepare_synthetic(WORKDIR.value, pretrain_config.get_config().synthetic)
    model_cfg = to_model_config(bench.preset_model(PRESET.value, OVERRIDES.value)[0])
    result = throughput.run(shards, BATCH.value or 64, BATCHES.value,
                            [int(w) for w in WORKERS.value], GPU_RATE.value,
                            model_cfg.block_lengths(), model_cfg.merge_layers)
    print(throughput.format_table(result))
  else:
    from neuript_jax.bench import steps as bench
    bad = [p for p in PARTS.value if p not in bench.PARTS]
    if bad:
      raise app.UsageError(f"--parts {bad}: choose from {', '.join(bench.PARTS)}")
    try:
      model, preset_batch = bench.preset_model(PRESET.value, OVERRIDES.value)
    except ValueError as e:
      raise app.UsageError(str(e))
    factory = None
    if SIDE.value == "torch" and not TORCH_REF.value:
      raise app.UsageError("--side=torch needs --torch_ref")
    if TORCH_REF.value and SIDE.value != "jax":
      from neuript_jax.bench import torch_reference
      factory = lambda cfg, batch_np, masks, parts: torch_reference.bench_parts(
          TORCH_REF.value, cfg, batch_np, masks, parts, model.dtype)
    result = bench.run(model, BATCH.value or preset_batch, STEPS.value, WARMUP.value,
                       tuple(PARTS.value), factory, PRESET.value, RELEASE.value,
                       ours=SIDE.value != "torch")
    print(bench.format_table(result))
  line = json.dumps(result, default=str)
  if JSON_OUT.value:
    with open(JSON_OUT.value, "w") as f:
      f.write(line + "\n")
  print(line)


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  app.run(main)
