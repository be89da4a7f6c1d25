r"""Stage-2 fine-tuning of NeurIPT with the IILP head; writes DIR/results.json.

  python -m launch.finetune                                   # embedded default (tiny, CPU)
  python -m launch.finetune --config=neuript_jax/configs/finetune.py --workdir=DIR \
      --config.init_from=runs/pretrain_demo --config.data.sources="(('/data/tuev', 1.0),)" \
      --config.model.num_classes=6 --config.freeze_epochs=1 --config.select_metric=cohen_kappa

Every config field is a flag (--config.<field>=...). Rerunning the same command with the same
--workdir resumes from the latest checkpoint; a finished run (results.json present) is not
rerun. Multi-host: --distributed (plus --coordinator_address/--num_processes/--process_id).
"""

from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

from launch import distributed
from neuript_jax import host_memory

CONFIG = config_flags.DEFINE_config_file("config", "neuript_jax/configs/finetune.py",
                                         "config file with get_config()")
WORKDIR = flags.DEFINE_string("workdir", "runs/finetune_demo", "checkpoints, logs, results")


def main(argv):
  del argv
  distributed.initialize()
  from neuript_jax.evaluation import metrics
  from neuript_jax.train import finetune
  logging.info("config:\n%s", CONFIG.value)
  results = finetune.train(CONFIG.value, WORKDIR.value)
  if not results:
    logging.info("stopped before the end (SIGTERM); rerun the same command to resume")
    return
  for split in ("validation", "test"):
    print(f"{split}: {metrics.format_metrics(results[split])}")
  print(json.dumps({"test": {k: results["test"][k] for k in metrics.METRIC_NAMES}}))


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  app.run(main)
