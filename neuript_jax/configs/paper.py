"""The paper's model (REFERENCE.md §2.1, Table 13): d_model 768, 8 heads, experts [0,0,2,4,4,6].

Run: python -m launch.demo --config=neuript_jax/configs/paper.py
Expected: stage-2 encoder + TUEV head = 73.47M activated parameters (paper: 73.5M),
stage-1 model about 179.1M parameters.
"""

from neuript_jax.configs.common import model_config


def get_config():
  from ml_collections import ConfigDict
  c = ConfigDict()
  c.name = "paper"
  c.model = model_config(d_model=768, n_heads=8, d_ff=768, hidden_dim=512,
                         hidden_dim_shared=768, T=256, data="TUEV", num_classes=6)
  c.batch_size = 2
  c.seed = 0
  return c
