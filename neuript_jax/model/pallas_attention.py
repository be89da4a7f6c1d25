"""Attention as Pallas TPU kernels: scores and probabilities stay in VMEM, never in HBM.

`pallas_attention(q, k, v, heads, mask, seed, rate)`: q [N, Lq, H*C], k/v [N, Lk, H*C] (the
projections' own layout: head h is lanes h*C:(h+1)*C), mask [N, Lq, Lk] bool (True = may
attend) or None, seed uint32[2] (dropout) -> [N, Lq, H*C]; the same function as
model/fused_attention.py on the head-major view (same dropout stream, see `keep_mask` below).
The heads are split inside the kernel, by static lane slices of the VMEM blocks, so no
head-major copy [N, H, L, C] exists in HBM: on TPU such a copy pads C = 96 to 128 lanes and
the 20 channels of the spatial stage to 32 rows, and costs a transpose each way.

Why not jax.experimental.pallas.ops.tpu.flash_attention: it has no dropout on the
probabilities and no arbitrary boolean mask, and the model needs both in training (the AAMP
masks of stage 1, dropout 0.1 everywhere). NeurIPT's sequences are short (Lk <= 256 time steps
or the 20 channels), so one grid step holds whole sequences: the softmax needs no online
rescaling, the backward recomputes the probabilities from the saved row log-sum-exp, and
every grid step is independent (no accumulation across steps).

Grid: blocks of `nb` sequences x all lanes; inside, a static loop over heads keeps one head's
[nb, Lq, Lk] scores live at a time. On CPU (tests) the kernels run with interpret=True.
Under a mesh (jax.set_mesh) the kernels run per device in a shard_map over the batch axes
(a Pallas call is opaque to the SPMD partitioner, which would otherwise gather its operands).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from neuript_jax.model.mesh_axes import HEAD_MESH_AXIS, batch_axes, context_mesh, \
  target_platform

# VMEM bytes one grid step may use for its blocks (double-buffered) and live intermediates.
VMEM_BUDGET = 8 << 20


def _i32(x: int):
  """A uint32 constant as the int32 with the same bits."""
  return jnp.int32(np.uint32(x).view(np.int32))


def _fmix32(h):
  """murmur3's finaliser on int32 bits (wrapping multiply, logical shifts): the same bits as
  model/dropout.py's uint32 fmix32, in ops every TPU vector unit has."""
  srl = jax.lax.shift_right_logical
  h = h ^ srl(h, jnp.int32(16))
  h = h * _i32(0x85EBCA6B)
  h = h ^ srl(h, jnp.int32(13))
  h = h * _i32(0xC2B2AE35)
  return h ^ srl(h, jnp.int32(16))


def keep_mask(seed0, seed1, row, col, rate: float):
  """Dropout keep-mask: model/dropout.keep_mask's stream for (row, col) int32 index arrays
  (row = row-major index over [N, H, Lq], col = key index), seed words as int32."""
  bits = _fmix32(_fmix32(row ^ seed0) + col * _i32(0x9E3779B1) + seed1)
  threshold = min(int(round((1.0 - rate) * 2.0 ** 32)), 2 ** 32 - 1)
  # Unsigned bits < threshold, as a signed compare with the sign bits flipped.
  flip = _i32(0x80000000)
  return (bits ^ flip) < (_i32(threshold) ^ flip)


def _head_indices(seed_ref, nb: int, h: int, heads: int, lq: int, lk: int):
  """(row, col) int32 [nb, Lq, Lk] of head h for the block's sequences; seed_ref[2] is the
  index of this shard's first sequence in the whole batch."""
  shape = (nb, lq, lk)
  n = (seed_ref[2] + pl.program_id(0) * nb
       + jax.lax.broadcasted_iota(jnp.int32, shape, 0))
  q = jax.lax.broadcasted_iota(jnp.int32, shape, 1)
  col = jax.lax.broadcasted_iota(jnp.int32, shape, 2)
  return (n * heads + h) * lq + q, col


def _scores(q, k, mask, scale):
  s = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32) * scale
  if mask is not None:
    s = jnp.where(mask, s, -jnp.inf)
  return s


