r"""Model demo: build NeurIPT from a config, run a batch of synthetic EEG, print shapes,
parameter counts and timing (stage-2 classifier and stage-1 pretraining model).

  python -m launch.demo                                        # tiny preset, CPU, seconds
  python -m launch.demo --config=neuript_jax/configs/finetune.py:paper --batch_size=1
"""

from __future__ import annotations

import time

from absl import app, flags
from ml_collections import config_flags

from launch import common
from neuript_jax import host_memory

CONFIG = config_flags.DEFINE_config_file("config", "neuript_jax/configs/finetune.py",
                                         "config file whose `model` block is demonstrated")
BATCH = flags.DEFINE_integer("batch_size", 2, "windows in the synthetic batch")


def synthetic_batch(key, batch, t, d):
  """A-law companded noisy oscillations [B, T, D] standing in for EEG."""
  import jax
  import jax.numpy as jnp
  from neuript_jax.signal import a_law_compress
  k1, k2 = jax.random.split(key)
  time_s = jnp.arange(t) / 64.0
  freq = jax.random.uniform(k1, (batch, 1, d), minval=4.0, maxval=14.0)
  uv = 20 * jnp.sin(2 * jnp.pi * freq * time_s[None, :, None])
  uv = uv + 10 * jax.random.normal(k2, (batch, t, d))
  return a_law_compress(uv, xp=jnp)


def main(argv):
  del argv
  common.start()
  import jax
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.model import build_model, init_params
  from neuript_jax.model.counting import param_report

  config = CONFIG.value
  cfg = to_model_config(config.model)
  key = jax.random.key(config.seed)
  b = BATCH.value
  x = synthetic_batch(key, b, cfg.T, cfg.data_dim)
  print(f"preset {config.name}: d_model {cfg.d_model}, heads {cfg.n_heads}, T {cfg.T}, "
        f"D {cfg.data_dim} ({cfg.data or 'custom'}), experts {list(cfg.enc_expert)}, "
        f"merges {list(cfg.merge_layers)}; devices {jax.devices()}")
  for stage in (2, 1):
    params = init_params(cfg, stage, key)
    rep = param_report(params, cfg)
    model = build_model(cfg, stage)
    if stage == 2:
      fwd = jax.jit(lambda p, x: model.apply({"params": p}, x, True, True))
      args = (x,)
    else:
      masks = [jax.random.bernoulli(key, 0.5, (b, cfg.data_dim, l))
               for l in cfg.block_lengths()]
      fwd = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m, m, True))
      args = (x, masks)
    start = time.perf_counter()
    out = jax.block_until_ready(fwd(params, *args))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(fwd(params, *args))
    run_s = time.perf_counter() - start
    print(f"\nstage {stage}: {rep['total'] / 1e6:.2f}M parameters, "
          f"{rep['activated'] / 1e6:.2f}M activated")
    print(f"  input x {tuple(x.shape)} (B, T, D)")
    if stage == 2:
      logits, _, enc_out = out
      print(f"  logits {tuple(logits.shape)}; feature maps "
            + ", ".join(str(tuple(f.shape)) for f in enc_out))
    else:
      pred, _ = out
      print(f"  prediction {tuple(pred.shape)} (B, T, D); block masks "
            + ", ".join(str(tuple(m.shape)) for m in masks))
    print(f"  forward: compile+run {compile_s:.2f} s, run {run_s * 1e3:.1f} ms "
          f"({b / run_s:.1f} samples/s)")


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  app.run(main)
