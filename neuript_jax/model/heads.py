"""IILP (Intra-Inter Lobe Pooling) classification head (REFERENCE.md §4).

Pools each of the c_layers+1 feature maps enc_out[0], enc_out[-1], enc_out[-2], ... over the
channels of every lobe group and all time segments, concatenates (groups within a map, then
maps) and applies one Linear. Partition "Mean" (one group of all channels) and "None" (one group
per channel) are the ablations' mean pooling and no pooling.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from neuript_jax.model.layers import Dense


def group_matrix(groups: Sequence[Sequence[int]], n_channels: int) -> np.ndarray:
  """[n_groups, D] averaging weights: row g is 1/|g| on the group's channels."""
  mat = np.zeros((len(groups), n_channels), np.float32)
  for g, members in enumerate(groups):
    bad = [c for c in members if not 0 <= c < n_channels]
    if bad:
      raise ValueError(f"IILP group {g} names channels {bad} outside 0..{n_channels - 1}")
    mat[g, list(members)] = 1.0 / len(members)
  return mat


def iilp_features(enc_out, groups, c_layers: int):
  """enc_out: list of [B, D, L, d] -> features [B, (c_layers+1) * n_groups * d]."""
  g = jnp.asarray(group_matrix(groups, enc_out[0].shape[1]))
  feats = []
  for i in range(c_layers + 1):
    fmap = enc_out[-i].astype(jnp.float32)                 # i = 0 -> enc_out[0]
    pooled = jnp.einsum("gc,bcd->bgd", g, fmap.mean(axis=2))  # [B, n_groups, d]
    feats.append(pooled.reshape(pooled.shape[0], -1))
  return jnp.concatenate(feats, axis=-1)


class IILPHead(nn.Module):
  """enc_out list -> logits [B, n_logits] (n_logits = num_classes, or 1 for binary)."""
  groups: tuple[tuple[int, ...], ...]
  c_layers: int
  n_logits: int

  @nn.compact
  def __call__(self, enc_out):
    feats = iilp_features(enc_out, self.groups, self.c_layers)
    return Dense(self.n_logits, ("pooled", "classes"), jnp.float32,
                 name="classification_layer")(feats)
