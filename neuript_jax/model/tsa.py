"""Two-Stage Attention layer and SegMerging (REFERENCE.md §2.2 items 3-4).

TSA input/output: [B, D, L, d] (batch, channels, time segments, d_model).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from neuript_jax.model.attention import MultiHeadAttention
from neuript_jax.model.config import REMAT_OPTIONS, ModelConfig
from neuript_jax.model.dropout import HashedDropout
from neuript_jax.model.layers import Dense, LayerNorm, SwiGLU
from neuript_jax.model.mesh_axes import shard_batch
from neuript_jax.model.moe import MoE


def make_ffn(cfg: ModelConfig, num_experts: int, name: str):
  """The dense SwiGLU FFN (num_experts == 0) or a PMoE with that many routed experts."""
  dtype = jnp.dtype(cfg.dtype)
  if num_experts == 0:
    return SwiGLU(cfg.d_ff, dtype, name=name)
  return MoE(num_experts, cfg.top_k, cfg.hidden_dim, cfg.hidden_dim_shared, cfg.noise_std,
             cfg.w_importance, cfg.quirks.moe_routing, cfg.quirks.moe_renormalize, dtype,
             cfg.moe_dispatch, cfg.moe_groups, name=name)


def apply_ffn(ffn, x, deterministic):
  """Run a dense FFN or a MoE; returns (y, aux)."""
  if isinstance(ffn, MoE):
    return ffn(x, deterministic)
  return ffn(x), jnp.zeros((), jnp.float32)


class TwoStageAttention(nn.Module):
  """Pre-LN TSA: temporal attention + FFN per channel, then spatial attention + FFN per step.

  x [B, D, L, d]; time_mask [B*D, L, L] / dim_mask [B*L, D, D] bool (True = may attend) or
  None; spatial_pe [D, d] is added after the temporal stage (first encoder block only).
  Returns (y [B, D, L, d], aux).
  """
  cfg: ModelConfig
  num_experts: int = 0

  @nn.compact
  def __call__(self, x, time_mask=None, dim_mask=None, spatial_pe=None,
               deterministic: bool = True):
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    b, d, l, m = x.shape
    drop = lambda y: HashedDropout(cfg.dropout)(y, deterministic)
    mha = lambda name: MultiHeadAttention(cfg.n_heads, cfg.dropout, dtype, cfg.attention,
                                          name=name)

    # Temporal stage: one sequence of L steps per (sample, channel).
    t_in = shard_batch(x.reshape(b * d, l, m))
    h = LayerNorm(dtype=dtype, name="norm1")(t_in)
    u = t_in + drop(mha("time_attention")(h, h, time_mask, deterministic))
    y1, aux1 = apply_ffn(make_ffn(cfg, self.num_experts, "MLP1"),
                         LayerNorm(dtype=dtype, name="norm2")(u), deterministic)
    u = shard_batch(u + drop(y1))

    # Spatial stage: one sequence of D channels per (sample, time step).
    u = shard_batch(u.reshape(b, d, l, m).transpose(0, 2, 1, 3).reshape(b * l, d, m))
    if spatial_pe is not None:
      u = u + spatial_pe[None].astype(u.dtype)
    h = LayerNorm(dtype=dtype, name="norm3")(u)
    v = u + drop(mha("dim_attention")(h, h, dim_mask, deterministic))
    y2, aux2 = apply_ffn(make_ffn(cfg, self.num_experts, "MLP2"),
                         LayerNorm(dtype=dtype, name="norm4")(v), deterministic)
    v = shard_batch(v + drop(y2))
    return shard_batch(v.reshape(b, l, d, m).transpose(0, 2, 1, 3)), aux1 + aux2


# ModelConfig.remat -> jax.checkpoint policy of each TSA layer ("none": no rematerialisation).
# "block" (the first option) and "nothing_saveable" both save only the layer's inputs.
REMAT_POLICIES = {
    "block": None,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable":
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def ordered_remat_call(layer: nn.Module, run, *args):
  """run(layer, *args) rematerialised like "block" (only the inputs are kept), with the
  recompute held back until the cotangent of the output exists, and the input cotangents
  released only together with the weight gradients.

  Plain remat lets XLA schedule a layer's recompute as early as its inputs allow, and its
  weight-gradient matmuls as late as it likes (keeping the recomputed activations live), so
  on TPU several layers' recomputes were live at once. Here the backward passes the saved
  inputs (the residuals of `nn.vjp` over the rematerialised layer, a pytree) and the incoming
  cotangent through one `lax.optimization_barrier`, and the whole result through another.
  `layer` must share its parent's scope (nn.share_scope) to keep its parameter paths."""
  def forward(mdl, *a):
    return nn.vjp(nn.remat(run), mdl, *a)

  def backward(vjp_fn, g):
    vjp_fn, g = jax.lax.optimization_barrier((vjp_fn, g))
    return jax.lax.optimization_barrier(vjp_fn(g))

  return nn.custom_vjp(run, forward, backward)(layer, *args)


