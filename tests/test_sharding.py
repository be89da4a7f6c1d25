"""1 device vs 8 simulated devices: layouts over the data, FSDP, expert and tensor axes give the
same losses (fixed PMoE routing groups, model.moe_groups), the parameters really are sharded,
and the train step is traced under its mesh (the model's batch-shard constraints are in it)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO


LAYOUTS = {
    "single": [1, 1, 1, 1],
    # Two 8-device layouts cover the four axes (each layout is one more compile of the step):
    "data_fsdp": [2, 4, 1, 1],       # batch over data x fsdp, params sharded over fsdp
    "expert_tensor": [2, 1, 2, 2],   # experts split over the expert axis, tensor-parallel
}


@pytest.fixture(scope="module")
def results():
  """All layouts in one subprocess with 8 simulated CPU devices (set before JAX starts)."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  args = [sys.executable, "-m", "tests._sharded_run",
          *(",".join(map(str, shape)) for shape in LAYOUTS.values())]
  out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in out.stdout.strip().splitlines() if line.startswith("{")]
  assert len(rows) == len(LAYOUTS)
  return dict(zip(LAYOUTS, rows))


@pytest.mark.parametrize("layout", ["data_fsdp", "expert_tensor"])
def test_sharded_losses_equal_single_device(results, layout):
  single, res = results["single"], results[layout]
  assert single["devices"] == 1 and res["devices"] == 8
  np.testing.assert_allclose(res["losses"], single["losses"], rtol=2e-4, atol=2e-5)
  assert single["losses"][0] != single["losses"][-1]      # the steps really train
  assert single["qk_shard_shape"] == [32, 32]
  assert single["sharding_constraints"] == 0          # one device: no batch shards to keep
  assert res["sharding_constraints"] > 0, res         # the loop's step saw the mesh
  if layout == "data_fsdp":
    assert "fsdp" in res["qk_spec"] and res["qk_shard_shape"] == [8, 32]
  elif layout == "expert_tensor":
    assert "expert" in res["expert_spec"] and res["expert_shard_shape"][0] == 8 // 2
    assert "tensor" in res["qk_spec"] and res["qk_shard_shape"] == [32, 16]
