"""Golden-file parity: rebuild the model from a golden `.npz`, run it, compare every tensor.

A golden file (format: ../shared/golden/README.md) holds a reference `config`, the reference
`param/*` state_dict, inputs `in/*`, eval outputs `out/*` and train-mode outputs and gradients
`train/*`. `check_golden(path)` returns one row per compared tensor; `passed(rows)` applies the
tolerances: outputs within 1e-4 absolute, gradients within 1e-3 * max(max|g_ref|, 1e-3 * G)
with G the largest reference gradient magnitude in the model.
"""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

from neuript_jax import convert
from neuript_jax.model import ModelConfig, build_model, gather_masked, masked_mean_abs_error

OUT_TOL = 1e-4
GRAD_REL = 1e-3
AUX_WEIGHT = 0.8


@dataclasses.dataclass
class Row:
  name: str
  max_abs_err: float
  tolerance: float
  note: str = ""

  @property
  def ok(self) -> bool:
    return bool(np.isfinite(self.max_abs_err) and self.max_abs_err <= self.tolerance)


def stage_of(golden) -> int:
  return 1 if "in/mask_0" in golden.files else 2


def load_config(golden) -> ModelConfig:
  return ModelConfig.from_dict(json.loads(str(golden["config"])))


def _err(a, b) -> float:
  """Max |a - b|; inf on a shape mismatch or where only one side is non-finite.

  The reference itself yields NaN in some configs (a MoE with 1 expert: torch's unbiased
  variance of one importance value is NaN in training, which poisons the aux loss and every
  gradient upstream of that MoE). A faithful model reproduces those NaNs, so NaN/inf entries
  must sit at the same positions (with equal values); the rest is compared as usual.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    return float("inf")
  if not a.size:
    return 0.0
  fa, fb = np.isfinite(a), np.isfinite(b)
  if not (np.array_equal(fa, fb) and np.array_equal(np.isnan(a), np.isnan(b))
          and np.array_equal(a[~fa & ~np.isnan(a)], b[~fb & ~np.isnan(b)])):
    return float("inf")
  return float(np.max(np.abs(a[fa] - b[fb]))) if fa.any() else 0.0


def _finite_abs_max(v) -> float:
  v = np.abs(np.asarray(v, np.float64))
  v = v[np.isfinite(v)]
  return float(v.max()) if v.size else 0.0


def task_loss(logits, labels):
  """The golden's train loss: cross-entropy (multi-class) or BCE-with-logits on logit 0."""
  if logits.shape[-1] == 1:
    return optax.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(jnp.float32)).mean()
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def x_batch(golden) -> int:
  return int(golden["in/x"].shape[0])


def check_golden(path: str, params_override=None) -> list[Row]:
  """Compare our model with one golden file; params_override replaces the converted params
  (used by tests to show a perturbed weight is caught)."""
  g = np.load(path)
  cfg = load_config(g)
  stage = stage_of(g)
  state_dict = {k[len("param/"):]: g[k] for k in g.files if k.startswith("param/")}
  params = params_override or convert.from_reference(state_dict, cfg, stage)
  params = jax.tree_util.tree_map(jnp.asarray, params)
  rows: list[Row] = []

  # The PE buffers the reference actually uses (block 0's, and stage 1's decoder input) must
  # agree with the ones we rebuild from geometry: this catches a montage or length mismatch.
  rebuilt = convert.pe_buffers(cfg, stage, stage1_batch_size=x_batch(g))
  used = [n for n in rebuilt if n.startswith("encoder.encode_blocks.0.") or n == "dec_in"]
  for name in used:
    if name in state_dict:
      rows.append(Row(f"buffer/{name}", _err(rebuilt[name], state_dict[name]), OUT_TOL))

  eval_cfg = cfg
  train_cfg = cfg.replace(noise_std=0.0, dropout=0.0)
  x = jnp.asarray(g["in/x"])
  if stage == 2:
    logits, _, enc_out = jax.jit(build_model(eval_cfg, 2).apply, static_argnums=(2, 3))(
        {"params": params}, x, True, True)
    rows.append(Row("out/logits", _err(logits, g["out/logits"]), OUT_TOL))
    for i, fmap in enumerate(enc_out):
      key = f"out/enc_out_{i}"
      if key in g.files:
        rows.append(Row(key, _err(fmap, g[key]), OUT_TOL))
    labels = jnp.asarray(g["in/labels"])
    model = build_model(train_cfg, 2)

    def loss_fn(p):
      lg, aux = model.apply({"params": p}, x, False)
      tl = task_loss(lg, labels)
      return tl + AUX_WEIGHT * aux, (lg, aux, tl)
  else:
    masks = [jnp.asarray(g[f"in/mask_{i}"]) for i in range(len(cfg.merge_layers))]
    pred, _ = jax.jit(build_model(eval_cfg, 1).apply, static_argnums=(4,))(
        {"params": params}, x, masks, masks, True)
    rows.append(Row("out/pred", _err(gather_masked(pred, masks[0], cfg.seg_len),
                                     g["out/pred"]), OUT_TOL))
    model = build_model(train_cfg, 1)

    def loss_fn(p):
      pr, aux = model.apply({"params": p}, x, masks, masks, False)
      rec = masked_mean_abs_error(pr, x, masks[0], cfg.seg_len)
      return rec + AUX_WEIGHT * aux, (pr, aux, rec)

  (loss, (out, aux, part)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  if stage == 2:
    rows.append(Row("train/logits", _err(out, g["train/logits"]), OUT_TOL))
    rows.append(Row("train/task_loss", _err(part, g["train/task_loss"]), OUT_TOL))
  else:
    rows.append(Row("train/pred", _err(gather_masked(out, masks[0], cfg.seg_len),
                                       g["train/pred"]), OUT_TOL))
    rows.append(Row("train/rec_loss", _err(part, g["train/rec_loss"]), OUT_TOL))
  rows.append(Row("train/aux", _err(aux, g["train/aux"]), OUT_TOL))
  rows.append(Row("train/loss", _err(loss, g["train/loss"]), OUT_TOL))

  ours = convert.to_reference(jax.device_get(grads), cfg, stage, with_buffers=False)
  ref_grads = {k[len("train/grad/"):]: g[k] for k in g.files if k.startswith("train/grad/")}
  big_g = max((_finite_abs_max(v) for v in ref_grads.values()), default=0.0)
  for name, ref in sorted(ref_grads.items()):
    if name not in ours:
      rows.append(Row(f"grad/{name}", float("inf"), 0.0, "no such parameter in the model"))
      continue
    tol = GRAD_REL * max(_finite_abs_max(ref), 1e-3 * big_g)
    rows.append(Row(f"grad/{name}", _err(ours[name], ref), tol))
  missing = sorted(set(ours) - set(ref_grads))
  for name in missing:
    rows.append(Row(f"grad/{name}", float("inf"), 0.0, "gradient missing from the golden file"))
  return rows


def passed(rows) -> bool:
  return all(r.ok for r in rows)


def format_table(rows, only_failures: bool = False) -> str:
  width = max((len(r.name) for r in rows), default=10)
  lines = [f"{'tensor':<{width}}  {'max|err|':>10}  {'tolerance':>10}  ok"]
  for r in rows:
    if only_failures and r.ok:
      continue
    lines.append(f"{r.name:<{width}}  {r.max_abs_err:10.3e}  {r.tolerance:10.3e}  "
                 f"{'yes' if r.ok else 'NO'}{'  ' + r.note if r.note else ''}")
  return "\n".join(lines)