class OrderedRematTSA(nn.Module):
  """TwoStageAttention under `ordered_remat_call`: same numbers and parameter paths; call it
  like TwoStageAttention."""
  cfg: ModelConfig
  num_experts: int = 0

  @nn.compact
  def __call__(self, x, time_mask=None, dim_mask=None, spatial_pe=None,
               deterministic: bool = True):
    layer = TwoStageAttention(self.cfg, self.num_experts)
    nn.share_scope(self, layer)

    def run(mdl, x, time_mask, dim_mask, spatial_pe):
      return mdl(x, time_mask, dim_mask, spatial_pe, deterministic)
    return ordered_remat_call(layer, run, x, time_mask, dim_mask, spatial_pe)


@jax.custom_vjp
def cotangents_together(a, b):
  """Identity on two arrays whose backward releases both cotangents through one
  optimization barrier: whatever consumes either cotangent (with OrderedRematTSA, a layer's
  recompute) waits until both exist. remat "layer_ordered" ties encoder block i's output to
  the map decoder layer i reads, and the decoder's input to encoder map 0, so that no two
  layers' recomputes run at the same time."""
  return a, b


def _together_fwd(a, b):
  return (a, b), None


def _together_bwd(_, g):
  return jax.lax.optimization_barrier(g)


cotangents_together.defvjp(_together_fwd, _together_bwd)


def tsa_class(cfg: ModelConfig):
  """TwoStageAttention, rematerialised per layer with cfg.remat's policy unless "none"
  ("layer_ordered": OrderedRematTSA).

  Call the result positionally: (x, time_mask, dim_mask, spatial_pe, deterministic).
  """
  if cfg.remat == "none":
    return TwoStageAttention
  if cfg.remat == "layer_ordered":
    return OrderedRematTSA
  if cfg.remat not in REMAT_POLICIES:
    raise ValueError(f"remat must be one of {REMAT_OPTIONS}, got {cfg.remat!r}")
  # Args after self: x, time_mask, dim_mask, spatial_pe, deterministic (static).
  return nn.remat(TwoStageAttention, static_argnums=(5,), policy=REMAT_POLICIES[cfg.remat])


def pad_to_multiple(x, win: int):
  """Reference padding: append the last (win - L % win) segments again along axis -2."""
  pad = (-x.shape[-2]) % win
  if pad:
    x = jnp.concatenate([x, x[..., -pad:, :]], axis=-2)
  return x


class SegMerging(nn.Module):
  """[B, D, L, d] -> [B, D, ceil(L/win), d]: concat win neighbours, LayerNorm(win*d), Linear."""
  win: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = pad_to_multiple(x, self.win)
    b, d, l, m = x.shape
    x = x.reshape(b, d, l // self.win, self.win * m)   # segment j = concat(z_{jw} .. z_{jw+w-1})
    x = LayerNorm("merge", self.dtype, name="norm")(x)
    return shard_batch(Dense(m, ("merge", "embed"), self.dtype, name="linear_trans")(x))
