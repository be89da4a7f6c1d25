"""The hashed dropout: keep rate, scaling, reproducibility, independence across positions and
seeds, its gradient, and that the models' training forward uses it through the "dropout" rng."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuript_jax.model.dropout import HashedDropout, keep_mask
from neuript_jax.model.fused_attention import dropout_keep_mask


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_rate_matches(rate):
  keep = np.asarray(keep_mask(jnp.array([3, 7], jnp.uint32), (64, 40, 96), rate))
  # 245,760 Bernoulli draws: the standard error of the mean is <= 0.001.
  assert abs(keep.mean() - (1.0 - rate)) < 0.005
  # Rows and columns are not copies of each other (the hash mixes both indices).
  flat = keep.reshape(-1, 96)
  assert len({row.tobytes() for row in flat}) > 0.99 * flat.shape[0]
  assert abs(keep[..., 0].mean() - (1.0 - rate)) < 0.03


def test_seeds_give_independent_masks():
  a = np.asarray(keep_mask(jnp.array([1, 2], jnp.uint32), (128, 512), 0.5))
  b = np.asarray(keep_mask(jnp.array([1, 3], jnp.uint32), (128, 512), 0.5))
  c = np.asarray(keep_mask(jnp.array([2, 2], jnp.uint32), (128, 512), 0.5))
  for other in (b, c):
    agree = (a == other).mean()
    assert 0.48 < agree < 0.52
  np.testing.assert_array_equal(a, np.asarray(keep_mask(jnp.array([1, 2], jnp.uint32),
                                                        (128, 512), 0.5)))


def test_offset_selects_the_rows_of_a_larger_array():
  seed = jnp.array([5, 9], jnp.uint32)
  full = np.asarray(keep_mask(seed, (12, 3, 7, 5), 0.3))
  part = np.asarray(keep_mask(seed, (4, 3, 7, 5), 0.3, offset=8))
  np.testing.assert_array_equal(full[8:], part)
  np.testing.assert_array_equal(full, np.asarray(dropout_keep_mask(seed, (12, 3, 7, 5), 0.3)))


def test_hashed_dropout_module():
  x = jnp.ones((32, 50, 64), jnp.float32)
  layer = HashedDropout(0.25)
  np.testing.assert_array_equal(layer.apply({}, x, True), x)
  y1 = layer.apply({}, x, False, rngs={"dropout": jax.random.key(0)})
  y2 = layer.apply({}, x, False, rngs={"dropout": jax.random.key(0)})
  y3 = layer.apply({}, x, False, rngs={"dropout": jax.random.key(1)})
  np.testing.assert_array_equal(y1, y2)
  assert not np.array_equal(y1, y3)
  np.testing.assert_allclose(np.unique(np.asarray(y1)), [0.0, 1 / 0.75], rtol=1e-6)
  assert abs(float(y1.mean()) - 1.0) < 0.02       # unbiased: E[y] = x
  assert float(HashedDropout(1.0).apply({}, x, False, rngs={"dropout": jax.random.key(0)}
                                        ).sum()) == 0.0
  assert HashedDropout(0.0).apply({}, x, False) is x
  # The gradient is the keep mask scaled by 1 / (1 - rate).
  grad = jax.grad(lambda v: layer.apply({}, v, False,
                                        rngs={"dropout": jax.random.key(0)}).sum())(x)
  np.testing.assert_allclose(grad, y1, rtol=1e-6)


def test_models_training_forward_uses_the_dropout_stream():
  from neuript_jax.model import Stage2Model, init_params
  from neuript_jax.model.config import ModelConfig
  cfg = ModelConfig(d_model=16, n_heads=2, d_ff=16, hidden_dim=8, hidden_dim_shared=16, T=32,
                    data="TUEV", num_classes=6, dropout=0.2, noise_std=0.0)
  params = init_params(cfg, 2, jax.random.key(0))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, cfg.data_dim)), jnp.float32)
  model = Stage2Model(cfg)
  run = lambda k: model.apply({"params": params}, x, False, rngs={"dropout": k,
                                                                  "gate_noise": k})[0]
  np.testing.assert_array_equal(run(jax.random.key(3)), run(jax.random.key(3)))
  assert not np.allclose(run(jax.random.key(3)), run(jax.random.key(4)))
  assert not np.allclose(run(jax.random.key(3)), model.apply({"params": params}, x, True)[0])
