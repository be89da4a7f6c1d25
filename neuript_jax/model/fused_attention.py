"""Scaled dot-product attention with a hand-written backward, chunked over sequences (CPU).

`fused_attention(q, k, v, mask, seed, rate, chunk)`: q [N, H, Lq, C], k/v [N, H, Lk, C]
(head-major), mask [N, Lq, Lk] bool (True = may attend) or None -> out [N, H, Lq, C].
softmax(q k^T / sqrt(C)) v, with dropout on the probabilities when rate > 0.

Why it is fast on XLA CPU (see BENCHMARKS.md "where the time goes"):
  * head-major operands, so every matmul is a plain batched [L, C] x [C, L] product with no
    layout copies of the [N, H, Lq, Lk] score tensor;
  * the softmax is not normalised before the second matmul: o = (exp(s - max) v) / rowsum;
  * the backward recomputes the probabilities from the saved row log-sum-exp (flash-attention
    style) instead of letting autodiff keep and transpose them;
  * forward and backward run `lax.map` over chunks of `chunk` sequences, so one chunk's scores
    (chunk * H * Lq * Lk floats, a few MB) stay in cache;
  * the dropout keep-mask is a counter hash of (seed, position) (murmur3 finaliser), cheap
    enough to recompute in the backward instead of storing it. jax.random.bernoulli over
    [160, 8, 256, 256] costs ~1 s on 2 CPU cores; the hash costs ~0.05 s. Keep probability is
    (1 - rate) to within 2^-32; the stream is not jax.random's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from neuript_jax.model.dropout import keep_mask


def dropout_keep_mask(seed, shape, rate: float, offset=0):
  """bool [N, H, Lq, Lk]: True with probability 1 - rate, a hash of (seed uint32[2], position)
  (`neuript_jax.model.dropout.keep_mask`). `offset` is added to the sequence index (for chunks
  of a larger batch)."""
  return keep_mask(seed, shape, rate, offset)


def chunk_for(n: int, heads: int, lq: int, lk: int, chunk_bytes: int) -> int:
  """Sequences per chunk so one chunk's float32 scores take about chunk_bytes (>= 1, <= n)."""
  per_sequence = heads * lq * lk * 4
  return int(max(1, min(n, chunk_bytes // per_sequence)))


def _scores(q, k, mask):
  s = jnp.einsum("nhqc,nhkc->nhqk", q, k, preferred_element_type=jnp.float32)
  s = s * (1.0 / np.sqrt(q.shape[-1]))
  if mask is not None:
    s = jnp.where(mask[:, None], s, -jnp.inf)
  return s


def _forward(q, k, v, mask, seed, offset, rate):
  """One chunk: (out [n, H, Lq, C] in q.dtype, row log-sum-exp [n, H, Lq, 1] float32)."""
  s = _scores(q, k, mask)
  m = jnp.max(s, -1, keepdims=True)
  p = jnp.exp(s - m)
  total = jnp.sum(p, -1, keepdims=True)
  if rate > 0:
    p = jnp.where(dropout_keep_mask(seed, s.shape, rate, offset), p, 0.0)
  o = jnp.einsum("nhqk,nhkc->nhqc", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
  o = o * ((1.0 / (1.0 - rate)) / total)
  return o.astype(q.dtype), m + jnp.log(total)


def _backward(q, k, v, mask, seed, offset, o, lse, do, rate):
  """One chunk: (dq, dk, dv) from the saved output and log-sum-exp."""
  p = jnp.exp(_scores(q, k, mask) - lse)                     # softmax probabilities, f32
  dp = jnp.einsum("nhqc,nhkc->nhqk", do, v, preferred_element_type=jnp.float32)
  if rate > 0:
    keep = dropout_keep_mask(seed, p.shape, rate, offset)
    scale = 1.0 / (1.0 - rate)
    p_used = jnp.where(keep, p * scale, 0.0)
    dp = jnp.where(keep, dp * scale, 0.0)
    delta = jnp.sum(dp * p, -1, keepdims=True)
  else:
    p_used = p
    delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), -1, keepdims=True)
  ds = (p * (dp - delta)).astype(q.dtype)
  dv = jnp.einsum("nhqk,nhqc->nhkc", p_used.astype(do.dtype), do)
  scale_s = 1.0 / np.sqrt(q.shape[-1])
  dq = jnp.einsum("nhqk,nhkc->nhqc", ds, k) * jnp.asarray(scale_s, q.dtype)
  dk = jnp.einsum("nhqk,nhqc->nhkc", ds, q) * jnp.asarray(scale_s, q.dtype)
  return dq, dk, dv


def _map_chunks(fn, chunk: int, arrays):
  """fn(offset, *chunk_arrays) over chunks of axis 0 (None entries stay None); results
  concatenated along axis 0. N is padded up to a multiple of chunk (masks pad with True)."""
  n = next(a for a in arrays if a is not None).shape[0]
  if chunk >= n:
    return fn(jnp.uint32(0), *arrays)
  pad = (-n) % chunk

  def split(a):
    if a is None:
      return None
    if pad:
      fill = jnp.ones if a.dtype == jnp.bool_ else jnp.zeros
      a = jnp.concatenate([a, fill((pad,) + a.shape[1:], a.dtype)])
    return a.reshape(((n + pad) // chunk, chunk) + a.shape[1:])

  present = [i for i, a in enumerate(arrays) if a is not None]
  chunks = tuple(split(arrays[i]) for i in present)
  offsets = jnp.arange((n + pad) // chunk, dtype=jnp.uint32) * jnp.uint32(chunk)

  def body(args):
    offset, parts = args
    full = [None] * len(arrays)
    for i, a in zip(present, parts):
      full[i] = a
    return fn(offset, *full)

  out = jax.lax.map(body, (offsets, chunks))
  return jax.tree_util.tree_map(lambda a: a.reshape((n + pad,) + a.shape[2:])[:n], out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def fused_attention(q, k, v, mask, seed, rate: float, chunk: int):
  """q [N, H, Lq, C], k/v [N, H, Lk, C], mask [N, Lq, Lk] bool or None, seed uint32[2]
  (dropout only) -> [N, H, Lq, C]. rate: dropout on the probabilities; chunk: sequences per
  lax.map step (>= N: no loop)."""
  return _forward_all(q, k, v, mask, seed, rate, chunk)[0]


def _forward_all(q, k, v, mask, seed, rate, chunk):
  fn = lambda offset, q, k, v, m: _forward(q, k, v, m, seed, offset, rate)
  return _map_chunks(fn, chunk, (q, k, v, mask))


def _fused_fwd(q, k, v, mask, seed, rate, chunk):
  o, lse = _forward_all(q, k, v, mask, seed, rate, chunk)
  return o, (q, k, v, mask, seed, o, lse)


def _fused_bwd(rate, chunk, res, do):
  q, k, v, mask, seed, o, lse = res
  fn = lambda offset, q, k, v, m, o, lse, do: _backward(q, k, v, m, seed, offset, o, lse, do,
                                                        rate)
  dq, dk, dv = _map_chunks(fn, chunk, (q, k, v, mask, o, lse, do))
  zero = lambda a: None if a is None else np.zeros(a.shape, jax.dtypes.float0)
  return dq, dk, dv, zero(mask), zero(seed)


fused_attention.defvjp(_fused_fwd, _fused_bwd)
