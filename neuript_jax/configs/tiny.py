"""The tiny model used by tests and the CPU demo (the golden files' shape: d_model 48, 4 heads).

Run: python -m launch.demo   (this is the default config)
"""

from neuript_jax.configs.common import model_config


def get_config():
  from ml_collections import ConfigDict
  c = ConfigDict()
  c.name = "tiny"
  c.model = model_config(d_model=48, n_heads=4, d_ff=48, hidden_dim=32, hidden_dim_shared=48,
                         T=64, data="TUEV", num_classes=6, dropout=0.0)
  c.batch_size = 4
  c.seed = 0
  return c
