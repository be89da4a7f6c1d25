"""NeurIPT stage-2 (classifier) and stage-1 (masked pretraining) models.

Stage2Model: x [B, T, D] -> (logits [B, n_logits], aux) [+ enc_out list of 7 maps].
Stage1Model: x [B, T, D], block masks (list of [B, D, L_l] bool, True = masked) ->
  (prediction [B, T, D] at every point, aux). The reference returns only the masked points;
  `gather_masked` does that selection outside jit, `masked_mean_abs_error` is the loss inside.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from neuript_jax.model.config import ModelConfig
from neuript_jax.model.decoder import Decoder
from neuript_jax.model.embedding import PointEmbedding, spatial_pe, temporal_pe
from neuript_jax.model.encoder import Encoder
from neuript_jax.model.heads import IILPHead
from neuript_jax.model.mesh_axes import shard_batch


class Stage2Model(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, deterministic: bool = True, return_features: bool = False):
    cfg = self.cfg
    h0 = PointEmbedding(cfg.d_model, cfg.seg_len, jnp.dtype(cfg.dtype),
                        name="enc_value_embedding")(x)
    enc_out, aux = Encoder(cfg, name="encoder")(h0, None, deterministic)
    logits = IILPHead(cfg.iilp_groups(), cfg.c_layers, cfg.n_logits(),
                      name="classification_head")(enc_out)
    if return_features:
      return logits, aux, enc_out
    return logits, aux


def point_mask(mask0, seg_len: int):
  """Block-0 token mask [B, D, L0] -> point mask [B, T, D] (time first, like x)."""
  return jnp.repeat(mask0, seg_len, axis=2).transpose(0, 2, 1)


class Stage1Model(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, block_masks: Sequence, re_masks: Sequence | None = None,
               deterministic: bool = True):
    cfg = self.cfg
    re_masks = block_masks if re_masks is None else re_masks
    embed = PointEmbedding(cfg.d_model, cfg.seg_len, jnp.dtype(cfg.dtype),
                           name="enc_value_embedding")
    h0 = embed(x)
    enc_out, aux = Encoder(cfg, name="encoder")(h0, block_masks, deterministic)

    token = self.param("mask_token", nn.with_logical_partitioning(
        nn.initializers.normal(1.0), ("embed",)), (cfg.d_model,))
    fill = lambda fmap, m: jnp.where(m[..., None], token.astype(fmap.dtype), fmap)
    # enc_out[0] and enc_out[1] both use re_masks[0]; enc_out[i+1] uses re_masks[i].
    enc_out = [fill(enc_out[0], re_masks[0])] + [
        fill(enc_out[i + 1], re_masks[i]) if i < len(re_masks) else enc_out[i + 1]
        for i in range(len(enc_out) - 1)]

    b, _, d = x.shape
    l0 = cfg.n_tokens_time
    pe = (temporal_pe(l0, cfg.d_model)[None, :, :]
          + spatial_pe(cfg.pos3d(), cfg.d_model)[:, None, :])        # [D, L0, d]
    dec_in = shard_batch(jnp.broadcast_to(jnp.asarray(pe)[None], (b, d, l0, cfg.d_model)))
    if cfg.quirks.decoder_input == "pe_plus_signal":
      visible = x * (1 - point_mask(block_masks[0], cfg.seg_len)).astype(x.dtype)
      dec_in = dec_in + embed(visible)
    pred, dec_aux = Decoder(cfg, name="decoder")(dec_in.astype(jnp.dtype(cfg.dtype)), enc_out,
                                                 deterministic)
    return pred, aux + dec_aux


def gather_masked(pred, mask0, seg_len: int = 1) -> np.ndarray:
  """The reference's output: pred [B, T, D] at mask0's True points, (b, t, d) row-major,
  viewed as [B, -1, D]. Runs on host (data-dependent size)."""
  pred = np.asarray(pred)
  m = np.asarray(point_mask(jnp.asarray(mask0), seg_len))
  return pred[m].reshape(pred.shape[0], -1, pred.shape[2])


def masked_mean_abs_error(pred, x, mask0, seg_len: int = 1, p: float = 1.0):
  """mean over masked points of |pred - x|^p (p = 1: the reference-style L1 loss)."""
  m = point_mask(mask0, seg_len).astype(jnp.float32)
  err = jnp.abs(pred.astype(jnp.float32) - x.astype(jnp.float32)) ** p
  return jnp.sum(err * m) / jnp.maximum(jnp.sum(m), 1.0)
