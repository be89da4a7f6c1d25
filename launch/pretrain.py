r"""Stage-1 (AAMP) pretraining of NeurIPT.

  python -m launch.pretrain                                   # embedded default (tiny, CPU)
  python -m launch.pretrain --config=neuript_jax/configs/pretrain.py:paper --workdir=DIR \
      --config.data.sources="(('/data/tuh_tcp20', 1.0),)" --config.mesh.fsdp=8

Presets (tiny, small, paper) and what each is expected to give: neuript_jax/configs/pretrain.py.
Rerunning the same command with the same --workdir resumes from the latest checkpoint, also
on another mesh or process count. Multi-host: --distributed (plus
--coordinator_address/--num_processes/--process_id where JAX cannot find its peers by
itself); launch/multihost_local.sh tries it on one machine.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common
from neuript_jax import host_memory

CONFIG = config_flags.DEFINE_config_file("config", "neuript_jax/configs/pretrain.py",
                                         "config file with get_config(preset)")
WORKDIR = flags.DEFINE_string("workdir", "runs/pretrain_demo", "checkpoints, logs, plots")


def main(argv):
  del argv
  common.start()
  from neuript_jax.train import pretrain
  config = common.with_demo_data(CONFIG.value, WORKDIR.value, "pretrain")
  logging.info("pretraining %s in %s", config.name, WORKDIR.value)
  logging.debug("config:\n%s", config)
  last = pretrain.train(config, WORKDIR.value)
  if last["step"] < config.total_steps:
    logging.warning("stopped at step %d of %d; the same command resumes it", last["step"],
                    config.total_steps)
  else:
    logging.info("done: %s", {k: round(v, 4) for k, v in last.items()})


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  app.run(main)
