"""PMoE dispatch and routing groups: the sorted jax.lax.ragged_dot dispatch equals the
[E, N, d] buffer dispatch; fixed routing groups route each group's windows on their own; under
a mesh each batch shard routes its own tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuript_jax.model import ModelConfig
from neuript_jax.model.moe import MoE


@pytest.mark.parametrize("experts,renormalize", [(4, False), (3, True)])
def test_ragged_equals_buffer(experts, renormalize):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 7, 16)), jnp.float32)
  make = lambda dispatch: MoE(experts, 0.5, 12, 20, noise_std=0.0, routing="dropless",
                              renormalize=renormalize, dispatch=dispatch)
  params = make("buffer").init(jax.random.key(0), x)

  def run(dispatch):
    def loss(p, x):
      y, aux = make(dispatch).apply(p, x, deterministic=False)
      return jnp.sum(jnp.sin(y)) + aux, (y, aux)
    (_, (y, aux)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    return y, aux, grads

  y_b, aux_b, g_b = run("buffer")
  y_r, aux_r, g_r = run("ragged")
  np.testing.assert_allclose(np.asarray(y_r), np.asarray(y_b), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(aux_r), float(aux_b), rtol=1e-6)
  flat_b = jax.tree_util.tree_leaves_with_path(g_b)
  flat_r = jax.tree_util.tree_leaves(g_r)
  for (path, b), r in zip(flat_b, flat_r):
    np.testing.assert_allclose(np.asarray(r), np.asarray(b), rtol=1e-4, atol=1e-5,
                               err_msg=jax.tree_util.keystr(path))
  # The routed experts really contribute (not only the shared expert).
  expert_grad = g_r[0]["params"]["experts"]["wo_kernel"].value
  assert all(float(jnp.abs(expert_grad[e]).sum()) > 0 for e in range(experts))


@pytest.mark.parametrize("routing,dispatch", [("capacity", "buffer"), ("dropless", "ragged")])
def test_fixed_groups_route_each_group_on_its_own(routing, dispatch):
  """groups=2 without any mesh: the output is the two halves of the batch routed separately
  (each with its own capacity), the aux loss their mean; one group differs (capacity is
  shared, so other tokens are dropped)."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 6, 16)), jnp.float32)
  make = lambda g: MoE(3, 0.5, 12, 20, noise_std=0.0, routing=routing, dispatch=dispatch,
                       groups=g)
  params = make(0).init(jax.random.key(0), x)
  run = lambda g, x: make(g).apply(params, x, deterministic=False)
  halves = [run(1, x[:2]), run(1, x[2:])]
  y, aux = run(2, x)
  np.testing.assert_allclose(np.asarray(y), np.concatenate([np.asarray(h[0]) for h in halves]),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(float(aux), np.mean([float(h[1]) for h in halves]), rtol=1e-6)
  if routing == "capacity":
    assert not np.allclose(np.asarray(run(1, x)[0]), np.asarray(y), atol=1e-4)


def test_groups_that_do_not_divide_the_tokens_are_refused():
  x = jnp.zeros((3, 5, 16), jnp.float32)
  moe = MoE(3, 0.5, 12, 20, groups=2)
  with pytest.raises(ValueError, match="moe_groups 2 does not divide the 15 tokens"):
    moe.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="moe_groups must be an int >= 0"):
    ModelConfig(moe_groups=-1)


def test_bad_dispatch_name_is_refused():
  with pytest.raises(ValueError, match="moe_dispatch must be one of"):
    ModelConfig(moe_dispatch="sorted")


def test_balance_loss_at_more_tokens_than_int32_squares():
  """n = 50,000 routed tokens (n² > 2^31, the 64-device paper step's case): the aux loss is
  computed, not refused as an int32 overflow, and equals the formula in float64."""
  from neuript_jax.model.moe import importance_and_balance_loss
  n, e = 50_000, 4
  probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (n, e)), -1)
  selected = probs >= jnp.sort(probs, -1)[:, -2:-1]
  got = float(jax.jit(lambda p, s: importance_and_balance_loss(p, s, 0.008))(probs, selected))
  p, s = np.asarray(probs, np.float64), np.asarray(selected)
  imp = p.sum(0)
  r = p * s
  want = 0.008 * imp.var(ddof=1) / (imp.mean() ** 2 + 1e-8) + e * (r.mean(0) * r.sum(0)).sum() / n ** 2
  assert abs(got - want) < 1e-4 * abs(want)


_PER_SHARD_ROUTING = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from neuript_jax.model.moe import MoE
mesh = jax.make_mesh((1, 4), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 6, 16)), jnp.float32)
for routing, dispatch in (("capacity", "buffer"), ("dropless", "buffer"), ("dropless", "ragged")):
  moe = MoE(3, 0.5, 12, 20, noise_std=0.0, routing=routing, dispatch=dispatch)
  params = moe.init(jax.random.key(0), x)
  run = lambda x: moe.apply(params, x, deterministic=False)
  # Each of the 4 batch shards routes its own 2 samples (its own capacity and aux loss).
  parts = [jax.jit(run)(x[2 * i: 2 * i + 2]) for i in range(4)]
  want_y = np.concatenate([np.asarray(y) for y, _ in parts])
  want_aux = np.mean([float(a) for _, a in parts])
  with jax.set_mesh(mesh):
    xs = jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp"))))
    y, aux = jax.jit(run)(xs)
    hlo = jax.jit(run).lower(xs).compile().as_text()
  np.testing.assert_allclose(np.asarray(y), want_y, rtol=1e-5, atol=1e-5, err_msg=routing)
  np.testing.assert_allclose(float(aux), want_aux, rtol=1e-5, err_msg=routing)
  print(routing, dispatch, "ALL_GATHERS", hlo.count("all-gather("))
"""


def test_each_batch_shard_routes_its_own_tokens():
  """Under a 4-device mesh (batch over "fsdp") the PMoE routes every shard's tokens on their
  device, as each data-parallel replica of the reference's DDP run does: capacity and aux loss
  per shard, no gathering of the tokens (only the weights are all-gathered: none here, they
  are replicated)."""
  import os
  import subprocess
  import sys
  from tests.conftest import REPO
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _PER_SHARD_ROUTING], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [l for l in out.stdout.splitlines() if "ALL_GATHERS" in l]
  assert len(lines) == 3 and all(l.endswith("ALL_GATHERS 0") for l in lines), out.stdout
