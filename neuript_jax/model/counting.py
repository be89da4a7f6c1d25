"""Parameter counts: total, and activated (only k = ceil(E * top_k) routed experts per MoE)."""

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
