r"""Compile the stage-1 or stage-2 train step for a TPU slice with libtpu, without a TPU.

  python -m launch.aot_memory --topology=v5p-8 \
      --config=neuript_jax/configs/pretrain.py:paper --config.data.global_batch_size=32

libtpu's compiler runs on this host (requirements-tpu.txt: installed into the environment, or
with `pip install --no-deps --target .venv-tpu -r requirements-tpu.txt` and PYTHONPATH=.venv-tpu;
without libtpu the command says so and exits 2). The step is compiled for the slice's compile-only devices from
shapes only and the TPU compiler's own per-chip numbers are printed: arguments (params,
optimizer state, batch shard), temporaries, peak (arguments + outputs + temporaries -
aliased), FLOPs and HBM bytes accessed; then the roofline of one chip from
`neuript_jax.bench.tpu.CHIPS` (step time, samples/s per chip, MFU bound, memory- or
compute-bound). The config file decides the stage: a config with `masking` (configs/pretrain.py)
compiles the stage-1 (AAMP) step, one without (configs/finetune.py) the stage-2 step.

Topologies: v4-N and v5p-N (N TensorCores, N / 2 chips), v5e-N and v6e-N (N chips);
--num_slices=S joins S such slices over DCN (the data axis spans the slices).
Mesh (--layout): "fsdp" (default) shards params and batch over the chips of a slice (fsdp) and
the batch over slices (data), keeping config.mesh.expert and config.mesh.tensor; "config" uses
config.mesh as given (-1 takes the rest). The global batch is config.data.global_batch_size;
each chip sees global / (data x fsdp) samples.

  --json      end with one JSON line: per_chip_batch, argument_bytes, temp_bytes, peak_bytes,
              flops, bytes_accessed (all per chip), the roofline and the layout.
  --nowindowed_einsum
              compile without collective-matmul loops: XLA's cost analysis counts a loop body
              once, so FLOPs and HBM bytes of a step with such loops (FSDP over many chips)
              are undercounts, flagged by "counts_complete": false in the JSON.
  --sweep     the largest per-chip batch that fits the chip's HBM (few compiles, by
              neuript_jax.bench.memory_fit); the global batch is then per-chip x data x fsdp.
"""

from __future__ import annotations

import json
import math
import sys
import time

from absl import app, flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file("config", "neuript_jax/configs/pretrain.py",
                                         "experiment config file with get_config(arg)")
TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice, e.g. v5p-8, v5e-256, v6e-64")
NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "slices joined over DCN")
LAYOUT = flags.DEFINE_enum("layout", "fsdp", ["fsdp", "config"],
                           "fsdp: fsdp over a slice's chips, data over slices; config: "
                           "config.mesh as given")
JSON = flags.DEFINE_bool("json", False, "end with one JSON line of the numbers")
SWEEP = flags.DEFINE_bool("sweep", False, "largest per-chip batch that fits the chip's HBM")
MAX_COMPILES = flags.DEFINE_integer("max_compiles", 5, "sweep: compiles at most")
LIVE_TOP = flags.DEFINE_integer(
    "live_top", 0, "also print what is live at the step's memory peak, by model part, and its "
    "N largest buffers (bench/hlo_liveness.py; estimated from the scheduled HLO)")
WINDOWED_EINSUM = flags.DEFINE_bool(
    "windowed_einsum", True, "let the TPU compiler form collective matmuls (its default). Their "
    "loops are counted once by XLA's cost analysis, so where the compiled step has them its "
    "flops and HBM bytes are undercounts; --nowindowed_einsum compiles without them, for full "
    "counts (that step's memory is then one without collective matmuls)")
HLO_OUT = flags.DEFINE_string("hlo_out", None, "write the optimized HLO text of each compile "
                              "here (PATH, or PATH.<per-chip batch> with --sweep)")
flags.mark_flag_as_required("topology")

GIB = 2 ** 30


