r"""Ahead-of-time compile of the pretraining step on a simulated mesh; prints per-device memory.

  python -m launch.aot_memory --devices=8 --mesh=1,8,1,1 --preset=paper --batch=32

Simulates `--devices` CPU devices (XLA_FLAGS is set before JAX is imported), builds the train
step for the given (data, fsdp, expert, tensor) mesh from shapes only, and prints XLA's memory
analysis for one device: arguments (params + optimizer state + batch shard), outputs, temporaries
(activations kept for the backward pass and workspace) and their sum. On a real pod run the same
command without --devices: the numbers are per accelerator, and arguments + temporaries must fit
its HBM (CPU compilation uses the CPU backend's layouts and fusion, so treat them as an estimate
within tens of percent; the parameter and optimizer bytes are exact).

Sweep: the largest per-device batch that fits given capacities, per mesh layout:

  python -m launch.aot_memory --devices=64 --preset=paper \
      --sweep="8:1,8,1,1;8:2,2,2,1;64:1,64,1,1;64:8,4,2,1" --capacity_gib=80,139

Each layout is DEVICES:data,fsdp,expert,tensor on the first DEVICES simulated devices; the
per-device batch b means a global batch b * data * fsdp (the expert and tensor axes see the
same rows). `neuript_jax.bench.memory_fit` picks the batches to compile (a linear fit of the
peak in b, then bracketing), a few compiles per layout, and every compile's numbers are
printed as they come; the last lines are a Markdown table.
"""

from __future__ import annotations

import os
import sys
import time


def _devices_from_argv(argv) -> int | None:
  for a in argv:
    if a.startswith("--devices="):
      return int(a.split("=", 1)[1])
  return None


_N = _devices_from_argv(sys.argv)
if _N:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={_N}")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("devices", None, "simulated CPU devices (omit on real accelerators)")
MESH = flags.DEFINE_list("mesh", ["1", "-1", "1", "1"], "data,fsdp,expert,tensor sizes")
PRESET = flags.DEFINE_enum("preset", "paper", ["tiny", "small", "paper"], "model preset")
BATCH = flags.DEFINE_integer("batch", 32, "global batch size")
T = flags.DEFINE_integer("T", 256, "samples per window")
DTYPE = flags.DEFINE_string("dtype", "bfloat16", "compute dtype")
REMAT = flags.DEFINE_enum("remat", "block", ["none", "block"], "rematerialisation")
SWEEP = flags.DEFINE_string("sweep", None, "layouts DEVICES:data,fsdp,expert,tensor separated "
                            "by ';' (then --mesh and --batch are not used)")
CAPACITY = flags.DEFINE_list("capacity_gib", ["80", "139"], "sweep: per-device memory sizes")
MAX_COMPILES = flags.DEFINE_integer("max_compiles", 4, "sweep: compiles per layout at most "
                                    "(shared by the capacities, in order)")


def parse_layouts(text: str) -> list[tuple[int, list[int]]]:
  """'8:1,8,1,1;64:8,8,1,1' -> [(8, [1, 8, 1, 1]), (64, [8, 8, 1, 1])]."""
  out = []
  for item in filter(None, (t.strip() for t in text.split(";"))):
    try:
      n, shape = item.split(":")
      shape = [int(v) for v in shape.split(",")]
      n = int(n)
    except ValueError:
      raise app.UsageError(f"--sweep item {item!r}: expected DEVICES:data,fsdp,expert,tensor")
    if len(shape) != 4 or n != shape[0] * shape[1] * shape[2] * shape[3]:
      raise app.UsageError(f"--sweep item {item!r}: four sizes whose product is {n}")
    out.append((n, shape))
  return out


def pretrain_config_for(preset: str):
  """The pretraining config with the preset's model, T, dtype and remat from the flags."""
  import importlib
  from neuript_jax.configs import pretrain as pretrain_config
  config = pretrain_config.get_config()
  preset = importlib.import_module(f"neuript_jax.configs.{preset}").get_config()
  config.model = preset.model
  config.model.data = "Stage1"
  config.model.T = T.value
  config.model.dtype = DTYPE.value
  config.model.remat = REMAT.value
  return config


