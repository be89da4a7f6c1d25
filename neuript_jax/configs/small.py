"""A small model for benchmarks and quick experiments: d_model 192, expert hidden 128.

Run: python -m launch.demo --config=neuript_jax/configs/small.py
"""

from neuript_jax.configs.common import model_config


def get_config():
  from ml_collections import ConfigDict
  c = ConfigDict()
  c.name = "small"
  c.model = model_config(d_model=192, n_heads=8, d_ff=192, hidden_dim=128,
                         hidden_dim_shared=192, T=256, data="TUEV", num_classes=6)
  c.batch_size = 8
  c.seed = 0
  return c
