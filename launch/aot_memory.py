r"""Ahead-of-time compile of the pretraining step on a simulated mesh; prints per-device memory.

  python -m launch.aot_memory --devices=8 --mesh=1,8,1,1 --preset=paper --batch=32

Simulates `--devices` CPU devices (XLA_FLAGS is set before JAX is imported), builds the train
step for the given (data, fsdp, expert, tensor) mesh from shapes only, and prints XLA's memory
analysis for one device: arguments (params + optimizer state + batch shard), outputs, temporaries
(activations kept for the backward pass and workspace) and their sum. On a real pod run the same
command without --devices: the numbers are per accelerator, and arguments + temporaries must fit
its HBM (CPU compilation uses the CPU backend's layouts and fusion, so treat them as an estimate
within tens of percent; the parameter and optimizer bytes are exact).
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


def main(argv):
  del argv
  import importlib
  import jax
  from neuript_jax.configs import pretrain as pretrain_config
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.train import mesh as mesh_lib
  from neuript_jax.train.pretrain import aot_compile

  config = pretrain_config.get_config()
  preset = importlib.import_module(f"neuript_jax.configs.{PRESET.value}").get_config()
  config.model = preset.model
  config.model.data = "Stage1"
  config.model.T = T.value
  config.model.dtype = DTYPE.value
  config.model.remat = REMAT.value
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
