"""The jitted train steps of both stages, their eval steps, and the one guarded update.

State: {"params", "opt_state", "step" (int32), "rng" (uint32 key data)} (train/loop.py).
Every random choice of step s (AAMP masks, corruption, dropout, router noise) comes from
`step_keys(state["rng"], s)`, so a run resumed from a checkpoint repeats exactly what an
uninterrupted run does. A step whose loss or gradient norm is not finite leaves params and
optimizer state unchanged (metrics["finite"] = 0); the loop then skips or stops, as configured.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from neuript_jax import masking
from neuript_jax.model import ModelConfig, Stage1Model, Stage2Model, masked_mean_abs_error

HEAD_KEY = "classification_head"   # the stage-2 head's params (new at fine-tuning)


def step_keys(rng_data, step, n: int = 3):
  """The n keys of train step `step`: split(fold_in(rng, step), n). Stage 1 uses
  (masks, dropout, router noise); stage 2 (dropout, router noise) with n=2."""
  key = jax.random.fold_in(jax.random.wrap_key_data(rng_data), step)
  return tuple(jax.random.split(key, n))


def guarded_update(state, grads, loss, tx, update_mask=None):
  """(new state, grad norm, finite): the optimizer update, applied only if the loss and the
  gradient norm are finite. update_mask(tree) -> tree zeroes the updates of frozen params."""
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  if update_mask is not None:
    updates = update_mask(updates)
  params = optax.apply_updates(state["params"], updates)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
  return ({"params": keep(params, state["params"]),
           "opt_state": keep(opt_state, state["opt_state"]),
           "step": state["step"] + 1, "rng": state["rng"]}, grad_norm, finite)


# -- stage 1: AAMP pretraining -------------------------------------------------------------------

def make_pretrain_loss(model_cfg: ModelConfig, masking_cfg, p: float, aux_weight: float):
  """loss_fn(params, x [B, T, D], keys (mask, dropout, noise), deterministic) ->
  (rec + aux_weight * aux, (rec, aux, pred [B, T, D], point mask [B, D, T]))."""
  model = Stage1Model(model_cfg)
  lengths, merges = model_cfg.block_lengths(), model_cfg.merge_layers

  def loss_fn(params, x, keys, deterministic: bool):
    k_mask, k_drop, k_noise = keys
    point, blocks, x_in = masking.make_masks(k_mask, x, masking_cfg, lengths, merges,
                                             seg_len=model_cfg.seg_len)
    pred, aux = model.apply({"params": params}, x_in, blocks, blocks, deterministic,
                            rngs={"dropout": k_drop, "gate_noise": k_noise})
    rec = masked_mean_abs_error(pred, x, blocks[0], model_cfg.seg_len, p)
    return rec + aux_weight * aux, (rec, aux, pred, point)

  return loss_fn


def make_pretrain_step(model_cfg: ModelConfig, masking_cfg, tx, schedule, p: float = 1.0,
                       aux_weight: float = 0.8):
  """train_step(state, {"x" [B, T, D]}) -> (state, metrics)."""
  loss_fn = make_pretrain_loss(model_cfg, masking_cfg, p, aux_weight)

  def train_step(state, batch):
    keys = step_keys(state["rng"], state["step"])
    grad_fn = jax.value_and_grad(lambda prm: loss_fn(prm, batch["x"], keys, False), has_aux=True)
    (loss, (rec, aux, _, _)), grads = grad_fn(state["params"])
    new_state, grad_norm, finite = guarded_update(state, grads, loss, tx)
    return new_state, {"loss": loss, "rec_loss": rec, "aux_loss": aux, "grad_norm": grad_norm,
                       "lr": schedule(state["step"]), "finite": finite.astype(jnp.int32)}

  return train_step


def _with(config, **fields):
  """A copy of an ml_collections ConfigDict with some fields changed."""
  out = config.copy_and_resolve_references()
  for k, v in fields.items():
    setattr(out, k, v)
  return out


def make_pretrain_eval_step(model_cfg: ModelConfig, masking_cfg, p: float = 1.0):
  """eval_step(params, batch, key) -> ({"rec_loss_aamp", "rec_loss_random"},
  (pred [B, T, D], AAMP point mask [B, D, T])); no dropout, no router noise, no corruption."""
  aamp = make_pretrain_loss(model_cfg, _with(masking_cfg, mode="aamp", corrupt=False), p, 0.0)
  rand = make_pretrain_loss(model_cfg, _with(masking_cfg, mode="random", corrupt=False), p, 0.0)

  def eval_step(params, batch, key):
    keys = tuple(jax.random.split(key, 3))
    _, (rec_a, _, pred, point) = aamp(params, batch["x"], keys, True)
    rec_r = rand(params, batch["x"], keys, True)[1][0]
    return {"rec_loss_aamp": rec_a, "rec_loss_random": rec_r}, (pred, point)

  return eval_step


# -- stage 2: fine-tuning -----------------------------------------------------------------------

def is_head(path) -> bool:
  return getattr(path[0], "key", None) == HEAD_KEY


def class_of(logits):
  """Predicted class [B] int32 from logits [B, n_logits] (one logit: logit > 0)."""
  if logits.shape[-1] == 1:
    return (logits[:, 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits, -1).astype(jnp.int32)


def make_finetune_step(model_cfg: ModelConfig, tx, schedule, loss_of, aux_weight: float,
                       freeze_steps: int):
  """train_step(state, {"x" [B, T, D], "label" [B]}) -> (state, metrics). loss_of(logits,
  labels) is the classification loss. While step < freeze_steps only the head learns: the
  encoder's gradients and updates are zeroed."""
  model = Stage2Model(model_cfg)

  def train_step(state, batch):
    k_drop, k_noise = step_keys(state["rng"], state["step"], 2)

    def loss_fn(params):
      logits, aux = model.apply({"params": params}, batch["x"], False,
                                rngs={"dropout": k_drop, "gate_noise": k_noise})
      cls = loss_of(logits, batch["label"])
      return cls + aux_weight * aux, (cls, aux, logits)

    (loss, (cls, aux, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    frozen = state["step"] < freeze_steps
    mask = lambda tree: jax.tree_util.tree_map_with_path(
        lambda p, g: g if is_head(p) else jnp.where(frozen, jnp.zeros_like(g), g), tree)
    new_state, grad_norm, finite = guarded_update(state, mask(grads), loss, tx, mask)
    acc = jnp.mean((class_of(logits) == batch["label"]).astype(jnp.float32))
    return new_state, {"loss": loss, "cls_loss": cls, "aux_loss": aux, "grad_norm": grad_norm,
                       "lr": schedule(state["step"]), "frozen": frozen.astype(jnp.int32),
                       "train_acc": acc, "finite": finite.astype(jnp.int32)}

  return train_step


def make_predict(model_cfg: ModelConfig):
  """predict(params, x [B, T, D]) -> logits [B, n_logits] float32 (eval mode)."""
  model = Stage2Model(model_cfg)
  return lambda params, x: model.apply({"params": params}, x, True)[0].astype(jnp.float32)
