"""Parameter counts (total, and activated: only k = ceil(E * top_k) routed experts per MoE) and
analytic forward/train FLOPs (`forward_flops`, `train_flops`)."""

from __future__ import annotations

import math

import flax
import jax

from neuript_jax.model.config import ModelConfig


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def activated_params(params, cfg: ModelConfig) -> int:
  """Parameters a token passes through: stacked routed experts count k of their E slices."""
  total = 0
  for path, leaf in flax.traverse_util.flatten_dict(params).items():
    if "experts" in path:
      e = leaf.shape[0]
      total += leaf.size // e * math.ceil(e * cfg.top_k)
    else:
      total += leaf.size
  return int(total)


def param_report(params, cfg: ModelConfig) -> dict[str, int]:
  """{'total', 'activated', and per top-level module totals}."""
  report = {"total": count_params(params), "activated": activated_params(params, cfg)}
  for name, sub in params.items():
    report[f"total/{name}"] = count_params(sub)
  return report


# -- analytic FLOPs ---------------------------------------------------------------------------
#
# Convention: matrix multiplications only, 2 FLOPs per multiply-add (so a [m, k] x [k, n]
# product is 2mkn). Elementwise work (LayerNorm, softmax, SiLU, residual adds, biases), the
# MoE's gathers/scatters and the IILP time means are not counted: they are memory-bound and
# below ~10% of the matmuls at d_model >= 32 (tests/test_bench.py checks the total against
# XLA's cost analysis, which counts them too). A training step is 3x the forward (backward =
# 2x forward); rematerialisation's recomputed forward is not counted (model FLOPs, as in the
# usual MFU definition).
#
# Routed experts count the token slots they compute: with capacity routing (the reference)
# each of the E experts runs C = floor(N / E) slots (empty slots included, since the buffers
# have a fixed shape), i.e. E * C ~= N tokens per MoE; with dropless routing the activated
# tokens N * k (k = ceil(E * top_k)), what the "ragged" dispatch computes (the "buffer"
# dispatch computes E * N slots; the count stays N * k). The router (d -> E) and the shared
# expert count for every token.


def _dense(tokens: int, fan_in: int, fan_out: int) -> int:
  return 2 * tokens * fan_in * fan_out


def swiglu_flops(tokens: int, d: int, hidden: int) -> int:
  """Linear(d -> 2h) then Linear(h -> d)."""
  return _dense(tokens, d, 2 * hidden) + _dense(tokens, hidden, d)


def attention_flops(sequences: int, len_q: int, len_k: int, d: int) -> int:
  """q/k/v/out projections plus QK^T and PV (summed over heads: 2 * Lq * Lk * d each)."""
  proj = _dense(sequences * len_q, d, d) * 2 + _dense(sequences * len_k, d, d) * 2
  return proj + sequences * 2 * (2 * len_q * len_k * d)


def ffn_flops(cfg: ModelConfig, tokens: int, num_experts: int) -> int:
  """Dense SwiGLU (num_experts == 0) or PMoE: shared expert + router + routed token slots."""
  d = cfg.d_model
  if num_experts == 0:
    return swiglu_flops(tokens, d, cfg.d_ff)
  if cfg.quirks.moe_routing == "capacity":
    slots = num_experts * (tokens // num_experts)
  else:
    slots = tokens * math.ceil(num_experts * cfg.top_k)
  return (swiglu_flops(tokens, d, cfg.hidden_dim_shared) + _dense(tokens, d, num_experts)
          + swiglu_flops(slots, d, cfg.hidden_dim))


def tsa_flops(cfg: ModelConfig, batch: int, length: int, num_experts: int) -> int:
  """One TwoStageAttention layer on [B, D, L, d]: temporal attention + FFN, spatial + FFN."""
  d, ch = cfg.d_model, cfg.data_dim
  tokens = batch * ch * length
  return (attention_flops(batch * ch, length, length, d) + ffn_flops(cfg, tokens, num_experts)
          + attention_flops(batch * length, ch, ch, d) + ffn_flops(cfg, tokens, num_experts))


def encoder_flops(cfg: ModelConfig, batch: int) -> int:
  """Point embedding + every encoder block (SegMerging Linear(win*d -> d) + TSA)."""
  d, ch = cfg.d_model, cfg.data_dim
  total = _dense(batch * ch * cfg.n_tokens_time, cfg.seg_len, d)
  for win, experts, length in zip(cfg.merge_layers, cfg.enc_expert, cfg.block_lengths()):
    if win > 1:
      total += _dense(batch * ch * length, win * d, d)
    total += tsa_flops(cfg, batch, length, experts)
  return total


def forward_flops(cfg: ModelConfig, batch: int, stage: int) -> int:
  """Analytic matmul FLOPs of one forward pass at `batch` windows (see the convention above).

  stage 2: embedding + encoder + IILP head (channel-group pooling and the final Linear).
  stage 1: embedding + encoder + the 7 decoder layers (TSA self-attention on [B, D, L0, d],
  cross-attention to encoder map i, FFN, per-point Linear(d -> seg_len)).
  """
  d, ch, l0 = cfg.d_model, cfg.data_dim, cfg.n_tokens_time
  total = encoder_flops(cfg, batch)
  if stage == 2:
    groups = len(cfg.iilp_groups())
    maps = cfg.c_layers + 1
    total += maps * 2 * batch * groups * ch * d
    total += _dense(batch, maps * groups * d, cfg.n_logits())
    return int(total)
  if stage != 1:
    raise ValueError(f"stage must be 1 or 2, got {stage}")
  if cfg.quirks.decoder_input == "pe_plus_signal":
    total += _dense(batch * ch * l0, cfg.seg_len, d)
  cross_lengths = [l0] + cfg.block_lengths()
  for de, ce, lc in zip(cfg.dec_expert, cfg.cross_expert, cross_lengths):
    total += tsa_flops(cfg, batch, l0, de)
    total += attention_flops(batch * ch, l0, lc, d)
    total += ffn_flops(cfg, batch * ch * l0, ce)
    total += _dense(batch * ch * l0, d, cfg.seg_len)
  return int(total)


def train_flops(cfg: ModelConfig, batch: int, stage: int) -> int:
  """3x forward_flops (forward + backward)."""
  return 3 * forward_flops(cfg, batch, stage)
