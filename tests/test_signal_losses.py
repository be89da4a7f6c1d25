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
    got = losses.bal_bce(jnp.asarray(z[p + "logits"]), jnp.asarray(z[p + "labels"]),
                         z[p + "cls_num"], float(z[p + "K"]))
    np.testing.assert_allclose(float(got), float(z[p + "loss"]), rtol=1e-5, err_msg=c)


def test_bal_bce_with_k0_is_scaled_plain_bce():
  logits = jnp.array([[0.3, -1.0, 2.0], [1.0, 0.0, -0.5]])
  labels = jnp.array([2, 0])
  plain = optax.sigmoid_binary_cross_entropy(logits, jnp.eye(3)[labels]).mean() * 3
  assert float(losses.bal_bce(logits, labels, [5, 1, 1], k=0.0)) == pytest.approx(float(plain))
  assert float(losses.bal_bce(logits, labels, [5, 1, 1], k=1.0)) != pytest.approx(float(plain))
