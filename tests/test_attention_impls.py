"""The attention implementations agree: "fused" (chunked, hand-written backward, hashed dropout)
and "pallas" (Pallas TPU kernels, run in interpret mode on CPU) against the plain einsum-softmax
reference, with both stage-1 mask modes and with dropout; "auto" follows the compile target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuript_jax.model import ModelConfig
from neuript_jax.model import attention as attention_lib
from neuript_jax.model.attention import (MultiHeadAttention, attention_mask_from_tokens,
                                         fused_chunk, resolve_attention_impl)
from neuript_jax.model.fused_attention import dropout_keep_mask, fused_attention
from neuript_jax.model.pallas_attention import block_sequences, pallas_attention

N, H, L, C = 5, 2, 12, 4


def reference(q, k, v, mask, keep=None, rate=0.0):
  """softmax(q k^T / sqrt(C)) v on head-major [N, H, L, C], dropout by an explicit keep mask."""
  s = jnp.einsum("nhqc,nhkc->nhqk", q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    s = jnp.where(mask[:, None], s, -jnp.inf)
  p = jax.nn.softmax(s, -1)
  if keep is not None:
    p = jnp.where(keep, p / (1.0 - rate), 0.0)
  return jnp.einsum("nhqk,nhkc->nhqc", p, v)


def inputs(seed=0):
  r = np.random.default_rng(seed)
  q, k, v, g = (jnp.asarray(r.normal(size=(N, H, L, C)), jnp.float32) for _ in range(4))
  tokens = jnp.asarray(r.random((N, L)) < 0.5)
  return q, k, v, g, tokens


def value_and_grads(fn, q, k, v, g):
  out = fn(q, k, v)
  grads = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * g), argnums=(0, 1, 2))(q, k, v)
  return [out, *grads]


@pytest.mark.parametrize("mask_mode", [None, "rows", "keys"])
@pytest.mark.parametrize("chunk", [N, 2])   # 2: three lax.map steps, the last one padded
def test_fused_matches_reference(mask_mode, chunk):
  q, k, v, g, tokens = inputs()
  mask = None if mask_mode is None else attention_mask_from_tokens(tokens, mask_mode == "rows")
  got = value_and_grads(lambda q, k, v: fused_attention(q, k, v, mask, None, 0.0, chunk),
                        q, k, v, g)
  want = value_and_grads(lambda q, k, v: reference(q, k, v, mask), q, k, v, g)
  for a, b, name in zip(got, want, ["out", "dq", "dk", "dv"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5,
                               err_msg=name)


@pytest.mark.parametrize("chunk", [N, 2])
def test_fused_dropout_matches_reference_with_the_same_keep_mask(chunk):
  q, k, v, g, tokens = inputs(1)
  mask = attention_mask_from_tokens(tokens, False)
  seed, rate = jnp.array([7, 11], jnp.uint32), 0.3
  keep = dropout_keep_mask(seed, (N, H, L, L), rate)
  got = value_and_grads(lambda q, k, v: fused_attention(q, k, v, mask, seed, rate, chunk),
                        q, k, v, g)
  want = value_and_grads(lambda q, k, v: reference(q, k, v, mask, keep, rate), q, k, v, g)
  for a, b, name in zip(got, want, ["out", "dq", "dk", "dv"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5,
                               err_msg=name)


@pytest.mark.parametrize("mask_mode", [None, "rows", "keys"])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_pallas_matches_reference(mask_mode, rate):
  """Pallas kernels (interpret mode): output and gradients of the reference, with the same
  dropout keep-mask as "fused" (model/dropout.py's stream)."""
  q, k, v, g, tokens = inputs(4)
  mask = None if mask_mode is None else attention_mask_from_tokens(tokens, mask_mode == "rows")
  seed = jnp.array([3, 0xFFFFFFF0], jnp.uint32)
  keep = dropout_keep_mask(seed, (N, H, L, L), rate) if rate else None
  # The kernel takes and gives the projections' layout [N, L, H*C] (head h = lanes h*C..).
  lanes = lambda t: t.transpose(0, 2, 1, 3).reshape(N, L, H * C)
  heads = lambda t: t.reshape(N, L, H, C).transpose(0, 2, 1, 3)
  got = value_and_grads(lambda q, k, v: heads(pallas_attention(
      lanes(q), lanes(k), lanes(v), H, mask, seed, rate, interpret=True)), q, k, v, g)
  want = value_and_grads(lambda q, k, v: reference(q, k, v, mask, keep, rate), q, k, v, g)
  for a, b, name in zip(got, want, ["out", "dq", "dk", "dv"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5,
                               err_msg=name)


def test_pallas_blocks_divide_the_sequences_and_fit_vmem():
  assert block_sequences(7, 8, 256, 256, 96, 2) == 1          # one long sequence per step
  nb = block_sequences(2048, 8, 20, 20, 96, 2)                 # spatial: many short ones
  assert nb > 1 and 2048 % nb == 0
  assert block_sequences(13, 2, 12, 12, 4, 4) in (1, 13)       # a prime count


def test_dropout_keep_mask_rate_and_seed():
  shape = (8, 4, 64, 64)
  a = dropout_keep_mask(jnp.array([1, 2], jnp.uint32), shape, 0.1)
  b = dropout_keep_mask(jnp.array([1, 3], jnp.uint32), shape, 0.1)
  assert abs(float(a.mean()) - 0.9) < 0.005      # 131k draws: 5 sigma ~ 0.004
  assert 0.05 < float((a != b).mean()) < 0.3     # another seed, another mask (~0.18)
  # Rows and columns both vary (no repeated pattern along either axis).
  assert not bool(jnp.all(a[0, 0, 0] == a[0, 0, 1]))
  assert not bool(jnp.all(a[0, 0, :, 0] == a[0, 0, :, 1]))


@pytest.mark.parametrize("mask_rows", [True, False])
def test_module_impls_agree(mask_rows):
  """MultiHeadAttention: xla, fused and dot_product_attention give the same output and grads."""
  r = np.random.default_rng(2)
  x = jnp.asarray(r.normal(size=(3, 10, 16)), jnp.float32)
  mask = attention_mask_from_tokens(jnp.asarray(r.random((3, 10)) < 0.4), mask_rows)
  params = MultiHeadAttention(4).init(jax.random.key(0), x, x, mask)

  def run(impl):
    mod = MultiHeadAttention(4, impl=impl)
    loss = lambda p, x: jnp.sum(jnp.sin(mod.apply(p, x, x, mask)))
    return jax.value_and_grad(loss, argnums=(0, 1))(params, x)

  want = run("xla")
  for impl in ("fused", "dot_product_attention", "pallas", "auto"):
    got = run(impl)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5,
                                 err_msg=impl)


def test_module_fused_dropout_is_seeded_and_unbiased():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 16, 16)), jnp.float32)
  mod = MultiHeadAttention(4, dropout=0.3, impl="fused")
  params = mod.init(jax.random.key(0), x, x)
  run = jax.jit(lambda key: mod.apply(params, x, x, None, False, rngs={"dropout": key}))
  a, b, a2 = run(jax.random.key(1)), run(jax.random.key(2)), run(jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(a2))
  assert float(jnp.abs(a - b).max()) > 1e-3
  det = mod.apply(params, x, x)
  mean = np.mean([np.asarray(run(jax.random.key(i))) for i in range(100)], 0)
  assert np.abs(mean - np.asarray(det)).mean() < 0.1 * np.abs(np.asarray(det)).mean()


