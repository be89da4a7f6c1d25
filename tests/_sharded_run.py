"""Run a few pretraining steps on a given mesh and print losses + shardings as JSON.

Used by tests/test_sharding.py in a subprocess, because the simulated device count must be set
(XLA_FLAGS=--xla_force_host_platform_device_count=8) before JAX is imported.
usage: python -m tests._sharded_run D,F,E,T [D,F,E,T ...]   (one JSON line per mesh)
"""

import json
import sys

import jax
import numpy as np

from neuript_jax.configs import pretrain as pretrain_config
from neuript_jax.configs.common import to_model_config
from neuript_jax.train import mesh as mesh_lib
from neuript_jax.train import pretrain


def main():
  jax.config.update("jax_default_matmul_precision", "highest")
  for arg in sys.argv[1:]:
    shape = [int(a) for a in arg.split(",")]
    run(shape, int(np.prod(shape)))


def run(shape, n_dev):
  config = pretrain_config.get_config()
  config.model.T = 32
  config.model.d_model = 32
  config.model.merge_layers = (1, 2, 2)
  config.model.enc_expert = (0, 2, 8)
  config.model.dec_expert = (0, 0, 0, 0)
  config.model.cross_expert = (0, 0, 0, 0)
  config.model.dropout = 0.0
  config.model.moe_groups = 8       # one routing group per window: the same routing on any mesh
  config.total_steps = 4
  model_cfg = to_model_config(config.model)
  mesh = mesh_lib.make_mesh(shape, jax.devices()[:n_dev])
  state, train_step, _, _ = pretrain.setup(config, model_cfg, mesh)
  rng = np.random.default_rng(0)
  losses = []
  for i in range(config.total_steps):
    x = rng.standard_normal((8, model_cfg.T, model_cfg.data_dim)).astype(np.float32)
    gb = jax.device_put({"x": x}, {"x": mesh_lib.batch_sharding(mesh, 3)})
    if i == 0:   # the step as traced by the loop: the model saw the mesh (batch constraints)
      constraints = train_step.lower(state, gb).as_text().count("sharding_constraint")
    state, m = train_step(state, gb)
    losses.append(float(m["loss"]))
  p = state["params"]
  experts = p["encoder"]["encode_blocks_2"]["encode_layers_0"]["MLP1"]["experts"]["wi_kernel"]
  qk = p["encoder"]["encode_blocks_0"]["encode_layers_0"]["time_attention"]["query_projection"][
      "kernel"]
  print(json.dumps({
      "losses": losses,
      "expert_spec": str(experts.sharding.spec),
      "expert_shard_shape": list(experts.sharding.shard_shape(experts.shape)),
      "qk_spec": str(qk.sharding.spec),
      "qk_shard_shape": list(qk.sharding.shard_shape(qk.shape)),
      "devices": len(mesh.devices.flat),
      "sharding_constraints": constraints,
  }), flush=True)


if __name__ == "__main__":
  main()