def _fwd_kernel(*refs, rate, heads, has_mask):
  seed_ref, q_ref, k_ref, v_ref = refs[:4]
  mask_ref = refs[4] if has_mask else None
  o_ref, lse_ref = refs[-2:]
  nb, lq, d = q_ref.shape
  lk, c = k_ref.shape[1], d // heads
  scale = 1.0 / math.sqrt(c)
  mask = mask_ref[...] != 0 if has_mask else None
  for h in range(heads):
    lanes = slice(h * c, (h + 1) * c)
    q, k, v = q_ref[:, :, lanes], k_ref[:, :, lanes], v_ref[:, :, lanes]
    s = _scores(q, k, mask, scale)
    m = jnp.max(s, axis=-1, keepdims=True)
    p = jnp.exp(s - m)
    total = jnp.sum(p, axis=-1, keepdims=True)
    if rate > 0:
      row, col = _head_indices(seed_ref, nb, h, heads, lq, lk)
      p = jnp.where(keep_mask(seed_ref[0], seed_ref[1], row, col, rate), p, 0.0)
    o = jnp.einsum("bqk,bkc->bqc", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    o_ref[:, :, lanes] = (o * ((1.0 / (1.0 - rate)) / total)).astype(o_ref.dtype)
    lse_ref[:, h] = (m + jnp.log(total))[..., 0]


def _bwd_kernel(*refs, rate, heads, has_mask):
  seed_ref, q_ref, k_ref, v_ref = refs[:4]
  i = 4
  mask_ref = None
  if has_mask:
    mask_ref, i = refs[4], 5
  lse_ref, do_ref = refs[i], refs[i + 1]
  dq_ref, dk_ref, dv_ref = refs[-3:]
  nb, lq, d = q_ref.shape
  lk, c = k_ref.shape[1], d // heads
  scale = 1.0 / math.sqrt(c)
  mask = mask_ref[...] != 0 if has_mask else None
  for h in range(heads):
    lanes = slice(h * c, (h + 1) * c)
    q, k, v, do = (r[:, :, lanes] for r in (q_ref, k_ref, v_ref, do_ref))
    p = jnp.exp(_scores(q, k, mask, scale) - lse_ref[:, h][..., None])
    dp = jnp.einsum("bqc,bkc->bqk", do, v, preferred_element_type=jnp.float32)
    if rate > 0:
      row, col = _head_indices(seed_ref, nb, h, heads, lq, lk)
      keep = keep_mask(seed_ref[0], seed_ref[1], row, col, rate)
      inv = 1.0 / (1.0 - rate)
      p_used = jnp.where(keep, p * inv, 0.0)
      dp = jnp.where(keep, dp * inv, 0.0)
    else:
      p_used = p
    delta = jnp.sum(dp * p, axis=-1, keepdims=True)      # = rowsum(do * o)
    ds = (p * (dp - delta)).astype(q.dtype)
    dv_ref[:, :, lanes] = jnp.einsum("bqk,bqc->bkc", p_used.astype(do.dtype), do,
                                     preferred_element_type=jnp.float32).astype(dv_ref.dtype)
    dq_ref[:, :, lanes] = (jnp.einsum("bqk,bkc->bqc", ds, k, preferred_element_type=jnp.float32)
                           * scale).astype(dq_ref.dtype)
    dk_ref[:, :, lanes] = (jnp.einsum("bqk,bqc->bkc", ds, q, preferred_element_type=jnp.float32)
                           * scale).astype(dk_ref.dtype)


def _tile_bytes(rows: int, cols: int, itemsize: int) -> int:
  """VMEM bytes of a [rows, cols] tile: (8 x 128)-padded 32-bit words (packed narrower)."""
  sub = 8 * max(1, 4 // itemsize)
  return (-(-rows // sub) * sub) * (-(-cols // 128) * 128) * itemsize


def block_sequences(n: int, heads: int, lq: int, lk: int, c: int, itemsize: int) -> int:
  """Sequences per grid step: the largest divisor of n whose blocks (q, k, v, o, do, dq, dk,
  dv as [L, heads * c] tiles, double-buffered) and one head's float32 intermediates fit
  VMEM_BUDGET."""
  width = heads * c
  per_seq = (2 * (4 * _tile_bytes(lq, width, itemsize) + 4 * _tile_bytes(lk, width, itemsize))
             + 6 * _tile_bytes(lq, lk, 4) + 2 * _tile_bytes(lq, lk, 1))
  target = max(1, VMEM_BUDGET // per_seq)
  return max(d for d in range(1, min(n, target) + 1) if n % d == 0)


def _specs(nb, heads, q, k, mask):
  _, lq, d = q.shape
  lk = k.shape[1]
  seq = lambda length: pl.BlockSpec((nb, length, d), lambda i: (i, 0, 0))
  from jax.experimental.pallas import tpu as pltpu
  seed = pl.BlockSpec(memory_space=pltpu.SMEM)
  specs = [seed, seq(lq), seq(lk), seq(lk)]
  if mask is not None:
    specs.append(pl.BlockSpec((nb, lq, lk), lambda i: (i, 0, 0)))
  lse = pl.BlockSpec((nb, heads, lq), lambda i: (i, 0, 0))
  return specs, seq, lse


def _forward(q, k, v, mask, seed, heads, rate, interpret):
  n, lq, d = q.shape
  nb = block_sequences(n, heads, lq, k.shape[1], d // heads, q.dtype.itemsize)
  specs, seq, lse = _specs(nb, heads, q, k, mask)
  args = [seed, q, k, v] + ([mask.astype(jnp.int8)] if mask is not None else [])
  return pl.pallas_call(
      functools.partial(_fwd_kernel, rate=rate, heads=heads, has_mask=mask is not None),
      grid=(n // nb,), in_specs=specs, out_specs=[seq(lq), lse],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((n, heads, lq), jnp.float32)],
      interpret=interpret)(*args)


def _backward(q, k, v, mask, seed, lse, do, heads, rate, interpret):
  n, lq, d = q.shape
  lk = k.shape[1]
  nb = block_sequences(n, heads, lq, lk, d // heads, q.dtype.itemsize)
  specs, seq, lse_spec = _specs(nb, heads, q, k, mask)
  args = [seed, q, k, v] + ([mask.astype(jnp.int8)] if mask is not None else []) + [lse, do]
  return pl.pallas_call(
      functools.partial(_bwd_kernel, rate=rate, heads=heads, has_mask=mask is not None),
      grid=(n // nb,), in_specs=specs + [lse_spec, seq(lq)],
      out_specs=[seq(lq), seq(lk), seq(lk)],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
                 jax.ShapeDtypeStruct(v.shape, v.dtype)],
      interpret=interpret)(*args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _attention(q, k, v, mask, seed, heads, rate, interpret):
  return _forward(q, k, v, mask, seed, heads, rate, interpret)[0]


def _attention_fwd(q, k, v, mask, seed, heads, rate, interpret):
  o, lse = _forward(q, k, v, mask, seed, heads, rate, interpret)
  return o, (q, k, v, mask, seed, lse)


def _attention_bwd(heads, rate, interpret, res, do):
  q, k, v, mask, seed, lse = res
  dq, dk, dv = _backward(q, k, v, mask, seed, lse, do, heads, rate, interpret)
  zero = lambda a: None if a is None else np.zeros(a.shape, jax.dtypes.float0)
  return dq, dk, dv, zero(mask), zero(seed)


_attention.defvjp(_attention_fwd, _attention_bwd)


def _sharded(fn, n: int, heads: int, has_mask: bool):
  """fn(q, k, v, mask, seed, local_heads) over the per-device shards of the context mesh
  (sequence axis over the batch axes, the lanes, i.e. whole heads, over the tensor axis where
  the heads divide), or fn itself without a mesh. seed[2] becomes the shard's first sequence
  index (distinct dropout per shard)."""
  mesh = context_mesh()
  if mesh is None or mesh.size == 1:
    return functools.partial(fn, heads=heads)
  from jax.sharding import PartitionSpec as P
  batch = batch_axes(n)
  tensor = mesh.shape.get(HEAD_MESH_AXIS, 1)
  head = HEAD_MESH_AXIS if tensor > 1 and heads % tensor == 0 else None
  seq = P(batch or None, None, head)
  mask_spec = P(batch or None) if has_mask else None
  shards = math.prod(mesh.shape[a] for a in batch) if batch else 1
  local_heads = heads // tensor if head else heads

  def local(q, k, v, m, seed):
    if batch:
      start = jax.lax.axis_index(batch) * (n // shards)
      seed = seed.at[2].add(start.astype(jnp.int32))
    return fn(q, k, v, m, seed, heads=local_heads)

  return jax.shard_map(local, mesh=mesh, in_specs=(seq, seq, seq, mask_spec, P()),
                       out_specs=seq, check_vma=False)


def pallas_attention(q, k, v, heads: int, mask=None, seed=None, rate: float = 0.0,
                     interpret: bool | None = None):
  """q [N, Lq, H*C], k/v [N, Lk, H*C] with H = heads, mask [N, Lq, Lk] bool or None, seed
  uint32[2] (used when rate > 0) -> [N, Lq, H*C]. interpret None: interpret mode unless on
  TPU devices."""
  if q.shape[-1] % heads:
    raise ValueError(f"pallas_attention: width {q.shape[-1]} is not a multiple of "
                     f"heads={heads}")
  if interpret is None:
    interpret = target_platform() != "tpu"
  seed = (jnp.zeros((2,), jnp.int32) if seed is None
          else jax.lax.bitcast_convert_type(seed.astype(jnp.uint32), jnp.int32))
  seed = jnp.concatenate([seed, jnp.zeros((1,), jnp.int32)])   # + first sequence index
  n = q.shape[0]
  fn = lambda q, k, v, m, s, heads: _attention(q, k, v, m, s, heads, float(rate),
                                               bool(interpret))
  return _sharded(fn, n, heads, mask is not None)(q, k, v, mask, seed)
