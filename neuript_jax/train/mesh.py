"""Device mesh and sharding rules (MaxText style: the model names logical axes, the config maps
them to mesh axes).

Mesh axes: ("data", "fsdp", "expert", "tensor"). The batch is split over data x fsdp; params
follow `logical_axis_rules`, e.g. ("embed", "fsdp") shards every d_model dimension over fsdp,
("expert", "expert") puts different routed experts on different devices. A rule whose mesh
axis does not divide a parameter dimension is dropped for that parameter (logged once), so the
same rules serve the tiny and the paper model.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "expert", "tensor")
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("merge", "fsdp"),
    ("pooled", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("expert", "expert"),
    ("seg", None),
    ("classes", None),
)


def make_mesh(shape: Sequence[int], devices=None) -> Mesh:
  """Mesh of the given (data, fsdp, expert, tensor) sizes; -1 in one slot takes the rest."""
  shape = list(shape)
  devices = devices if devices is not None else jax.devices()
  n = len(devices)
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one -1")
  if -1 in shape:
    rest = int(np.prod([s for s in shape if s != -1]))
    if n % rest:
      raise ValueError(f"mesh shape {shape} does not divide {n} devices")
    shape[shape.index(-1)] = n // rest
  if int(np.prod(shape)) != n:
    raise ValueError(f"mesh shape {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} "
                     f"devices, have {n}")
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(shape),
                       devices=devices)


def _fit_spec(spec: P, shape, mesh: Mesh, name: str) -> P:
  """Drop mesh axes that do not divide the dimension they shard."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    size = int(np.prod([mesh.shape[a] for a in names]))
    if dim % size:
      logging.log_first_n(logging.INFO, "not sharding %s dim %d over %s (size %d)", 20, name,
                          dim, names, size)
      out.append(None)
    else:
      out.append(axes)
  return P(*out)


def param_shardings(boxed_params, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedShardings for a boxed (logically partitioned) param tree, as a plain tree."""
  specs = nn.get_partition_spec(boxed_params)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  shapes = nn.unbox(boxed_params)
  paths = jax.tree_util.tree_map_with_path(lambda p, _: jax.tree_util.keystr(p), shapes)
  return jax.tree_util.tree_map(
      lambda spec, x, name: NamedSharding(mesh, _fit_spec(spec, x.shape, mesh, name)),
      mesh_specs, shapes, paths, is_leaf=lambda s: isinstance(s, P))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) dimension over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
