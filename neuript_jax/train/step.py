"""The jitted stage-1 train and eval steps.

State is a plain dict pytree: {"params", "opt_state", "step" (int32), "rng" (uint32 key data)}.
Every random choice of step s (AAMP masks, corruption, dropout, router noise) comes from
fold_in(rng, s), so a run resumed from a checkpoint repeats exactly what an uninterrupted run
does. A step whose loss or gradient norm is not finite leaves params and optimizer state
unchanged (metrics["finite"] = 0); the loop then skips or stops, as configured.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from neuript_jax import masking
from neuript_jax.model import ModelConfig, Stage1Model


def reconstruction_loss(pred, x, point_mask, p: float = 1.0):
  """mean over masked points of |pred - x|^p; pred, x [B, T, D], point_mask [B, D, T] bool."""
  m = point_mask.transpose(0, 2, 1).astype(jnp.float32)
  err = jnp.abs(pred.astype(jnp.float32) - x.astype(jnp.float32)) ** p
  return jnp.sum(err * m) / jnp.maximum(jnp.sum(m), 1.0)


def make_loss_fn(model_cfg: ModelConfig, masking_cfg, p: float, aux_weight: float):
  model = Stage1Model(model_cfg)
  lengths, merges = model_cfg.block_lengths(), model_cfg.merge_layers

  def loss_fn(params, x, key, deterministic: bool):
    k_mask, k_drop, k_noise = jax.random.split(key, 3)
    point, blocks, x_in = masking.make_masks(k_mask, x, masking_cfg, lengths, merges)
    pred, aux = model.apply({"params": params}, x_in, blocks, blocks, deterministic,
                            rngs={"dropout": k_drop, "gate_noise": k_noise})
    rec = reconstruction_loss(pred, x, point, p)
    return rec + aux_weight * aux, (rec, aux, pred, point)

  return loss_fn


def make_train_step(model_cfg: ModelConfig, masking_cfg, tx, schedule, p: float = 1.0,
                    aux_weight: float = 0.8):
  loss_fn = make_loss_fn(model_cfg, masking_cfg, p, aux_weight)

  def train_step(state, batch):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    grad_fn = jax.value_and_grad(lambda prm: loss_fn(prm, batch["x"], key, False), has_aux=True)
    (loss, (rec, aux, _, _)), grads = grad_fn(state["params"])
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = {"params": keep(params, state["params"]),
                 "opt_state": keep(opt_state, state["opt_state"]),
                 "step": state["step"] + 1, "rng": state["rng"]}
    metrics = {"loss": loss, "rec_loss": rec, "aux_loss": aux, "grad_norm": grad_norm,
               "lr": schedule(state["step"]), "finite": finite.astype(jnp.int32)}
    return new_state, metrics

  return train_step


def _with(config, **fields):
  """A copy of an ml_collections ConfigDict with some fields changed."""
  out = config.copy_and_resolve_references()
  for k, v in fields.items():
    setattr(out, k, v)
  return out


def make_eval_step(model_cfg: ModelConfig, masking_cfg, p: float = 1.0):
  """eval_step(params, batch, key) -> {"rec_loss_aamp", "rec_loss_random"} (no dropout/noise)."""
  aamp = make_loss_fn(model_cfg, _with(masking_cfg, mode="aamp", corrupt=False), p, 0.0)
  rand = make_loss_fn(model_cfg, _with(masking_cfg, mode="random", corrupt=False), p, 0.0)

  def eval_step(params, batch, key):
    """-> ({"rec_loss_aamp", "rec_loss_random"}, (pred [B, T, D], AAMP point mask [B, D, T]))."""
    _, (rec_a, _, pred, point) = aamp(params, batch["x"], key, True)
    rec_r = rand(params, batch["x"], key, True)[1][0]
    return {"rec_loss_aamp": rec_a, "rec_loss_random": rec_r}, (pred, point)

  return eval_step
