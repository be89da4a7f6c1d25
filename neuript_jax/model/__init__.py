"""NeurIPT in Flax Linen: `Stage1Model` (pretraining), `Stage2Model` (classifier)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from neuript_jax.model.config import ModelConfig
from neuript_jax.model.neuript import Stage1Model, Stage2Model, gather_masked, \
  masked_mean_abs_error
from neuript_jax.model.quirks import Quirks


def build_model(cfg: ModelConfig, stage: int) -> nn.Module:
  if stage == 1:
    return Stage1Model(cfg)
  if stage == 2:
    return Stage2Model(cfg)
  raise ValueError(f"stage must be 1 or 2, got {stage}")


def dummy_inputs(cfg: ModelConfig, stage: int, batch: int = 1):
  """Zero inputs of the right shapes: (x,) for stage 2, (x, block_masks) for stage 1."""
  x = jnp.zeros((batch, cfg.T, cfg.data_dim), jnp.float32)
  if stage == 2:
    return (x,)
  masks = [jnp.zeros((batch, cfg.data_dim, l), bool) for l in cfg.block_lengths()]
  return (x, masks)


def init_variables(cfg: ModelConfig, stage: int, key):
  """Boxed variables (with logical-axis metadata) for sharding rules (jit-compiled init)."""
  model = build_model(cfg, stage)
  return jax.jit(lambda k: model.init({"params": k}, *dummy_inputs(cfg, stage)))(key)


def init_params(cfg: ModelConfig, stage: int, key):
  """Plain param pytree (dict of arrays)."""
  return nn.unbox(init_variables(cfg, stage, key)["params"])


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
