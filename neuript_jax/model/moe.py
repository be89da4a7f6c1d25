"""PMoE: a shared SwiGLU expert plus top-k routed SwiGLU experts (REFERENCE.md §2.3).

Tokens are the rows of the input flattened to [N, d] in the caller's row order (that order
decides which tokens an expert keeps at its capacity). Dispatch and combine are vectorised:
every expert's kept tokens are gathered into an [E, C, d] buffer, the experts run as one
batched matmul, and the outputs are scatter-added back, weighted by the router probability.

Routing modes (Quirks.moe_routing):
  "capacity": the reference. Capacity C = floor(N / E); each expert keeps the first C tokens
    routed to it in token order and the rest add 0 (in eval too).
  "dropless": every routed token is processed, by one of two dispatches (ModelConfig.moe_dispatch):
    "buffer": the [E, C, d] path above with C = N (E * N rows of expert compute);
    "ragged": the N * k (token, expert) pairs sorted by expert, one jax.lax.ragged_dot per
      expert matmul (grouped GEMM), outputs scattered back (N * k rows on GPU/TPU; XLA CPU
      emulates ragged_dot densely, E * N * k rows, so "buffer" is faster there);
    "auto": "ragged" on accelerators, "buffer" on CPU.

Routing groups (ModelConfig.moe_groups): the b-major tokens are split into G equal groups and
each group is routed on its own (its own capacity floor(N / (G E)) and its own aux loss; the
aux loss is the groups' mean), as each data-parallel replica of the reference's DDP run routes
its own batch. G = moe_groups when > 0 (the same numbers on every mesh; each device routes its
own groups when G is a multiple of the mesh's batch shards), else one group per batch shard of
the mesh being compiled for (loop.traced_under; 1 without a mesh), so the numbers of capacity
routing and of the aux loss depend on the number of batch shards.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from neuript_jax.model.layers import Dense, SwiGLU, swiglu_gate, torch_linear_bias_init, \
  torch_linear_kernel_init
from neuript_jax.model.mesh_axes import batch_axes, batch_shards, context_mesh, shard_batch


MOE_DISPATCHES = ("auto", "buffer", "ragged")


def resolve_moe_dispatch(dispatch: str, platform: str | None = None) -> str:
  """"auto" -> "ragged" on accelerators, "buffer" on CPU; others pass through. platform None
  means the default backend (see ModelConfig.for_platform)."""
  if dispatch not in MOE_DISPATCHES:
    raise ValueError(f"moe_dispatch must be one of {MOE_DISPATCHES}, got {dispatch!r}")
  if dispatch == "auto":
    return "buffer" if (platform or jax.default_backend()) == "cpu" else "ragged"
  return dispatch


class StackedExperts(nn.Module):
  """E SwiGLU experts with stacked weights [E, d, 2h], [E, h, d] (+ biases).

  __call__(x [..., E, C, d]) -> [..., E, C, d] (each expert on its slots); or, with
  `group_sizes` [E], rows x [M, d] sorted by expert (group e = the next group_sizes[e] rows)
  -> [M, d] through jax.lax.ragged_dot. `weights()` returns the (cast) arrays for pure code.
  """
  num_experts: int
  hidden: int
  features: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    e, h, d = self.num_experts, self.hidden, self.features
    part = nn.with_logical_partitioning
    self.wi = self.param("wi_kernel", part(torch_linear_kernel_init, ("expert", "embed", "mlp")),
                         (e, d, 2 * h))
    self.bi = self.param("wi_bias", part(torch_linear_bias_init(d), ("expert", "mlp")),
                         (e, 2 * h))
    self.wo = self.param("wo_kernel", part(torch_linear_kernel_init, ("expert", "mlp", "embed")),
                         (e, h, d))
    self.bo = self.param("wo_bias", part(torch_linear_bias_init(h), ("expert", "embed")), (e, d))

  def weights(self):
    return tuple(w.astype(self.dtype) for w in (self.wi, self.bi, self.wo, self.bo))

  def __call__(self, x, group_sizes=None):
    if group_sizes is not None:
      return ragged_experts(x, group_sizes, self.weights())
    return slot_experts(x, self.weights())


def slot_experts(x, weights):
  """x [..., E, C, d] -> [..., E, C, d]: expert e's SwiGLU on its C slots."""
  wi, bi, wo, bo = weights
  x = x.astype(wi.dtype)
  hid = jnp.einsum("...ecd,edf->...ecf", x, wi) + bi[:, None, :]
  return jnp.einsum("...ech,ehd->...ecd", swiglu_gate(hid), wo) + bo[:, None, :]


