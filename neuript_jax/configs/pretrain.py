"""Stage-1 (AAMP) pretraining, the embedded default: a tiny NeurIPT on the synthetic corpus.

Run:  python -m launch.pretrain                      (workdir defaults to ./runs/pretrain_demo)
      python -m launch.pretrain --config=neuript_jax/configs/pretrain.py \
          --config.model.d_model=768 --config.data.sources="(('/data/tuh_tcp20', 1.0),)"
Expected (2-core CPU, embedded default): 150 steps in about 5 minutes including compilation;
the AAMP reconstruction loss (A-law units, metrics.jsonl) falls from about 1.0 to about 0.5.
Paper setting (REFERENCE.md §5.2): --config.model=paper sizes, batch 480, 400K steps, lr 3e-4.
"""

import ml_collections

from neuript_jax.configs.common import model_config


def get_config():
  from neuript_jax import masking
  from neuript_jax.data import pipeline

  c = ml_collections.ConfigDict()
  c.name = "pretrain_tiny_synthetic"
  # The demo crops the 4 s (256-sample) windows to their first 64 samples to fit a CPU budget;
  # for real runs set --config.model.T=256 --config.data.window_len=256.
  c.model = model_config(d_model=32, n_heads=4, d_ff=32, hidden_dim=32, hidden_dim_shared=32,
                         T=64, data="Stage1", dropout=0.1)
  c.masking = masking.default_masking_config()

  data = pipeline.default_data_config().to_dict()
  # A tuple so that it can be overridden on the command line:
  #   --config.data.sources="(('/data/tuh_tcp20', 3.0), ('/data/seed_tcp20', 1.0))"
  data["sources"] = ()
  c.data = ml_collections.ConfigDict(data)
  c.data.global_batch_size = 8
  c.data.window_len = 64
  c.eval_split = "val"
  c.eval_batches = 2
  # With no sources, the launcher writes the synthetic corpus and converts it with the
  # pretrain_tcp20 recipe under <workdir>/data (once; reused afterwards).
  c.synthetic = ml_collections.ConfigDict(dict(n_subjects=6, recordings=3, minutes=6.0,
                                               val_fraction=0.2, seed=0))

  c.optim = ml_collections.ConfigDict(dict(
      schedule="onecycle", lr=2e-3, pct_start=0.15, div_factor=25.0, final_div_factor=1e4,
      min_lr=1e-5, b1=0.9, b2=0.98, eps=1e-8, weight_decay=5e-3, clip_norm=100.0))
  c.loss_p = 1.0
  c.aux_weight = 0.8

  # Mesh (data, fsdp, expert, tensor); -1 takes the remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, expert=1, tensor=1))
  c.logical_axis_rules = ml_collections.FieldReference(None, field_type=tuple)

  c.total_steps = 150
  c.log_every = 10
  c.eval_every = 50
  c.checkpoint_every = 50
  c.plot_every = 50
  c.keep_checkpoints = 3
  c.async_checkpoint = True
  c.nonfinite = "skip"          # or "stop"
  c.init_from = ""              # params only: orbax workdir/step dir, or reference .pth/.npz
  c.seed = 0
  return c
