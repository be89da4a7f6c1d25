"""TPU topologies, chip specifications and the roofline of a compiled step, without a TPU.

libtpu's compiler runs on any x86 host: `compile_only_devices("v5p-8")` gives the compile-only
devices of a v5p slice (jax.experimental.topologies), a mesh over them lowers and compiles a
step for that slice, and the compiled step's `memory_analysis()` / `cost_analysis()` are the
TPU compiler's own per-chip numbers. Names follow Cloud TPU's accelerator types: v4-N and v5p-N
count TensorCores (2 per chip, one megacore device per chip: N / 2 devices), v5e-N and v6e-N
count chips (one core each). Multi-slice layouts (`num_slices` > 1) join slices over DCN.

The chip table holds the published peak dense bf16 FLOP/s, HBM capacity and HBM bandwidth of
one chip; `roofline` turns a step's per-chip FLOPs and HBM bytes into a time bound.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from typing import Any

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU chip: peak dense bf16 FLOP/s, HBM bytes and HBM bytes/s."""
  generation: str
  peak_bf16_flops: float
  hbm_bytes: int
  hbm_bandwidth: float


# Cloud TPU system-architecture pages (per chip).
CHIPS = {
    "v4": Chip("v4", 275e12, 32 * GIB, 1228e9),
    "v5e": Chip("v5e", 197e12, 16 * GIB, 819e9),
    "v5p": Chip("v5p", 459e12, 95 * GIB, 2765e9),
    "v6e": Chip("v6e", 918e12, 32 * GIB, 1640e9),
}

# generation -> (libtpu topology prefix, chip config, dimensions of the chip grid, cores/chip)
_GENERATIONS = {
    "v4": ("v4", "megacore", 3, 2),
    "v5p": ("v5", "megacore", 3, 2),
    "v5e": ("v5e", "default", 2, 1),
    "v6e": ("v6e", "default", 2, 1),
}
_MAX_CHIPS = {"v4": 4096, "v5p": 8960, "v5e": 256, "v6e": 256}


@dataclasses.dataclass(frozen=True)
class Topology:
  """A slice (or num_slices identical slices) of one TPU generation."""
  name: str                      # e.g. "v5p-8"
  chip: Chip
  topology_name: str             # libtpu's name, e.g. "v5:2x2x1"
  chip_config_name: str          # "megacore" | "default"
  grid: tuple[int, ...]          # chips per dimension of one slice
  num_slices: int = 1

  @property
  def chips_per_slice(self) -> int:
    return math.prod(self.grid)

  @property
  def chips(self) -> int:
    return self.chips_per_slice * self.num_slices

  def get_topology_desc_kwargs(self) -> dict[str, Any]:
    """Arguments of jax.experimental.topologies.get_topology_desc for this layout."""
    grid3 = tuple(self.grid) + (1,) * (3 - len(self.grid))
    # A torus closes a dimension of (at least) 4 x 4 x 4 v4/v5p slices and of full 16-chip
    # v5e/v6e rows; smaller slices are meshes (no wraparound links).
    if len(self.grid) == 3:
      wrap = (min(self.grid) >= 4,) * 3
    else:
      wrap = tuple(g >= 16 for g in self.grid) + (False,)
    return dict(topology_name=self.topology_name, platform="tpu",
                chip_config_name=self.chip_config_name, chips_per_host_bounds=(2, 2, 1),
                num_slices=self.num_slices, wrap=wrap)


def _grid_for(chips: int, dims: int) -> tuple[int, ...]:
  """The slice shape of a power-of-two chip count: 2x2(x1) doubled along its smallest
  dimension (the last one of equal ones), e.g. 16 -> 2x2x4, 32 -> 2x4x4 (v5p); 8 -> 2x4."""
  grid = [2, 2] + [1] * (dims - 2) if chips >= 4 else [1] * dims
  if chips == 2 and dims == 2:
    return (1, 2)
  while math.prod(grid) < chips:
    smallest = min(grid)
    i = max(j for j, g in enumerate(grid) if g == smallest)
    grid[i] *= 2
  return tuple(grid)