def ragged_experts(x, group_sizes, weights):
  """Rows x [M, d] sorted by expert, group_sizes [E] -> [M, d] (jax.lax.ragged_dot)."""
  wi, bi, wo, bo = weights
  row_expert = jnp.repeat(jnp.arange(wi.shape[0]), group_sizes, total_repeat_length=x.shape[0])
  hid = jax.lax.ragged_dot(x.astype(wi.dtype), wi, group_sizes) + bi[row_expert]
  return jax.lax.ragged_dot(swiglu_gate(hid), wo, group_sizes) + bo[row_expert]


def importance_and_balance_loss(probs, selected, w_importance):
  """Reference aux loss for router probabilities [N, E] and the top-k selection [N, E] bool.

  importance = sum_n p; L_imp = w * Var_unbiased(importance) / (mean^2 + 1e-8);
  L_bal = E * sum_e mean_n(r) * sum_n(r) / N^2 with r = p * selected.
  """
  n, e = probs.shape
  importance = probs.sum(0)
  l_imp = w_importance * jnp.var(importance, ddof=1) / (importance.mean() ** 2 + 1e-8)
  routed = probs * selected
  l_bal = e * jnp.sum(routed.mean(0) * routed.sum(0)) / (float(n) ** 2)  # n² may pass 2^31
  return l_imp + l_bal


class MoE(nn.Module):
  """x [..., d] -> (y [..., d], aux scalar). aux is 0 when deterministic (eval)."""
  num_experts: int
  top_k: float
  hidden: int
  hidden_shared: int
  noise_std: float = 0.0
  w_importance: float = 0.008
  routing: str = "capacity"
  renormalize: bool = False
  dtype: jnp.dtype = jnp.float32
  dispatch: str = "auto"          # dropless only: "auto" | "buffer" | "ragged"
  groups: int = 0                 # routing groups; 0: one per batch shard of the context mesh

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    shape = x.shape
    x = shard_batch(x.reshape(-1, shape[-1]))
    n, e = x.shape[0], self.num_experts
    k = math.ceil(e * self.top_k)
    shared = SwiGLU(self.hidden_shared, self.dtype, name="shared_expert")(x)

    logits = Dense(e, ("embed", "expert"), jnp.float32, name="gate")(x.astype(jnp.float32))
    if not deterministic and self.noise_std > 0:
      logits = logits + self.noise_std * jax.random.normal(self.make_rng("gate_noise"),
                                                           logits.shape)
    probs = jax.nn.softmax(logits, axis=-1)
    top_p, top_i = small_top_k(probs, k)                         # [N, k]
    if self.renormalize:
      top_p = top_p / top_p.sum(-1, keepdims=True)
    onehot = jax.nn.one_hot(top_i, e, dtype=jnp.float32)        # [N, k, E]
    selected = onehot.sum(1) > 0                                 # [N, E]
    weight = jnp.einsum("nk,nke->ne", top_p, onehot)             # [N, E]

    # Routing groups (module docstring): `groups`, else one per batch shard of the mesh. Tokens
    # are b-major, so group j is windows [j B/G, (j+1) B/G) and, when G is a multiple of the
    # batch shards, everything below stays on the device that holds them.
    g = self.groups or batch_shards(n)
    if n % g:
      raise ValueError(f"moe_groups {g} does not divide the {n} tokens of this PMoE input "
                       f"{shape}: the batch of windows must be a multiple of moe_groups")
    ng = n // g
    grouped = lambda a: shard_batch(a.reshape((g, ng) + a.shape[1:]))
    aux = (jnp.zeros((), jnp.float32) if deterministic
           else jax.vmap(lambda p, s: importance_and_balance_loss(p, s, self.w_importance))(
               grouped(probs), grouped(selected)).mean())
    experts = StackedExperts(e, self.hidden, x.shape[-1], self.dtype, name="experts")

    if self.routing == "dropless" and resolve_moe_dispatch(self.dispatch) == "ragged":
      self.sow("intermediates", "routing", {"top_i": top_i, "top_p": top_p, "kept": selected,
                                            "probs": probs})
      routed = sharded_ragged_dispatch(x, top_i, top_p, experts.weights())
      y = shared + routed.astype(shared.dtype)
      return y.reshape(shape[:-1] + (y.shape[-1],)), aux

    capacity = ng // e if self.routing == "capacity" else ng
    position = jnp.cumsum(grouped(selected), axis=1) - 1        # rank among the group's tokens
    kept = grouped(selected) & (position < capacity)
    self.sow("intermediates", "routing", {"top_i": top_i, "top_p": top_p,
                                          "kept": kept.reshape(n, e), "probs": probs})
    slot_token, slot_weight = jax.vmap(lambda k, p, w: assign_slots(k, p, w, capacity))(
        kept, position, grouped(weight))                        # [G, E, C]
    x_pad = jnp.concatenate([grouped(x), jnp.zeros((g, 1, x.shape[1]), x.dtype)], axis=1)
    buf = shard_batch(jax.vmap(lambda xp, st: xp[st])(x_pad, slot_token))   # [G, E, C, d]
    out = shard_batch(slot_experts(buf, experts.weights())
                      * slot_weight[..., None].astype(self.dtype))
    routed = jax.vmap(lambda o, st: jnp.zeros((ng + 1, o.shape[-1]), o.dtype).at[
        st.reshape(-1)].add(o.reshape(-1, o.shape[-1]))[:ng])(out, slot_token)
    y = shard_batch(shared + routed.reshape(n, -1).astype(shared.dtype))
    return y.reshape(shape[:-1] + (y.shape[-1],)), aux


