"""Multi-head attention with separate q/k/v/o projections and optional boolean masks.

Matches the reference's FlashAttentionLayer (torch scaled_dot_product_attention, scale
1/sqrt(head_dim), dropout on the attention probabilities in training).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from neuript_jax.model.layers import Dense


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
    n, lq, d = queries.shape
    lk = keys_values.shape[1]
    h = self.n_heads
    q = Dense(d, ("embed", "heads"), self.dtype, name="query_projection")(queries)
    k = Dense(d, ("embed", "heads"), self.dtype, name="key_projection")(keys_values)
    v = Dense(d, ("embed", "heads"), self.dtype, name="value_projection")(keys_values)
    q = q.reshape(n, lq, h, d // h)
    k = k.reshape(n, lk, h, d // h)
    v = v.reshape(n, lk, h, d // h)
    use_dropout = self.dropout > 0 and not deterministic
    if self.impl == "dot_product_attention" and not use_dropout:
      out = jax.nn.dot_product_attention(
          q, k, v, mask=None if mask is None else mask[:, None, :, :])
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
    out = out.reshape(n, lq, d)
    return Dense(d, ("heads", "embed"), self.dtype, name="out_projection")(out)