def mesh_shape(config, topology) -> list[int]:
  """(data, fsdp, expert, tensor) sizes for --layout over the topology's chips."""
  m = config.mesh
  if LAYOUT.value == "fsdp":
    per_slice = topology.chips_per_slice
    inner = m.expert * m.tensor
    if inner < 1 or per_slice % inner:
      raise app.UsageError(f"config.mesh.expert x tensor = {inner} must divide the "
                           f"{per_slice} chips of a {topology.name} slice")
    return [topology.num_slices, per_slice // inner, m.expert, m.tensor]
  shape = [m.data, m.fsdp, m.expert, m.tensor]
  if shape.count(-1) > 1:
    raise app.UsageError(f"config.mesh {shape}: at most one -1")
  if -1 in shape:
    rest = math.prod(s for s in shape if s != -1)
    if topology.chips % rest:
      raise app.UsageError(f"config.mesh {shape} does not divide {topology.chips} chips")
    shape[shape.index(-1)] = topology.chips // rest
  if math.prod(shape) != topology.chips:
    raise app.UsageError(f"config.mesh {shape} needs {math.prod(shape)} chips; "
                         f"{topology.name} x {topology.num_slices} has {topology.chips}")
  return shape


def compile_step(config, model_cfg, mesh, stage: int):
  """The compiled train step, traced under `mesh` as the training loops trace it
  (loop.traced_under), so per-device code (Pallas attention, PMoE groups) sees its axes."""
  from neuript_jax.bench import tpu
  from neuript_jax.train import mesh as mesh_lib
  rules = tuple(config.logical_axis_rules or mesh_lib.DEFAULT_RULES)
  if stage == 1:
    from neuript_jax.train.pretrain import aot_compile
    return aot_compile(config, model_cfg, mesh, rules)
  return tpu.aot_compile_finetune(config, model_cfg, mesh, rules)


def measure(config, model_cfg, mesh, stage, topology, rows: int, per_chip: int) -> dict:
  """Compile at per-chip batch `per_chip` and return the numbers (per chip) + roofline."""
  from neuript_jax.bench import tpu
  from neuript_jax.model import counting
  config.data.global_batch_size = per_chip * rows
  start = time.time()
  compiled = compile_step(config, model_cfg, mesh, stage)
  out = {"per_chip_batch": per_chip, "global_batch": per_chip * rows,
         "compile_seconds": round(time.time() - start, 1), **tpu.step_numbers(compiled)}
  text = compiled.as_text()
  out["windowed_einsum_loops"] = tpu.windowed_einsum_loops(text)
  out["counts_complete"] = out["windowed_einsum_loops"] == 0
  if LIVE_TOP.value or HLO_OUT.value:
    from neuript_jax.bench import hlo_liveness
    if HLO_OUT.value:
      path = f"{HLO_OUT.value}.{per_chip}" if SWEEP.value else HLO_OUT.value
      with open(path, "w") as f:
        f.write(text)
    if LIVE_TOP.value:
      print(hlo_liveness.report(hlo_liveness.analyse(text), LIVE_TOP.value), flush=True)
  model_flops = counting.train_flops(model_cfg, per_chip, stage)
  out["model_flops"] = float(model_flops)
  out["roofline"] = tpu.roofline(out["flops"], out["bytes_accessed"], topology.chip, per_chip,
                                 model_flops)
  return out


def report(m: dict, topology) -> str:
  b = m["per_chip_batch"]
  r = m["roofline"]
  lines = [] if m["counts_complete"] else [
      f"  WARNING: {m['windowed_einsum_loops']} windowed-einsum (collective matmul) loops in "
      "the compiled step; XLA's cost analysis counts each loop body once, so the FLOPs, HBM "
      "bytes and roofline below are undercounts. --nowindowed_einsum compiles without them "
      "for full counts."]
  return "\n".join([
      f"per chip, batch {b} (global {m['global_batch']}), compiled in "
      f"{m['compile_seconds']:.0f} s:",
      f"  arguments {m['argument_bytes'] / GIB:.3f} GiB, outputs {m['output_bytes'] / GIB:.3f} "
      f"GiB (aliased {m['alias_bytes'] / GIB:.3f}), temporaries {m['temp_bytes'] / GIB:.3f} GiB"
      f" ({m['temp_bytes'] / b / GIB:.3f} GiB per sample)",
      f"  peak {m['peak_bytes'] / GIB:.3f} GiB of {topology.chip.hbm_bytes / GIB:.0f} GiB HBM",
      f"  {m['flops'] / 1e12:.3f} TFLOP ({m['flops'] / b / 1e12:.3f} per sample; model "
      f"{m['model_flops'] / b / 1e12:.3f} without recompute), HBM traffic "
      f"{m['bytes_accessed'] / 1e9:.1f} GB ({m['bytes_accessed'] / b / 1e9:.2f} GB per sample)",
      f"  roofline on {topology.chip.generation}: {r['step_seconds'] * 1e3:.1f} ms per step "
      f"(compute {r['compute_seconds'] * 1e3:.1f} ms, HBM {r['memory_seconds'] * 1e3:.1f} ms; "
      f"{r['bound']}-bound, {r['arithmetic_intensity']:.0f} FLOP/byte vs ridge "
      f"{r['ridge_intensity']:.0f}), {r['samples_per_second_per_chip']:.1f} samples/s per "
      f"chip, MFU <= {100 * r['mfu_bound']:.1f}%",
  ] + lines)


def main(argv):
  del argv
  from neuript_jax.bench import tpu
  try:
    topology = tpu.parse_topology(TOPOLOGY.value, NUM_SLICES.value)
  except ValueError as e:
    raise app.UsageError(str(e))
  if not WINDOWED_EINSUM.value:
    tpu.disable_windowed_einsum()
  try:
    tpu.require_libtpu()
  except tpu.LibtpuMissing as e:
    print(f"launch.aot_memory: {e}", file=sys.stderr)
    sys.exit(2)

  from neuript_jax.configs.common import to_model_config
  from neuript_jax.train import mesh as mesh_lib

  config = CONFIG.value
  stage = 1 if "masking" in config else 2
  shape = mesh_shape(config, topology)
  mesh = tpu.make_tpu_mesh(topology, shape, mesh_lib.MESH_AXES)
  platform = mesh.devices.flat[0].platform
  model_cfg = to_model_config(config.model).for_platform(platform)
  rows = shape[0] * shape[1]
  layout = dict(zip(mesh_lib.MESH_AXES, shape))
  print(f"{config.get('name', 'config')}: stage {stage}, {topology.name} x {topology.num_slices}"
        f" ({topology.chips} chips, {topology.topology_name}), mesh {layout}; attention "
        f"{model_cfg.attention}, moe_dispatch {model_cfg.moe_dispatch}, dtype "
        f"{model_cfg.dtype}, remat {model_cfg.remat}, T {model_cfg.T}", flush=True)

  if SWEEP.value:
    from neuript_jax.bench import memory_fit
    seen = {}

    def peak_of(b):
      seen[b] = measure(config, model_cfg, mesh, stage, topology, rows, b)
      print(report(seen[b], topology), flush=True)
      return seen[b]["peak_bytes"]

    fit = memory_fit.largest_fitting_batch(peak_of, topology.chip.hbm_bytes,
                                           max_evals=MAX_COMPILES.value)
    print(f"largest per-chip batch that fits {topology.chip.hbm_bytes / GIB:.0f} GiB: "
          f"{fit['batch']}{'' if fit['exact'] else ' (not bracketed: the next batch was not compiled)'}"
          f"; linear fit {fit['predicted']}")
    result = {"topology": topology.name, "num_slices": topology.num_slices, "stage": stage,
              "mesh": layout, "max_per_chip_batch": fit["batch"], "exact": fit["exact"],
              "predicted": fit["predicted"], "hbm_bytes": topology.chip.hbm_bytes,
              "compiles": [seen[b] for b in sorted(seen)]}
  else:
    b = config.data.global_batch_size
    if b % rows:
      raise app.UsageError(f"config.data.global_batch_size={b} is not divisible by data x "
                           f"fsdp = {rows} (mesh {layout})")
    result = measure(config, model_cfg, mesh, stage, topology, rows, b // rows)
    print(report(result, topology))
    result.update(topology=topology.name, num_slices=topology.num_slices, stage=stage,
                  mesh=layout)
  result["windowed_einsum"] = WINDOWED_EINSUM.value
  if JSON.value:
    print(json.dumps(result, default=float))


if __name__ == "__main__":
  app.run(main)
