"""Restore one checkpoint of a pretraining workdir onto several meshes and print whether every
leaf of the train state (params, optimizer state, step, RNG) is bit-identical to the first
mesh's restore, as one JSON line.

Run in a subprocess by tests/test_multiprocess.py (the simulated device count must be set
before JAX is imported): python -m tests._restore_check WORKDIR STEP D,F,E,T [D,F,E,T ...]
"""

import json
import sys

import jax
import ml_collections
import numpy as np

from neuript_jax.configs.common import to_model_config
from neuript_jax.train import checkpoint as ckpt_lib
from neuript_jax.train import loop, pretrain
from neuript_jax.train import mesh as mesh_lib


def main():
  workdir, step, shapes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
  with open(f"{workdir}/pretrain_config.json") as f:
    config = ml_collections.ConfigDict(json.load(f)["config"])
  model_cfg = to_model_config(config.model)
  first, identical = None, {}
  for arg in shapes:
    shape = [int(a) for a in arg.split(",")]
    mesh = mesh_lib.make_mesh(shape, jax.devices()[:int(np.prod(shape))])
    state, _, _, _ = pretrain.setup(config, model_cfg, mesh)
    ckpt = ckpt_lib.Checkpointer(workdir, 3, False)
    restored, _ = ckpt.restore(loop.abstract_like(state), step)
    ckpt.close()
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(restored)]
    first = leaves if first is None else first
    identical[arg] = all(a.dtype == b.dtype and np.array_equal(a, b)
                         for a, b in zip(first, leaves)) and len(first) == len(leaves)
  print(json.dumps({"leaves": len(first), "identical": identical}))


if __name__ == "__main__":
  main()
