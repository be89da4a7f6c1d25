r"""Stage-2 fine-tuning of NeurIPT with the IILP head; writes DIR/results.json.

  python -m launch.finetune                                   # embedded default (tiny, CPU)
  python -m launch.finetune --config=neuript_jax/configs/downstream/tuev.py --workdir=DIR \
      --config.init_from=runs/pt --config.data.sources="(('/data/tuev', 1.0),)"

Presets: neuript_jax/configs/finetune.py (tiny, small, paper) and one file per downstream
dataset in neuript_jax/configs/downstream/ (:paper, :cpu). Every config field is a flag
(--config.<field>=...). Rerunning the same command with the same --workdir resumes from the
latest checkpoint; a finished run (results.json present) is not rerun. Multi-host:
--distributed (plus --coordinator_address/--num_processes/--process_id).
"""

from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common
from neuript_jax import host_memory

CONFIG = config_flags.DEFINE_config_file("config", "neuript_jax/configs/finetune.py",
                                         "config file with get_config(preset)")
WORKDIR = flags.DEFINE_string("workdir", "runs/finetune_demo", "checkpoints, logs, results")


def main(argv):
  del argv
  common.start()
  from neuript_jax.evaluation import metrics
  from neuript_jax.train import finetune
  config = common.with_demo_data(CONFIG.value, WORKDIR.value, "finetune")
  config = common.with_pretrained_demo(config, WORKDIR.value)
  logging.info("fine-tuning %s in %s", config.name, WORKDIR.value)
  logging.debug("config:\n%s", config)
  results = finetune.train(config, WORKDIR.value)
  if not results:
    logging.info("stopped before the end (SIGTERM); rerun the same command to resume")
    return
  for split in ("validation", "test"):
    print(f"{split}: {metrics.format_metrics(results[split])}")
  print(json.dumps({"test": {k: results["test"][k] for k in metrics.METRIC_NAMES}}))


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  app.run(main)