def test_auto_is_fused_on_cpu_and_bad_names_are_refused():
  assert resolve_attention_impl("auto") == {"gpu": "dot_product_attention", "tpu": "pallas"}.get(
      jax.default_backend(), "fused")
  with pytest.raises(ValueError, match="attention must be one of"):
    ModelConfig(attention="flash")


def test_auto_follows_the_compile_target_not_the_host():
  """The target is the mesh's platform (ModelConfig.for_platform), whatever the host runs."""
  assert resolve_attention_impl("auto", "tpu") == "pallas"
  assert resolve_attention_impl("auto", "gpu") == "dot_product_attention"
  assert resolve_attention_impl("auto", "cpu") == "fused"
  assert resolve_attention_impl("xla", "tpu") == "xla"
  cfg = ModelConfig(d_model=16, n_heads=2, d_ff=16, hidden_dim=8, hidden_dim_shared=8)
  assert (cfg.for_platform("tpu").attention, cfg.for_platform("tpu").moe_dispatch) == (
      "pallas", "ragged")
  assert (cfg.for_platform("cpu").attention, cfg.for_platform("cpu").moe_dispatch) == (
      "fused", "buffer")


def test_fused_chunks_only_long_sequences_on_one_cpu_device(monkeypatch):
  """Chunking is a single-CPU-device cache optimisation: short sequences and multi-device runs
  (sharded sequence axis) get one piece."""
  if jax.default_backend() != "cpu" or jax.device_count() != 1:
    pytest.skip("needs a single CPU device")
  chunk = fused_chunk(160, 8, 256, 256)
  assert 1 <= chunk < 160 and chunk * 8 * 256 * 256 * 4 <= attention_lib.FUSED_CHUNK_BYTES
  assert fused_chunk(2048, 8, 20, 20) == 2048
  monkeypatch.setattr(jax, "device_count", lambda *a: 8)
  assert fused_chunk(160, 8, 256, 256) == 160


