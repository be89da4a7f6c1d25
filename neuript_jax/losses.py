"""Losses: the reference's Bal-BCE (LiVT), cross-entropy, and the masked reconstruction loss.

bal_bce(logits [N, C'], labels [N], cls_num [C], K): the logits are shifted by
K * log(pi / (1 - pi)) with pi the training class prior, then
loss = C' * mean(BCE_with_logits(shifted, one-hot targets)). Binary tasks (C = 2) have one logit
(C' = 1), target = label and prior = cls_num[1] / sum(cls_num). Optional label smoothing.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from neuript_jax.model.neuript import masked_mean_abs_error  # noqa: F401  (re-exported)


def class_prior(cls_num) -> jnp.ndarray:
  cls_num = jnp.asarray(cls_num, jnp.float32)
  return cls_num / cls_num.sum()


def bal_bce(logits, labels, cls_num, k: float = 1.0, smoothing: float = 0.0):
  """Balanced BCE (the reference's `BCE_loss(type='Bal')`), mean reduction."""
  logits = logits.astype(jnp.float32)
  n_logits = logits.shape[-1]
  pi = class_prior(cls_num)
  if n_logits == 1:
    pi = pi[1:2]
    targets = labels.astype(jnp.float32)[:, None]
  else:
    targets = jnp.eye(n_logits, dtype=jnp.float32)[labels]
  if smoothing:
    targets = targets * (1.0 - smoothing) + smoothing / max(n_logits, 2)
  shifted = logits + k * (jnp.log(pi) - jnp.log(1.0 - pi))
  return n_logits * optax.sigmoid_binary_cross_entropy(shifted, targets).mean()


def cross_entropy(logits, labels):
  """Softmax cross-entropy for multi-class logits, BCE-with-logits for a single logit."""
  if logits.shape[-1] == 1:
    return optax.sigmoid_binary_cross_entropy(logits[:, 0].astype(jnp.float32),
                                              labels.astype(jnp.float32)).mean()
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                         labels).mean()
