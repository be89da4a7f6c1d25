"""Point embedding and the two positional encodings (REFERENCE.md §2.2 items 1, 7, 8).

The sinusoid tables are computed in float32 the way the reference computes them, so they
agree with its buffers to the last bit or two.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from neuript_jax.model.layers import Dense
from neuript_jax.model.mesh_axes import shard_batch

# The spatial PE tables cover integer coordinates 0..MAX_RANGE-1.
MAX_RANGE = 50


def sinusoid_table(n_positions: int, dim: int) -> np.ndarray:
  """Interleaved Vaswani sinusoid [n_positions, dim] float32: even cols sin, odd cols cos."""
  position = np.arange(n_positions, dtype=np.float32)[:, None]
  div_term = np.exp(np.arange(0, dim, 2, dtype=np.float32)
                    * np.float32(-math.log(10000.0) / dim)).astype(np.float32)
  angles = (position * div_term).astype(np.float32)
  pe = np.zeros((n_positions, dim), np.float32)
  pe[:, 0::2] = np.sin(angles)
  pe[:, 1::2] = np.cos(angles[:, : dim // 2])
  return pe


def temporal_pe(length: int, d_model: int) -> np.ndarray:
  """PE_t [length, d_model]."""
  return sinusoid_table(length, d_model)


def split_3d_dims(d_model: int) -> tuple[int, int, int]:
  """The reference's (d_x, d_y, d_z): d//3 each for x, y (minus 1 if odd), rest to z."""
  xy = d_model // 3 if (d_model // 3) % 2 == 0 else d_model // 3 - 1
  return xy, xy, d_model - 2 * xy


def spatial_pe(pos3d: np.ndarray, d_model: int) -> np.ndarray:
  """PE_s [D, d_model] = concat(PE_x[x_d], PE_y[y_d], PE_z[z_d]) for integer coords [D, 3]."""
  pos3d = np.asarray(pos3d, dtype=np.int64)
  if pos3d.size and (pos3d.min() < 0 or pos3d.max() >= MAX_RANGE):
    raise ValueError(f"3D positions must be integers in 0..{MAX_RANGE - 1}, "
                     f"got range {pos3d.min()}..{pos3d.max()}")
  parts = [sinusoid_table(MAX_RANGE, dim)[pos3d[:, axis]]
           for axis, dim in enumerate(split_3d_dims(d_model))]
  return np.concatenate(parts, axis=-1)


class PointEmbedding(nn.Module):
  """Crossformer DSW embedding: [B, T, D] -> [B, D, T/seg_len, d_model] (Linear(seg_len->d))."""
  d_model: int
  seg_len: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t, d = x.shape
    seg = x.reshape(b, t // self.seg_len, self.seg_len, d).transpose(0, 3, 1, 2)
    return shard_batch(Dense(self.d_model, ("seg", "embed"), dtype=self.dtype,
                             name="linear")(shard_batch(seg)))
