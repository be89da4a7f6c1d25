"""The NeurIPT encoder: 6 scale blocks, each optional SegMerging + one TSA layer.

Input: the point embedding H0 [B, D, L0, d]. Output: the list of 7 feature maps
[H0 (+PE_t, see Quirks.pe_leaks_into_embedding), Z1, ..., Z6] and the summed MoE aux loss.
Stage-1 block masks ([B, D, L_l] bool, True = masked) turn into attention masks per block.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from neuript_jax.model.attention import attention_mask_from_tokens
from neuript_jax.model.config import ModelConfig
from neuript_jax.model.embedding import spatial_pe, temporal_pe
from neuript_jax.model.tsa import SegMerging, cotangents_together, tsa_class


def block_attention_masks(block_mask, mask_rows: bool):
  """[B, D, L] token mask -> (time mask [B*D, L, L], dim mask [B*L, D, D]), True = attend."""
  b, d, l = block_mask.shape
  time_mask = attention_mask_from_tokens(block_mask.reshape(b * d, l), mask_rows)
  dim_mask = attention_mask_from_tokens(block_mask.transpose(0, 2, 1).reshape(b * l, d),
                                        mask_rows)
  return time_mask, dim_mask


class ScaleBlock(nn.Module):
  """Optional SegMerging(win) then one TSA layer; the first block adds PE_t and PE_s."""
  cfg: ModelConfig
  win: int
  num_experts: int
  first: bool = False

  @nn.compact
  def __call__(self, x, block_mask=None, deterministic: bool = True):
    cfg = self.cfg
    if self.win > 1:
      x = SegMerging(self.win, jnp.dtype(cfg.dtype), name="merge_layer")(x)
    pe_s = None
    if self.first:
      x = x + temporal_pe(x.shape[2], cfg.d_model)[None, None].astype(x.dtype)
      pe_s = jnp.asarray(spatial_pe(cfg.pos3d(), cfg.d_model))
    time_mask = dim_mask = None
    if block_mask is not None:
      time_mask, dim_mask = block_attention_masks(block_mask, cfg.quirks.mask_rows)
    layer = tsa_class(cfg)(cfg, self.num_experts, name="encode_layers_0")
    return layer(x, time_mask, dim_mask, pe_s, deterministic)


class Encoder(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, h0, block_masks=None, deterministic: bool = True):
    cfg = self.cfg
    first = h0
    if cfg.quirks.pe_leaks_into_embedding and cfg.merge_layers[0] == 1:
      first = h0 + temporal_pe(h0.shape[2], cfg.d_model)[None, None].astype(h0.dtype)
    maps, aux, x = [first], jnp.zeros((), jnp.float32), h0
    for i, (win, experts) in enumerate(zip(cfg.merge_layers, cfg.enc_expert)):
      mask = None if block_masks is None else block_masks[i]
      x, a = ScaleBlock(cfg, win, experts, first=(i == 0), name=f"encode_blocks_{i}")(
          x, mask, deterministic)
      if cfg.remat == "layer_ordered":      # block i's recompute after decoder layer i's
        x, maps[i] = cotangents_together(x, maps[i])
      maps.append(x)
      aux = aux + a
    return maps, aux
