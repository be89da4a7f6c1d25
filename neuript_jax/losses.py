"""Losses: the reference's Bal-BCE (LiVT), cross-entropy, and the masked reconstruction loss.

bal_bce(logits [N, C'], labels [N], cls_num [C], K), with pi the training class prior
(cls_num / sum) and b_c = log(pi_c / (1 - pi_c)):

* multi-class (C' = C > 1 logits, one-hot targets): every logit c is shifted by K * b_c, then
  loss = C * mean(BCE_with_logits(shifted, one-hot)). A logit adjustment: the raw logits
  used at evaluation are biased towards the rare classes.
* binary (one logit, C = 2 counts), ``binary_form``:

  "reference" (default) what the authors' ``BCE_loss(type="Bal", binary=True)`` computes, the
              only binary path of their code that runs: the bias vector [b_0, b_1] is added to
              the [N, 1] logit (broadcast to [N, 2]), the column of the sample's own label is
              kept, and the factor is that broadcast width, 2:
              loss = 2 * mean(BCE_with_logits(z + K * b_y, y)). For y = 1 the logit must clear
              +K*log(pi_0/pi_1), for y = 0 stay below -K*log(pi_0/pi_1) (with pi_1 < pi_0): a
              margin of the same size on both sides, so the boundary is not moved towards the
              rare class and the prior is not corrected.
  "prior_shift" every logit shifted by K * b_1 (the positive-class log prior odds), factor 1:
              the multi-class rule with one logit, a logit adjustment towards the rare class.
              This is what ../shared/golden (``balbce/c2_*``) was generated with (its README:
              "the prior is the positive-class fraction").

Optional label smoothing of the targets (the reference stores ``args.smoothing`` but its
forward never reads it; 0 here by default).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from neuript_jax.model.neuript import masked_mean_abs_error  # noqa: F401  (re-exported)

BINARY_FORMS = ("reference", "prior_shift")


def class_prior(cls_num) -> jnp.ndarray:
  cls_num = jnp.asarray(cls_num, jnp.float32)
  return cls_num / cls_num.sum()


def _log_odds(pi):
  return jnp.log(pi) - jnp.log(1.0 - pi)


def bal_bce(logits, labels, cls_num, k: float = 1.0, smoothing: float = 0.0,
            binary_form: str = "reference"):
  """Balanced BCE (the reference's `BCE_loss(type='Bal')`), mean reduction; logits [N, C'],
  labels [N] int, cls_num [C] training counts (C = 2 for one logit)."""
  if binary_form not in BINARY_FORMS:
    raise ValueError(f"bal_bce binary_form must be one of {', '.join(BINARY_FORMS)}, "
                     f"got {binary_form!r}")
  logits = logits.astype(jnp.float32)
  n_logits = logits.shape[-1]
  pi = class_prior(cls_num)
  if n_logits == 1:
    if pi.shape[0] != 2:
      raise ValueError(f"bal_bce: one logit needs 2 class counts, got cls_num of {pi.shape[0]}")
    targets = labels.astype(jnp.float32)[:, None]
    if smoothing:
      targets = targets * (1.0 - smoothing) + smoothing / 2
    if binary_form == "prior_shift":
      shifted = logits + k * _log_odds(pi[1])
      return optax.sigmoid_binary_cross_entropy(shifted, targets).mean()
    shifted = logits + k * _log_odds(pi)[labels.astype(jnp.int32)][:, None]
    return 2.0 * optax.sigmoid_binary_cross_entropy(shifted, targets).mean()
  targets = jnp.eye(n_logits, dtype=jnp.float32)[labels]
  if smoothing:
    targets = targets * (1.0 - smoothing) + smoothing / max(n_logits, 2)
  shifted = logits + k * _log_odds(pi)
  return n_logits * optax.sigmoid_binary_cross_entropy(shifted, targets).mean()


def cross_entropy(logits, labels):
  """Softmax cross-entropy for multi-class logits, BCE-with-logits for a single logit."""
  if logits.shape[-1] == 1:
    return optax.sigmoid_binary_cross_entropy(logits[:, 0].astype(jnp.float32),
                                              labels.astype(jnp.float32)).mean()
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                         labels).mean()