def small_top_k(probs, k: int):
  """jax.lax.top_k over the last axis for a few experts, as k argmax passes: the same values
  and indices (ties: lower index first), in elementwise ops and reductions that the SPMD
  partitioner keeps on each token shard (its TopK gathers the token axis)."""
  vals, idxs, rest = [], [], probs
  for _ in range(k):
    i = jnp.argmax(rest, axis=-1)
    vals.append(jnp.take_along_axis(probs, i[..., None], axis=-1)[..., 0])
    idxs.append(i.astype(jnp.int32))
    rest = jnp.where(jax.nn.one_hot(i, probs.shape[-1], dtype=jnp.bool_), -jnp.inf, rest)
  return jnp.stack(vals, -1), jnp.stack(idxs, -1)


def assign_slots(kept, position, weight, capacity: int):
  """One group: kept [n, E] bool, position [n, E] (rank among the expert's tokens), weight
  [n, E] -> (slot_token [E, C] int32, the token in each slot (n = empty: a zero row), and
  slot_weight [E, C], its router weight (0 for empty slots))."""
  n, e = kept.shape
  tokens = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], (n, e))
  experts = jnp.broadcast_to(jnp.arange(e)[None, :], (n, e))
  slot = jnp.where(kept, position, capacity)
  slot_token = jnp.full((e, capacity), n, jnp.int32).at[experts, slot].set(tokens, mode="drop")
  w_pad = jnp.concatenate([weight * kept, jnp.zeros((1, e), weight.dtype)])
  return slot_token, w_pad[slot_token, jnp.arange(e)[:, None]]


def sharded_ragged_dispatch(x, top_i, top_p, weights):
  """ragged_dispatch on each batch shard's own tokens (a shard_map over the context mesh's
  batch axes: ragged_dot and the sort are opaque to the SPMD partitioner); one call without a
  mesh. Dropless routing is per token, so the result does not depend on the sharding."""
  axes = batch_axes(x.shape[0])
  if not axes:
    return ragged_dispatch(x, top_i, top_p, weights)
  from jax.sharding import PartitionSpec as P
  rows = P(axes)
  return jax.shard_map(ragged_dispatch, mesh=context_mesh(), in_specs=(rows, rows, rows, P()),
                       out_specs=rows, check_vma=False)(x, top_i, top_p, weights)


def ragged_dispatch(x, top_i, top_p, weights):
  """Dropless routed output [N, d] for x [N, d], the top-k choice top_i/top_p [N, k] and the
  experts' weights: the (token, expert) pairs sorted by expert, ragged matmuls, weighted
  scatter-add to the tokens."""
  n, k = top_i.shape
  pair_expert = top_i.reshape(-1)
  order = jnp.argsort(pair_expert, stable=True)                # [N * k], grouped by expert
  token = order // k
  group_sizes = jnp.zeros((weights[0].shape[0],), jnp.int32).at[pair_expert].add(1)
  out = ragged_experts(x[token], group_sizes, weights)
  out = out * top_p.reshape(-1)[order][:, None].astype(out.dtype)
  return jnp.zeros((n, x.shape[1]), out.dtype).at[token].add(out)
