"""Shared pieces of the ml_collections presets: the model block and the quirk switches."""

from __future__ import annotations

import ml_collections

from neuript_jax.model.config import ModelConfig


def quirks_config(**overrides) -> ml_collections.ConfigDict:
  """Reference-compatibility switches (defaults = the authors' code; see docs/QUIRKS.md)."""
  q = ml_collections.ConfigDict(dict(
      moe_routing="capacity", moe_renormalize=False, mask_rows=True,
      pe_leaks_into_embedding=True, tcp_fp2_f3_typo=True, decoder_input="pe"))
  q.update(overrides)
  return q


def model_config(**fields) -> ml_collections.ConfigDict:
  """A `model` block: every ModelConfig field, overridable as --config.model.<field>=..."""
  defaults = ModelConfig()
  m = ml_collections.ConfigDict(dict(
      d_model=defaults.d_model, n_heads=defaults.n_heads, d_ff=defaults.d_ff,
      hidden_dim=defaults.hidden_dim, hidden_dim_shared=defaults.hidden_dim_shared,
      top_k=defaults.top_k, noise_std=defaults.noise_std, w_importance=defaults.w_importance,
      dropout=defaults.dropout, T=defaults.T, seg_len=defaults.seg_len,
      merge_layers=tuple(defaults.merge_layers), enc_expert=tuple(defaults.enc_expert),
      dec_expert=tuple(defaults.dec_expert), cross_expert=tuple(defaults.cross_expert),
      c_layers=defaults.c_layers, part=defaults.part, num_classes=defaults.num_classes,
      data=defaults.data,
      channels=ml_collections.FieldReference(None, field_type=tuple),
      montage=defaults.montage, dtype=defaults.dtype, attention=defaults.attention,
      moe_dispatch=defaults.moe_dispatch, remat=defaults.remat, quirks=quirks_config()))
  m.update(fields)
  return m


def to_model_config(model: ml_collections.ConfigDict) -> ModelConfig:
  """ConfigDict `model` block -> frozen ModelConfig."""
  return ModelConfig.from_dict(model.to_dict())
