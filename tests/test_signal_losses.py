import jax.numpy as jnp
import numpy as np
import optax
import pytest

from neuript_jax import losses, signal


def test_alaw_matches_reference(golden_dir):
  z = np.load(golden_dir / "utils.npz")
  np.testing.assert_allclose(signal.a_law_compress(z["alaw/x"]), z["alaw/y"], atol=1e-12)
  np.testing.assert_allclose(signal.a_law_compress(jnp.asarray(z["alaw/x"], jnp.float32),
                                                   xp=jnp), z["alaw/y"], atol=1e-6)


def test_alaw_known_values_and_inverse():
  y = signal.a_law_compress(np.array([4.0, 100.0, -100.0, 0.0]))
  np.testing.assert_allclose(y, [0.7507, 3.167, -3.167, 0.0], atol=1e-3)
  x = np.linspace(-300, 300, 1001)
  np.testing.assert_allclose(signal.a_law_expand(signal.a_law_compress(x)), x, atol=1e-9)


def test_bal_bce_matches_reference(golden_dir):
  z = np.load(golden_dir / "utils.npz")
  cases = sorted({k.split("/")[1] for k in z.files if k.startswith("balbce/")})
  assert len(cases) >= 4
  for c in cases:
    p = f"balbce/{c}/"
    # The golden binary case was generated with the positive-class prior shift (golden
    # README), not with the vendored code's binary path (test below).
    form = "prior_shift" if z[p + "logits"].shape[-1] == 1 else "reference"
    got = losses.bal_bce(jnp.asarray(z[p + "logits"]), jnp.asarray(z[p + "labels"]),
                         z[p + "cls_num"], float(z[p + "K"]), binary_form=form)
    np.testing.assert_allclose(float(got), float(z[p + "loss"]), rtol=1e-5, err_msg=c)


def test_bal_bce_with_k0_is_scaled_plain_bce():
  logits = jnp.array([[0.3, -1.0, 2.0], [1.0, 0.0, -0.5]])
  labels = jnp.array([2, 0])
  plain = optax.sigmoid_binary_cross_entropy(logits, jnp.eye(3)[labels]).mean() * 3
  assert float(losses.bal_bce(logits, labels, [5, 1, 1], k=0.0)) == pytest.approx(float(plain))
  assert float(losses.bal_bce(logits, labels, [5, 1, 1], k=1.0)) != pytest.approx(float(plain))


def _reference_binary_bal_bce(logits, labels, cls_num, k):
  """The vendored BCE_loss(type="Bal", binary=True) written out in numpy: bias [2] broadcast
  onto the [N, 1] logit, the label's column gathered, times the broadcast width 2."""
  pi = np.asarray(cls_num, np.float64) / np.sum(cls_num)
  wide = np.asarray(logits, np.float64) + k * (np.log(pi) - np.log(1 - pi))   # [N, 2]
  z = wide[np.arange(len(labels)), labels]
  y = np.asarray(labels, np.float64)
  bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
  return wide.shape[-1] * bce.mean()


def test_binary_reference_form_is_the_vendored_binary_path():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(32, 1)).astype(np.float32)
  labels = rng.integers(0, 2, 32)
  for k in (0.0, 0.1, 1.0):
    got = losses.bal_bce(jnp.asarray(logits), jnp.asarray(labels), [450, 114], k)
    want = _reference_binary_bal_bce(logits, labels, [450, 114], k)
    assert float(got) == pytest.approx(want, rel=1e-5), k
  shift = losses.bal_bce(jnp.asarray(logits), jnp.asarray(labels), [450, 114], 1.0,
                         binary_form="prior_shift")
  assert float(shift) != pytest.approx(_reference_binary_bal_bce(logits, labels, [450, 114], 1))
  with pytest.raises(ValueError, match="binary_form"):
    losses.bal_bce(jnp.asarray(logits), jnp.asarray(labels), [450, 114], binary_form="x")


def _best_constant_logit(form, k, n_neg=75, n_pos=25):
  """The constant logit minimising bal_bce on n_neg zeros and n_pos ones (bisection on the
  gradient, which is increasing: the loss is convex in z)."""
  import jax
  labels = jnp.array([0] * n_neg + [1] * n_pos)
  grad = jax.grad(lambda z: losses.bal_bce(jnp.full((len(labels), 1), z), labels,
                                           [n_neg, n_pos], k, binary_form=form))
  lo, hi = -10.0, 10.0
  for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if float(grad(mid)) < 0 else (lo, mid)
  return (lo + hi) / 2


def test_binary_forms_on_an_imbalanced_constant_model():
  # 3:1 negatives. Plain BCE (K=0): the log odds of the data, log(1/3).
  assert _best_constant_logit("reference", 0.0) == pytest.approx(np.log(1 / 3), abs=1e-4)
  # prior_shift with K=1 is the full logit adjustment: the raw logit is balanced, 0.
  assert _best_constant_logit("prior_shift", 1.0) == pytest.approx(0.0, abs=1e-4)
  # The reference's symmetric margin m = log 3 pushes it further towards the majority:
  # 0.25 * 3 / (3 + u) = 0.75 * 3u / (1 + 3u), u = e^z  ->  3u^2 + 6u - 1 = 0.
  u = (-6 + np.sqrt(48)) / 6
  assert _best_constant_logit("reference", 1.0) == pytest.approx(np.log(u), abs=1e-4)