def sweep(layouts, capacities_gib):
  import jax
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.bench import memory_fit
  from neuript_jax.train import mesh as mesh_lib
  from neuript_jax.train.pretrain import aot_compile

  config = pretrain_config_for(PRESET.value)
  model_cfg = to_model_config(config.model)
  gib = 2 ** 30
  rows = []
  print(f"preset {PRESET.value}, T {T.value}, dtype {DTYPE.value}, remat {REMAT.value}; "
        "per device; largest batch compiled and seen to fit, * = the next batch was not "
        "compiled (linear-fit prediction in brackets)")
  header = ("| devices | data x fsdp x expert x tensor | arguments GiB | peak GiB at batch b | "
            + " | ".join(f"max batch/device @ {c:g} GiB" for c in capacities_gib) + " |")
  rows.append(header)
  rows.append("|---|---|---|---|" + "---|" * len(capacities_gib))
  print(header, flush=True)
  for n, shape in layouts:
    if n > jax.device_count():
      raise app.UsageError(f"layout {n}:{shape} needs {n} devices; run with --devices={n}")
    mesh = mesh_lib.make_mesh(shape, devices=jax.devices()[:n])
    rows_per_device = shape[0] * shape[1]
    detail = {}

    def peak_of(b):
      config.data.global_batch_size = b * rows_per_device
      start = time.time()
      mem = aot_compile(config, model_cfg, mesh).memory_analysis()
      peak = (mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
              - mem.alias_size_in_bytes)
      detail[b] = (mem.argument_size_in_bytes, mem.temp_size_in_bytes, peak)
      print(f"  {n} devices mesh {shape}: per-device batch {b} (global "
            f"{b * rows_per_device}): arguments {mem.argument_size_in_bytes / gib:.2f} GiB, "
            f"temporaries {mem.temp_size_in_bytes / gib:.2f} GiB, peak {peak / gib:.2f} GiB "
            f"({time.time() - start:.0f} s)", flush=True)
      return peak

    evaluated, fit = {}, {}
    for cap in capacities_gib:
      fit[cap] = memory_fit.largest_fitting_batch(peak_of, cap * gib, evaluated,
                                                  max(0, MAX_COMPILES.value - len(evaluated)))
    b1 = min(detail)
    args, _, peak = detail[b1]
    cells = [f"{f['batch']}{'' if f['exact'] else '*'} (global "
             f"{f['batch'] * shape[0] * shape[1]}; fit {f['predicted']})" for f in fit.values()]
    rows.append(f"| {n} | {' x '.join(map(str, shape))} | {args / gib:.2f} | "
                f"{peak / gib:.2f} (b={b1}) | " + " | ".join(cells) + " |")
    print(rows[-1], flush=True)
  print("\n" + "\n".join(rows))


def main(argv):
  del argv
  import jax
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.train import mesh as mesh_lib
  from neuript_jax.train.pretrain import aot_compile

  if SWEEP.value:
    sweep(parse_layouts(SWEEP.value), [float(c) for c in CAPACITY.value])
    return
  config = pretrain_config_for(PRESET.value)
  config.data.global_batch_size = BATCH.value
  model_cfg = to_model_config(config.model)
  mesh = mesh_lib.make_mesh([int(m) for m in MESH.value])
  start = time.time()
  compiled = aot_compile(config, model_cfg, mesh)
  mem = compiled.memory_analysis()
  gib = lambda b: b / 2 ** 30
  print(f"preset {PRESET.value}, T {T.value}, global batch {BATCH.value}, dtype {DTYPE.value}, "
        f"remat {REMAT.value}, mesh {dict(mesh.shape)} on {jax.device_count()} devices; "
        f"compiled in {time.time() - start:.0f} s")
  if mem is None:
    print("this backend gives no memory analysis")
    return
  args, out = mem.argument_size_in_bytes, mem.output_size_in_bytes
  temp, alias = mem.temp_size_in_bytes, mem.alias_size_in_bytes
  print(f"per device: arguments {gib(args):.3f} GiB, outputs {gib(out):.3f} GiB "
        f"(aliased with donated arguments {gib(alias):.3f} GiB), temporaries {gib(temp):.3f} GiB")
  print(f"per device peak estimate (arguments + temporaries + outputs - aliased): "
        f"{gib(args + temp + out - alias):.3f} GiB")


if __name__ == "__main__":
  app.run(main)
