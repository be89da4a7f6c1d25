"""What the model's per-device code knows of the mesh it is compiled for.

The training code names the mesh axes ("data", "fsdp", "expert", "tensor"; train/mesh.py) and
traces every jitted model function with its mesh as the context (train/loop.traced_under:
jax.sharding.use_abstract_mesh; jax.set_mesh works too). Code that must see per-device shards
(Pallas kernels, per-shard PMoE routing groups) reads that context here; without one (tests,
a single device) everything is one shard.
"""

from __future__ import annotations

import math

import jax

BATCH_MESH_AXES = ("data", "fsdp")   # shard the batch (and every b-major token axis)
HEAD_MESH_AXIS = "tensor"            # shards attention heads
MLP_MESH_AXIS = "tensor"             # shards FFN hidden units ("mlp" in train/mesh.py's rules)


def context_mesh():
  """The tracing context's (abstract) mesh, or None."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def target_platform() -> str:
  """The platform being compiled for: the context mesh's devices, else the default backend."""
  mesh = context_mesh()
  device = None if mesh is None else getattr(mesh, "abstract_device", None)
  return device.platform if device is not None else jax.default_backend()


def mesh_axis_size(name: str) -> int:
  """Size of the context mesh's axis `name` (1 without a mesh or without that axis)."""
  mesh = context_mesh()
  return 1 if mesh is None else int(mesh.shape.get(name, 1))


def batch_axes(n: int) -> tuple[str, ...]:
  """The context mesh's batch axes (size > 1) if their product divides n, else ()."""
  mesh = context_mesh()
  if mesh is None:
    return ()
  axes = tuple(a for a in BATCH_MESH_AXES if mesh.shape.get(a, 1) > 1)
  return axes if axes and n % math.prod(mesh.shape[a] for a in axes) == 0 else ()


def batch_shards(n: int) -> int:
  """How many batch shards split a b-major axis of length n (1 without a mesh)."""
  mesh = context_mesh()
  return math.prod(mesh.shape[a] for a in batch_axes(n)) if mesh is not None else 1


def shard_batch(x):
  """x with its leading (b-major) axis constrained to the context mesh's batch axes, the rest
  replicated; x itself without a mesh. Left to itself, the SPMD partitioner may follow the
  FSDP-sharded weights (d_model over "fsdp") into the activations and gather the batch onto
  every device instead; these constraints keep every activation on its own batch shard."""
  axes = batch_axes(x.shape[0])
  if not axes:
    return x
  from jax.sharding import PartitionSpec as P
  return jax.lax.with_sharding_constraint(x, P(axes))
