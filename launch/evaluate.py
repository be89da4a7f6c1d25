r"""Evaluate a fine-tuned checkpoint on any prepared split; prints (and writes) the metrics JSON.

  python -m launch.evaluate --checkpoint=runs/finetune_demo --data=SHARD_DIR [--split=test] \
      [--output=metrics.json] [--batch_size=64] [--window_len=64]

--checkpoint: a fine-tuning workdir (its selected checkpoint in best/ and the model config in
finetune_config.json), or one step folder inside it (best/<step> or checkpoints/<step>).
--data: one or more data_prep output folders (comma separated). The metrics are those of
neuript_jax.evaluation.compute_metrics (balanced_accuracy, cohen_kappa, weighted_f1, auroc,
auc_pr, average_precision, confusion_matrix) plus nll and n. Next to the output JSON go
confusion_matrix_<split>.png, roc_<split>.png, pr_<split>.png and curves.png (the run's
training/validation curves, when it has a metrics.jsonl); nothing is plotted without an output.
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging

from launch import common
from neuript_jax import host_memory

common.define_eval_flags("fine-tuning workdir or step folder")
SPLIT = flags.DEFINE_string("split", "test", "split to evaluate")
OUTPUT = flags.DEFINE_string("output", None, "JSON file to write (default: "
                             "<workdir>/eval_<split>.json when --checkpoint is a workdir)")


def main(argv):
  del argv
  common.start()
  import jax
  from neuript_jax.evaluation import metrics as metrics_lib
  from neuript_jax.evaluation import runs
  f = flags.FLAGS
  out = OUTPUT.value
  if out is None and not os.path.basename(os.path.abspath(f.checkpoint)).isdigit():
    out = os.path.join(f.checkpoint, f"eval_{SPLIT.value}.json")
  m = runs.evaluate(f.checkpoint, f.data, SPLIT.value, f.batch_size, f.window_len,
                    plots_dir=os.path.dirname(os.path.abspath(out)) if out else None)
  if out and jax.process_index() == 0:     # one writer with several processes
    with open(out, "w") as fh:
      json.dump(m, fh, indent=1)
      fh.write("\n")
    logging.info("wrote %s", out)
  logging.info("%s: %s", SPLIT.value, metrics_lib.format_metrics(m))
  print(json.dumps(m))


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  app.run(main)