def parse_topology(name: str, num_slices: int = 1) -> Topology:
  """"v5p-8" / "v5e-256" / "v6e-64" / "v4-32" (and num_slices) -> Topology.

  Raises ValueError naming the accepted forms for anything else.
  """
  accepted = ("v4-N and v5p-N (N = 2 x chips: 8, 16, 32, ...), v5e-N and v6e-N (N = chips: 1, "
              "4, 8, ..., 256), N a power of two")
  gen, _, count = name.partition("-")
  if gen not in _GENERATIONS or not count.isdigit():
    raise ValueError(f"--topology={name!r}: expected {accepted}")
  prefix, chip_config, dims, cores = _GENERATIONS[gen]
  n = int(count)
  if n % cores or (n // cores) & (n // cores - 1) or n // cores > _MAX_CHIPS[gen] \
      or (cores == 2 and n < 8):
    raise ValueError(f"--topology={name!r}: {n} is not a slice size of {gen}; expected "
                     f"{accepted}")
  if num_slices < 1:
    raise ValueError(f"--num_slices={num_slices}: must be >= 1")
  grid = _grid_for(n // cores, dims)
  return Topology(name, CHIPS[gen], f"{prefix}:{'x'.join(map(str, grid))}", chip_config, grid,
                  num_slices)


# -- libtpu ------------------------------------------------------------------------------------

def libtpu_path() -> str | None:
  """The libtpu.so that JAX will load: $TPU_LIBRARY_PATH, else the `libtpu` package's."""
  env = os.environ.get("TPU_LIBRARY_PATH")
  if env:
    return env if os.path.isfile(env) else None
  spec = importlib.util.find_spec("libtpu")
  if spec is None or not spec.submodule_search_locations:
    return None
  for folder in spec.submodule_search_locations:
    path = os.path.join(folder, "libtpu.so")
    if os.path.isfile(path):
      return path
  return None


class LibtpuMissing(RuntimeError):
  pass


def require_libtpu() -> str:
  """The libtpu.so path, or LibtpuMissing saying how to install it."""
  path = libtpu_path()
  if path is None:
    where = os.environ.get("TPU_LIBRARY_PATH")
    raise LibtpuMissing(
        (f"TPU_LIBRARY_PATH={where} is not a file" if where else "libtpu is not installed")
        + ": the TPU compiler comes with `pip install -r requirements-tpu.txt` (libtpu from "
        "jax[tpu]), or `pip install --target DIR libtpu==<pinned>` and PYTHONPATH=DIR")
  # Off Cloud TPU VMs libtpu would otherwise query the GCE metadata server for its topology;
  # and compile-only use needs no exclusive hold of chips (libtpu's lockfile would refuse a
  # second compiling process).
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  return path


def compile_only_devices(topology: Topology) -> list:
  """The compile-only TPU devices of `topology` (needs libtpu, not a TPU)."""
  require_libtpu()
  from jax.experimental import topologies
  return list(topologies.get_topology_desc(**topology.get_topology_desc_kwargs()).devices)


def make_tpu_mesh(topology: Topology, shape, axis_names):
  """Mesh of `shape` over the topology's devices. With several slices the first axis spans
  them (DCN): shape[0] must be a multiple of num_slices.

  A logical axis that no whole physical axis matches (tensor 2 on v6e-64's 8 x 8 chips) is
  laid over part of one: mesh_utils is retried with allow_split_physical_axes=True."""
  import numpy as np
  from jax.experimental import mesh_utils
  from jax.sharding import AxisType, Mesh

  devices = compile_only_devices(topology)
  shape = tuple(int(s) for s in shape)
  if math.prod(shape) != len(devices):
    raise ValueError(f"mesh {dict(zip(axis_names, shape))} needs {math.prod(shape)} devices; "
                     f"{topology.name} x {topology.num_slices} has {len(devices)}")
  if topology.num_slices > 1:
    if shape[0] % topology.num_slices:
      raise ValueError(f"mesh axis {axis_names[0]}={shape[0]} must be a multiple of "
                       f"num_slices={topology.num_slices} (it spans the slices)")
    ici = (shape[0] // topology.num_slices,) + shape[1:]
    dcn = (topology.num_slices,) + (1,) * (len(shape) - 1)
    build = lambda **kw: mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, **kw)
  else:
    build = lambda **kw: mesh_utils.create_device_mesh(shape, devices, **kw)
  try:
    grid = build()
  except NotImplementedError:   # mesh_utils: "set allow_split_physical_axes to True"
    grid = build(allow_split_physical_axes=True)
  return Mesh(np.asarray(grid), tuple(axis_names), axis_types=(AxisType.Auto,) * len(shape))


# -- compiled-step numbers ---------------------------------------------------------------------

def step_numbers(compiled) -> dict[str, float]:
  """Per-chip bytes and work of a compiled step: argument/output/alias/temp bytes, peak
  (arguments + outputs + temporaries - aliased), flops, bytes_accessed (HBM traffic)."""
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):   # older jax: one dict per program
    cost = cost[0]
  out = {"argument_bytes": mem.argument_size_in_bytes, "output_bytes": mem.output_size_in_bytes,
         "alias_bytes": mem.alias_size_in_bytes, "temp_bytes": mem.temp_size_in_bytes}
  out["peak_bytes"] = (out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"]
                       - out["alias_bytes"])
  out["flops"] = float(cost.get("flops", 0.0))
  out["bytes_accessed"] = float(cost.get("bytes accessed", 0.0))
  return out


# The SPMD partitioner's collective matmuls ("windowed einsum": a dot over an all-gathered or
# reduce-scattered operand becomes a loop over its shards) are while loops in the optimized
# HLO. XLA's cost analysis counts a loop body once, not once per trip, so with such loops the
# compiled step's flops and bytes accessed are undercounts.
WINDOWED_EINSUM_OFF = ("--xla_tpu_enable_windowed_einsum_for_all_gather=false "
                       "--xla_tpu_enable_windowed_einsum_for_reduce_scatter=false")
_WINDOWED_LOOP = re.compile(r"\bwhile\(.*\bbody=%?[\w.-]*windowed_dot_general")


def windowed_einsum_loops(hlo_text: str) -> int:
  """How many while loops of the optimized HLO text are collective-matmul (windowed einsum)
  loops."""
  return sum(1 for line in hlo_text.splitlines() if _WINDOWED_LOOP.search(line))


def disable_windowed_einsum(environ=os.environ) -> None:
  """Ask libtpu (before it loads) not to form windowed-einsum loops, so that the cost
  analysis sees every dot once per execution."""
  environ["LIBTPU_INIT_ARGS"] = " ".join(
      filter(None, [environ.get("LIBTPU_INIT_ARGS", ""), WINDOWED_EINSUM_OFF]))


def roofline(flops: float, bytes_accessed: float, chip: Chip, samples_per_chip: float,
             model_flops: float | None = None) -> dict[str, Any]:
  """Time bound of one step on one chip: max(flops / peak, bytes / bandwidth).

  flops and bytes_accessed are per chip per step (the compiler's counts, remat recompute
  included); samples_per_chip the per-chip batch. model_flops (per chip, without recompute)
  gives the model-FLOPs MFU bound; otherwise the MFU bound uses the compiler's flops.
  """
  t_compute = flops / chip.peak_bf16_flops
  t_memory = bytes_accessed / chip.hbm_bandwidth
  t_step = max(t_compute, t_memory)
  useful = flops if model_flops is None else model_flops
  return {
      "step_seconds": t_step,
      "compute_seconds": t_compute,
      "memory_seconds": t_memory,
      "bound": "memory" if t_memory > t_compute else "compute",
      "arithmetic_intensity": flops / bytes_accessed if bytes_accessed else math.inf,
      "ridge_intensity": chip.peak_bf16_flops / chip.hbm_bandwidth,
      "samples_per_second_per_chip": samples_per_chip / t_step if t_step else math.inf,
      "mfu_bound": useful / (chip.peak_bf16_flops * t_step) if t_step else 0.0,
  }


def chip_hours(step_seconds: float, chips: int, steps: int) -> float:
  """Chip-hours of `steps` steps at the roofline step time on `chips` chips."""
  return step_seconds * steps * chips / 3600.0


# -- ahead-of-time compiles --------------------------------------------------------------------

def aot_compile_finetune(config, model_cfg, mesh, rules=None):
  """Ahead-of-time compile of the stage-2 (fine-tuning) train step for `mesh` from shapes only
  (`neuript_jax.train.finetune.aot_compile`). Returns the jax Compiled object."""
  from neuript_jax.train import finetune, mesh as mesh_lib
  return finetune.aot_compile(config, model_cfg, mesh, tuple(rules or mesh_lib.DEFAULT_RULES))
