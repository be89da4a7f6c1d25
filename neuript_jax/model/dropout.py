"""Dropout whose keep-mask is a counter hash of (seed, element position).

`HashedDropout` is the model's dropout (residual branches in every TSA/decoder layer); the
fused attention uses the same `keep_mask` on its probabilities. Why not flax's nn.Dropout:
jax.random.bernoulli draws threefry bits for every element, which on a 2-core CPU costs
~3 s of a 26 s stage-1 step at the `small` preset (batch 8, 59 dropout sites over up to
[40960, 192] activations), and the bits are stored for the backward. The hash is a few
integer ops that XLA fuses into the consumer and recomputes in the backward.

Semantics match nn.Dropout: in training each element is kept with probability 1 - rate and
scaled by 1 / (1 - rate); the seed comes from the "dropout" rng stream (make_rng), so runs are
reproducible from the step key. The stream is murmur3's 32-bit finaliser (applied twice, see
`keep_mask`), not jax.random's; keep probability is 1 - rate to within 2^-32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def fmix32(h):
  """murmur3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def keep_mask(seed, shape, rate: float, offset=0):
  """bool[shape], True with probability 1 - rate: a hash of (seed uint32[2], position).

  Position = (row, column): column is the index along the last axis, row the row-major index
  over the leading axes, with `offset` added to the first axis' index (for chunks of a larger
  array). Needs fewer than 2^32 rows.
  """
  shape = tuple(int(s) for s in shape)
  lead = shape[:-1] + (1,)
  row = jnp.zeros(lead, jnp.uint32)
  for axis, size in enumerate(shape[:-1]):
    index = jax.lax.broadcasted_iota(jnp.uint32, lead, axis)
    if axis == 0:
      index = index + jnp.asarray(offset, jnp.uint32)
    row = row * jnp.uint32(size) + index
  col = jax.lax.broadcasted_iota(jnp.uint32, (1,) * (len(shape) - 1) + (shape[-1],),
                                 len(shape) - 1)
  bits = fmix32(fmix32(row ^ seed[0]) + col * jnp.uint32(0x9E3779B1) + seed[1])
  threshold = min(int(round((1.0 - rate) * 2.0 ** 32)), 2 ** 32 - 1)
  return bits < jnp.uint32(threshold)


class HashedDropout(nn.Module):
  """x [...] -> x with each element zeroed with probability `rate` (training) and the rest
  scaled by 1 / (1 - rate); identity when deterministic or rate == 0."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    if deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    seed = jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)
    keep = keep_mask(seed, x.shape, self.rate)
    return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype),
                     jnp.zeros((), x.dtype))
