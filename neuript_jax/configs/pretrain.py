r"""Stage-1 (AAMP) pretraining experiments: `--config=neuript_jax/configs/pretrain.py:<preset>`.

tiny (the default, the embedded demo): a tiny NeurIPT on the synthetic corpus that the
  launcher writes and converts under <workdir>/data (no data.sources), 4 s windows cropped to
  their first 64 samples, 150 steps at global batch 8, on CPU.
    python -m launch.pretrain
  Expected (2-core CPU): about 5 minutes including compilation; the AAMP reconstruction loss
  (A-law units, metrics.jsonl) falls from about 1.1 to about 0.7.

small: d_model 192 on whole 4 s windows (T 256), global batch 32, 20K steps, lr 3e-4.
    python -m launch.pretrain --config=neuript_jax/configs/pretrain.py:small --workdir=runs/pt_s \
        --config.data.sources="(('/data/tuh_tcp20', 1.0),)"
  Expected: not measured (a benchmark and experiment size, not a paper setting).

paper: the paper's run (REFERENCE.md §5.2, Table 13): d_model 768, 8 heads, d_ff 768, expert
  hidden 512, shared 768, merges (1,4,1,2,1,2), experts (0,0,2,4,4,6), T 256 at 64 Hz, global
  batch 480 (60 x 8 GPUs), AdamW (0.9, 0.98), weight decay 5e-3, OneCycle to 3e-4 (div 25,
  final div 1e4, warm-up 0.15), 400K steps, clip 100, bf16, dropout 0.1, aux 0.8, dynamic
  masking ratio {0.20, 0.35, 0.50} per sample, seed 520; remat "layer_ordered" (recomputes one
  at a time, BENCHMARKS.md) so that it fits.
    python -m launch.pretrain --config=neuript_jax/configs/pretrain.py:paper --workdir=runs/pt \
        --config.data.sources="(('/data/tuh_tcp20', 3.0), ('/data/seed_tcp20', 1.0))" \
        --config.mesh.fsdp=8
  Expected: the paper reports about 30 h on 8 RTX 4090s; its pretraining loss is not published.

Any field can be overridden: --config.total_steps=1000 --config.model.d_model=96 ...
"""

import ml_collections

from neuript_jax.configs.common import model_config, size_arg


def get_config(arg: str | None = None):
  from neuript_jax import masking
  from neuript_jax.data import pipeline

  size = size_arg(arg)
  c = ml_collections.ConfigDict()
  c.name = f"pretrain_{size}"
  c.model = model_config(size=size, T=256, data="Stage1", dropout=0.1)
  c.masking = masking.default_masking_config()

  data = pipeline.default_data_config().to_dict()
  # A tuple so that it can be overridden on the command line:
  #   --config.data.sources="(('/data/tuh_tcp20', 3.0), ('/data/seed_tcp20', 1.0))"
  # Empty: the launcher writes the synthetic corpus and converts it with the pretrain_tcp20
  # recipe under <workdir>/data (once, by process 0; reused afterwards).
  data["sources"] = ()
  c.data = ml_collections.ConfigDict(data)
  c.data.global_batch_size = 32
  c.data.window_len = 256
  c.eval_split = "val"
  c.eval_batches = 2
  c.synthetic = ml_collections.ConfigDict(dict(n_subjects=6, recordings=3, minutes=6.0,
                                               val_fraction=0.2, seed=0))

  c.optim = ml_collections.ConfigDict(dict(
      schedule="onecycle", lr=3e-4, pct_start=0.15, div_factor=25.0, final_div_factor=1e4,
      min_lr=1e-5, b1=0.9, b2=0.98, eps=1e-8, weight_decay=5e-3, clip_norm=100.0))
  c.loss_p = 1.0
  c.aux_weight = 0.8

  # Mesh (data, fsdp, expert, tensor); -1 takes the remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, expert=1, tensor=1))
  c.logical_axis_rules = ml_collections.FieldReference(None, field_type=tuple)

  c.total_steps = 20_000
  c.log_every = 100
  c.eval_every = 1000            # 0 = evaluate only after the last step
  c.checkpoint_every = 1000
  c.plot_every = 1000            # 0 = plot only after the last step
  c.keep_checkpoints = 3
  c.async_checkpoint = True
  c.nonfinite = "skip"           # or "stop"
  c.init_from = ""               # params only: orbax workdir/step dir, or reference .pth/.npz
  c.seed = 0

  if size == "tiny":
    # The demo crops the 4 s (256-sample) windows to their first 64 samples to fit a CPU
    # budget; for real runs use the small or paper preset (T 256).
    c.model.T = 64
    c.data.window_len = 64
    c.data.global_batch_size = 8
    c.optim.lr = 2e-3
    c.total_steps = 150
    c.log_every = 10
    c.eval_every = c.checkpoint_every = c.plot_every = 50
  elif size == "paper":
    c.model.dtype = "bfloat16"
    c.model.remat = "layer_ordered"
    c.masking.ratios = (0.2, 0.35, 0.5)
    c.data.global_batch_size = 480
    c.total_steps = 400_000
    c.log_every = 100
    c.eval_every = c.checkpoint_every = c.plot_every = 5000
    c.seed = 520
  return c
