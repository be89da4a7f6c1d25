"""Multi-head attention with separate q/k/v/o projections and optional boolean masks.

Matches the reference's FlashAttentionLayer (torch scaled_dot_product_attention, scale
1/sqrt(head_dim), dropout on the attention probabilities in training).

Implementations (ModelConfig.attention), all the same function up to float rounding:
  "xla": einsum -> softmax -> einsum, autodiff backward, jax.random dropout.
  "dot_product_attention": jax.nn.dot_product_attention (cuDNN flash attention on GPU); with
    dropout active it falls back to "fused".
  "fused": model/fused_attention.py (head-major, hand-written backward, chunked over sequences,
    hashed dropout mask): the fastest on CPU.
  "pallas": model/pallas_attention.py, Pallas TPU kernels (scores stay in VMEM; interpret
    mode off TPU, for tests).
  "auto": "pallas" on TPU, "dot_product_attention" on GPU, "fused" elsewhere, for the devices
    the step is compiled for (ModelConfig.for_platform(mesh platform)); unresolved, the
    default backend.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from neuript_jax.model.fused_attention import chunk_for, fused_attention
from neuript_jax.model.layers import Dense
from neuript_jax.model.mesh_axes import context_mesh, shard_batch, target_platform
from neuript_jax.model.pallas_attention import pallas_attention

ATTENTION_IMPLS = ("auto", "xla", "dot_product_attention", "fused", "pallas")
FUSED_CHUNK_BYTES = 4 << 20   # scores per lax.map step of "fused" on CPU (fits L2 + L3 slice)
# "fused" on CPU chunks only when Lq * Lk >= this: short sequences (the spatial attention over
# 20 channels, temporal attention at L <= 32) are faster in one piece, where the lax.map loop's
# slicing costs more than the cache misses it saves. Measured fwd + bwd, 8 heads, dropout 0.1:
# [2048, 20, 20] 0.166 s chunked -> 0.082 s whole; [160, 32, 32] 0.020 -> 0.009 s;
# [160, 64, 64] 0.025 chunked vs 0.032 s whole; [160, 256, 256] 0.31 s at 4 MB chunks.
FUSED_CHUNK_MIN_SCORES = 64 * 64


def fused_chunk(n: int, heads: int, lq: int, lk: int) -> int:
  """Sequences per lax.map step of "fused" attention; n (no loop) unless one CPU device runs
  sequences long enough to gain from cache-sized chunks.

  Only a single-device CPU chunks: on GPU the whole batch is one kernel launch, and with more
  than one device the sequence axis is sharded, where a sequential loop over slices of it makes
  the SPMD partitioner gather the global batch onto every device (each device would then
  compute, and hold the scores of, every chunk).
  """
  mesh = context_mesh()
  devices = jax.device_count() if mesh is None else mesh.size
  if (target_platform() != "cpu" or devices > 1 or lq * lk < FUSED_CHUNK_MIN_SCORES):
    return n
  return chunk_for(n, heads, lq, lk, FUSED_CHUNK_BYTES)


def resolve_attention_impl(impl: str, platform: str | None = None) -> str:
  """"auto" -> the best implementation for `platform` ("tpu": "pallas", "gpu":
  "dot_product_attention", else "fused"); others pass through. platform None means the default
  backend: callers that compile for other devices (an AOT mesh of TPU devices on a CPU host)
  resolve with the mesh's platform first (ModelConfig.for_platform)."""
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {impl!r}")
  if impl == "auto":
    platform = platform or jax.default_backend()
    return {"tpu": "pallas", "gpu": "dot_product_attention"}.get(platform, "fused")
  return impl


def attention_mask_from_tokens(masked: jnp.ndarray, mask_rows: bool = True) -> jnp.ndarray:
  """Boolean attention mask [N, L, L] (True = may attend) from token masks [N, L] (True = masked).

  mask_rows=True (reference): a masked query attends only to itself; unmasked queries see all.
  mask_rows=False (paper): no query attends to a masked key, except a token to itself.
  """
  length = masked.shape[-1]
  eye = jnp.eye(length, dtype=bool)
  if mask_rows:
    allowed = jnp.broadcast_to(~masked[:, :, None], masked.shape + (length,))
  else:
    allowed = jnp.broadcast_to(~masked[:, None, :], masked.shape[:1] + (length, length))
  return allowed | eye


class MultiHeadAttention(nn.Module):
  """queries [N, Lq, d], keys_values [N, Lk, d], mask [N, Lq, Lk] bool or None -> [N, Lq, d]."""
  n_heads: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  impl: str = "xla"

  @nn.compact
  def __call__(self, queries, keys_values, mask=None, deterministic: bool = True):
    queries, keys_values = shard_batch(queries), shard_batch(keys_values)
    n, lq, d = queries.shape
    h = self.n_heads
    q = Dense(d, ("embed", "heads"), self.dtype, name="query_projection")(queries)
    k = Dense(d, ("embed", "heads"), self.dtype, name="key_projection")(keys_values)
    v = Dense(d, ("embed", "heads"), self.dtype, name="value_projection")(keys_values)
    use_dropout = self.dropout > 0 and not deterministic
    impl = resolve_attention_impl(self.impl)
    if impl == "dot_product_attention" and use_dropout:
      impl = "fused"
    rate, seed = 0.0, None                 # "fused" and "pallas" drop out inside the kernel
    if use_dropout and impl in ("fused", "pallas"):
      rate = self.dropout
      seed = jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)
    if impl == "pallas":                   # heads split inside the kernel: [N, L, d] in and out
      out = pallas_attention(q, k, v, h, mask, seed, rate)
    else:
      out = self._head_major_attention(impl, q, k, v, mask, use_dropout, rate, seed)
    return shard_batch(Dense(d, ("heads", "embed"), self.dtype, name="out_projection")(out))

  def _head_major_attention(self, impl, q, k, v, mask, use_dropout, rate, seed):
    """q [N, Lq, d], k/v [N, Lk, d] split into heads [.., H, C] for `impl` -> [N, Lq, d]."""
    n, lq, d = q.shape
    lk, h = k.shape[1], self.n_heads
    q = q.reshape(n, lq, h, d // h)
    k = k.reshape(n, lk, h, d // h)
    v = v.reshape(n, lk, h, d // h)
    if impl == "dot_product_attention":
      out = jax.nn.dot_product_attention(
          q, k, v, mask=None if mask is None else mask[:, None, :, :])
    elif impl == "fused":
      chunk = fused_chunk(n, h, lq, lk)
      heads_first = lambda t: t.transpose(0, 2, 1, 3)
      out = fused_attention(heads_first(q), heads_first(k), heads_first(v), mask, seed, rate,
                            chunk)
      out = heads_first(out)
    else:
      scores = jnp.einsum("nqhc,nkhc->nhqk", q, k) / jnp.sqrt(d // h).astype(self.dtype)
      scores = scores.astype(jnp.float32)
      if mask is not None:
        scores = jnp.where(mask[:, None, :, :], scores, -jnp.inf)
      probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
      if use_dropout:
        keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - self.dropout), 0.0).astype(self.dtype)
      out = jnp.einsum("nhqk,nkhc->nqhc", probs, v)
    return out.reshape(n, lq, d)
