"""1 device vs 8 simulated devices: data-parallel, FSDP and expert-sharded layouts give the same
losses, and the parameters really are sharded."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO


def run(shape, n_devices=None):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  args = [sys.executable, "tests/_sharded_run.py", *map(str, shape)]
  if n_devices:
    args.append(str(n_devices))
  out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def single():
  return run([1, 1, 1, 1])


@pytest.mark.parametrize("shape,check", [
    ([8, 1, 1, 1], "data"),        # pure data parallel: params replicated
    ([1, 8, 1, 1], "fsdp"),        # params sharded over fsdp on d_model
    ([2, 1, 4, 1], "expert"),      # experts split over the expert axis, batch over data
    ([2, 2, 1, 2], "tensor"),      # 2 x fsdp, 2 x tensor
])
def test_sharded_losses_equal_single_device(single, shape, check):
  res = run(shape)
  assert res["devices"] == 8
  np.testing.assert_allclose(res["losses"], single["losses"], rtol=2e-4, atol=2e-5)
  assert single["losses"][0] != single["losses"][-1]      # the steps really train
  if check == "data":
    assert res["qk_shard_shape"] == [32, 32]
  elif check == "fsdp":
    assert "fsdp" in res["qk_spec"] and res["qk_shard_shape"] == [4, 32]
  elif check == "expert":
    assert "expert" in res["expert_spec"] and res["expert_shard_shape"][0] == 8 // 4
  elif check == "tensor":
    assert res["qk_shard_shape"] == [16, 16]
