r"""Stage-1 (AAMP) pretraining of NeurIPT.

  python -m launch.pretrain                                   # embedded default (tiny, CPU)
  python -m launch.pretrain --config=neuript_jax/configs/pretrain.py --workdir=DIR \
      --config.total_steps=400000 --config.mesh.fsdp=8 ...

Rerunning the same command with the same --workdir resumes from the latest checkpoint.
Multi-host: --distributed (plus --coordinator_address/--num_processes/--process_id where JAX
cannot find its peers by itself).
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from launch import distributed
from neuript_jax import host_memory

CONFIG = config_flags.DEFINE_config_file("config", "neuript_jax/configs/pretrain.py",
                                         "config file with get_config()")
WORKDIR = flags.DEFINE_string("workdir", "runs/pretrain_demo", "checkpoints, logs, plots")


def main(argv):
  del argv
  distributed.initialize()
  from neuript_jax.train import pretrain
  logging.info("config:\n%s", CONFIG.value)
  last = pretrain.train(CONFIG.value, WORKDIR.value)
  logging.info("done: %s", last)


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  app.run(main)
