"""The stage-1 (pretraining) decoder: 7 layers, each TSA self-attention + cross-attention to
one encoder map + FFN + a per-point prediction; predictions are summed over layers
(REFERENCE.md §2.5). Residuals follow the reference: x = LN(x) + attn, y = LN2(x) + FFN.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from neuript_jax.model.attention import MultiHeadAttention
from neuript_jax.model.config import ModelConfig
from neuript_jax.model.dropout import HashedDropout
from neuript_jax.model.layers import Dense, LayerNorm
from neuript_jax.model.mesh_axes import shard_batch
from neuript_jax.model.tsa import (TwoStageAttention, apply_ffn, cotangents_together, make_ffn,
                                   ordered_remat_call, tsa_class)


class DecoderLayer(nn.Module):
  """x [B, D, L0, d], cross [B, D, Lc, d] -> (x' [B, D, L0, d], pred [B, D, L0, seg_len], aux)."""
  cfg: ModelConfig
  dec_expert: int
  cross_expert: int
  remat_tsa: bool = True          # False inside OrderedRematDecoderLayer (no nested remat)

  @nn.compact
  def __call__(self, x, cross, deterministic: bool = True):
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    tsa = tsa_class(cfg) if self.remat_tsa else TwoStageAttention
    x, aux1 = tsa(cfg, self.dec_expert, name="self_attention")(
        x, None, None, None, deterministic)
    b, d, l, m = x.shape
    q = LayerNorm(dtype=dtype, name="norm1_q")(x.reshape(b * d, l, m))
    kv = LayerNorm(dtype=dtype, name="norm1_kv")(cross.reshape(b * d, cross.shape[2], m))
    attn = MultiHeadAttention(cfg.n_heads, cfg.dropout, dtype, cfg.attention,
                              name="cross_attention")(q, kv, None, deterministic)
    q = q + HashedDropout(cfg.dropout)(attn, deterministic)
    out = LayerNorm(dtype=dtype, name="norm2")(q)
    y, aux2 = apply_ffn(make_ffn(cfg, self.cross_expert, "MLP"), out, deterministic)
    out = shard_batch((out + y).reshape(b, d, l, m))
    pred = shard_batch(Dense(cfg.seg_len, ("embed", "seg"), dtype, name="linear_pred")(out))
    return out, pred, aux1 + aux2


class OrderedRematDecoderLayer(nn.Module):
  """remat "layer_ordered": a whole DecoderLayer (self TSA, cross-attention, FFN) under
  tsa.ordered_remat_call; same numbers and parameter paths as DecoderLayer."""
  cfg: ModelConfig
  dec_expert: int
  cross_expert: int

  @nn.compact
  def __call__(self, x, cross, deterministic: bool = True):
    layer = DecoderLayer(self.cfg, self.dec_expert, self.cross_expert, remat_tsa=False)
    nn.share_scope(self, layer)

    def run(mdl, x, cross):
      return mdl(x, cross, deterministic)
    return ordered_remat_call(layer, run, x, cross)


class Decoder(nn.Module):
  """dec_in [B, D, L0, d], enc_out list of 7 maps -> (prediction [B, T, D], aux)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, dec_in, enc_out, deterministic: bool = True):
    cfg = self.cfg
    x, total, aux = dec_in, None, jnp.zeros((), jnp.float32)
    layer_cls = DecoderLayer
    if cfg.remat == "layer_ordered":   # encoder map 0 waits for layer 0's whole backward
      layer_cls, enc_out = OrderedRematDecoderLayer, list(enc_out)
      x, enc_out[0] = cotangents_together(x, enc_out[0])
    for i, (de, ce) in enumerate(zip(cfg.dec_expert, cfg.cross_expert)):
      x, pred, a = layer_cls(cfg, de, ce, name=f"decode_layers_{i}")(
          x, enc_out[i], deterministic)
      total = pred if total is None else total + pred
      aux = aux + a
    b, d, l, s = total.shape
    return total.reshape(b, d, l * s).transpose(0, 2, 1).astype(jnp.float32), aux