_SHARDED_ATTENTION = r"""
import jax, jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from neuript_jax.model.attention import MultiHeadAttention
mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
x = jax.device_put(jnp.ones((64, 128, 16)), NamedSharding(mesh, P("data")))
mha = MultiHeadAttention(2, 0.0, impl="fused")
params = mha.init(jax.random.key(0), x[:1], x[:1])
loss = lambda p, x: mha.apply(p, x, x).sum()
hlo = jax.jit(jax.grad(loss, argnums=1)).lower(params, x).compile().as_text()
print("ALL_GATHERS", hlo.count("all-gather"))
"""


def test_fused_attention_on_a_sharded_batch_has_no_all_gather():
  """8 simulated devices, sequences sharded over "data": the attention (forward + backward)
  must run on each device's own sequences (a lax.map over chunks of the sharded axis made the
  partitioner gather the global batch onto every device)."""
  import os
  import subprocess
  import sys
  from tests.conftest import REPO
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _SHARDED_ATTENTION], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ALL_GATHERS 0" in out.stdout, out.stdout


_SHARDED_PALLAS = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from neuript_jax.model.attention import attention_mask_from_tokens
from neuript_jax.model.pallas_attention import pallas_attention
r = np.random.default_rng(0)
q, k, v, g = (jnp.asarray(r.normal(size=(8, 6, 4 * 8)), jnp.float32) for _ in range(4))
mask = attention_mask_from_tokens(jnp.asarray(r.random((8, 6)) < 0.4), True)
def run(q, k, v, mask):
  f = lambda q, k, v: pallas_attention(q, k, v, 4, mask, interpret=True)
  return f(q, k, v), jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) * g), (0, 1, 2))(q, k, v)
want = jax.jit(run)(q, k, v, mask)
mesh = jax.make_mesh((2, 2), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2)
with jax.set_mesh(mesh):
  put = lambda t, spec: jax.device_put(t, NamedSharding(mesh, spec))
  got = jax.jit(run)(*(put(t, P("data", None, "tensor")) for t in (q, k, v)),
                     put(mask, P("data")))
for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
print("SHARDED_PALLAS_OK")
"""


def test_pallas_on_a_data_x_tensor_mesh_equals_one_device():
  """4 simulated devices (data 2 x tensor 2): sequences split over "data" and the lanes, i.e.
  whole heads (2 of 4 per device), over "tensor"; output and gradients equal one device's."""
  import os
  import subprocess
  import sys
  from tests.conftest import REPO
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _SHARDED_PALLAS], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "SHARDED_PALLAS_OK" in out.stdout
