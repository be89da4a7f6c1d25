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
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from neuript_jax.model.layers import Dense, SwiGLU, swiglu_gate, torch_linear_bias_init, \
  torch_linear_kernel_init


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
  """E SwiGLU experts with stacked weights: x [E, C, d] -> [E, C, d]; or, with
  `group_sizes` [E], rows x [M, d] sorted by expert (group e = the next group_sizes[e] rows)
  -> [M, d] through jax.lax.ragged_dot."""
  num_experts: int
  hidden: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, group_sizes=None):
    e, h, d = self.num_experts, self.hidden, x.shape[-1]
    part = nn.with_logical_partitioning
    wi = self.param("wi_kernel", part(torch_linear_kernel_init, ("expert", "embed", "mlp")),
                    (e, d, 2 * h))
    bi = self.param("wi_bias", part(torch_linear_bias_init(d), ("expert", "mlp")), (e, 2 * h))
    wo = self.param("wo_kernel", part(torch_linear_kernel_init, ("expert", "mlp", "embed")),
                    (e, h, d))
    bo = self.param("wo_bias", part(torch_linear_bias_init(h), ("expert", "embed")), (e, d))
    dt = self.dtype
    if group_sizes is not None:
      row_expert = jnp.repeat(jnp.arange(e), group_sizes, total_repeat_length=x.shape[0])
      hid = jax.lax.ragged_dot(x.astype(dt), wi.astype(dt), group_sizes) + bi.astype(dt)[
          row_expert]
      return (jax.lax.ragged_dot(swiglu_gate(hid), wo.astype(dt), group_sizes)
              + bo.astype(dt)[row_expert])
    hid = jnp.einsum("ecd,edf->ecf", x.astype(dt), wi.astype(dt)) + bi[:, None, :].astype(dt)
    return jnp.einsum("ech,ehd->ecd", swiglu_gate(hid), wo.astype(dt)) + bo[:, None, :].astype(dt)


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

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    n, e = x.shape[0], self.num_experts
    k = math.ceil(e * self.top_k)
    shared = SwiGLU(self.hidden_shared, self.dtype, name="shared_expert")(x)

    logits = Dense(e, ("embed", "expert"), jnp.float32, name="gate")(x.astype(jnp.float32))
    if not deterministic and self.noise_std > 0:
      logits = logits + self.noise_std * jax.random.normal(self.make_rng("gate_noise"),
                                                           logits.shape)
    probs = jax.nn.softmax(logits, axis=-1)
    top_p, top_i = jax.lax.top_k(probs, k)                       # [N, k]
    if self.renormalize:
      top_p = top_p / top_p.sum(-1, keepdims=True)
    onehot = jax.nn.one_hot(top_i, e, dtype=jnp.float32)        # [N, k, E]
    selected = onehot.sum(1) > 0                                 # [N, E]
    weight = jnp.einsum("nk,nke->ne", top_p, onehot)             # [N, E]

    aux = (jnp.zeros((), jnp.float32) if deterministic
           else importance_and_balance_loss(probs, selected, self.w_importance))

    if self.routing == "dropless" and resolve_moe_dispatch(self.dispatch) == "ragged":
      self.sow("intermediates", "routing", {"top_i": top_i, "top_p": top_p, "kept": selected,
                                            "probs": probs})
      routed = ragged_dispatch(StackedExperts(e, self.hidden, self.dtype, name="experts"), x,
                               top_i, top_p)
      y = shared + routed.astype(shared.dtype)
      return y.reshape(shape[:-1] + (y.shape[-1],)), aux

    capacity = n // e if self.routing == "capacity" else n
    position = jnp.cumsum(selected, axis=0) - 1                  # rank among the expert's tokens
    kept = selected & (position < capacity)
    self.sow("intermediates", "routing", {"top_i": top_i, "top_p": top_p, "kept": kept,
                                          "probs": probs})
    # slot_token[e, c]: the token in expert e's slot c (n = empty slot, points at a zero row).
    tokens = jnp.broadcast_to(jnp.arange(n)[:, None], (n, e))
    experts = jnp.broadcast_to(jnp.arange(e)[None, :], (n, e))
    slot = jnp.where(kept, position, capacity)
    slot_token = jnp.full((e, capacity), n, jnp.int32).at[experts, slot].set(
        tokens.astype(jnp.int32), mode="drop")
    x_pad = jnp.concatenate([x, jnp.zeros((1, x.shape[1]), x.dtype)])
    w_pad = jnp.concatenate([weight * kept, jnp.zeros((1, e), weight.dtype)])
    slot_weight = w_pad[slot_token, jnp.arange(e)[:, None]]     # [E, C]
    out = StackedExperts(e, self.hidden, self.dtype, name="experts")(x_pad[slot_token])
    out = out * slot_weight[..., None].astype(out.dtype)
    routed = jnp.zeros((n + 1, x.shape[1]), out.dtype).at[slot_token.reshape(-1)].add(
        out.reshape(-1, x.shape[1]))[:n]
    y = shared + routed.astype(shared.dtype)
    return y.reshape(shape[:-1] + (y.shape[-1],)), aux


def ragged_dispatch(experts: StackedExperts, x, top_i, top_p):
  """Dropless routed output [N, d] for x [N, d] and the top-k choice top_i/top_p [N, k]: the
  (token, expert) pairs sorted by expert, ragged matmuls, weighted scatter-add to the tokens."""
  n, k = top_i.shape
  pair_expert = top_i.reshape(-1)
  order = jnp.argsort(pair_expert, stable=True)                # [N * k], grouped by expert
  token = order // k
  group_sizes = jnp.zeros((experts.num_experts,), jnp.int32).at[pair_expert].add(1)
  out = experts(x[token], group_sizes)
  out = out * top_p.reshape(-1)[order][:, None].astype(out.dtype)
  return jnp.zeros((n, x.shape[1]), out.dtype).at[token].add(out)
