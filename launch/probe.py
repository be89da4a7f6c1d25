r"""Probe frozen encoders side by side: linear probe and the paper's SVM probe on IILP features.

  python -m launch.probe --checkpoint=runs/pretrain_aamp --checkpoint=runs/pretrain_random \
      --name=AAMP --name=random --data=SHARD_DIR --output_dir=runs/probes \
      [--probes=linear,svm] [--svm_grid=paper|quick] [--svm_train_samples=5000] \
      [--svm_test_samples=500] [--seed=520] [--config=neuript_jax/configs/finetune.py ...]

Each --checkpoint (repeatable) is read as by launch.embed: a pretraining workdir / step folder
or a reference .pth/.pt/.npz (encoder only; the model and the IILP partition / c_layers that
define the features come from --config, default neuript_jax/configs/finetune.py), or a
fine-tuning workdir (its own model). Features of the train, validation and test splits of
--data are extracted once per checkpoint; the probes (neuript_jax.evaluation.probes) train on
train, select on validation (linear) or by 5-fold CV in the training sample (SVM, as the
paper), and are scored once on test.

Prints a markdown table (one row per encoder; the task's paper metrics for each probe) and
writes <output_dir>/probe_results.json: {"table", "num_classes", "data", "splits", "results":
{name: {"checkpoint", "linear": {...}, "svm": {...}}}}. --num_classes defaults to the
number of label_names of the data's recipe (else the largest label + 1).
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging

from launch import common
from neuript_jax import host_memory

common.define_encoder_config_flag()
common.define_eval_flags("encoder to probe (repeat the flag)", multi_checkpoint=True)
flags.DEFINE_multi_string("name", None, "row name of each --checkpoint (default: its path)")
flags.DEFINE_list("splits", ["train", "val", "test"], "train, validation and test split")
flags.DEFINE_string("output_dir", "runs/probes", "where probe_results.json goes")
flags.DEFINE_list("probes", ["linear", "svm"], "linear and/or svm")
flags.DEFINE_integer("num_classes", 0, "0: from the data's label_names")
flags.DEFINE_enum("svm_grid", "paper", ["paper", "quick"], "SVM grid (probes.SVM_GRIDS)")
flags.DEFINE_integer("svm_train_samples", 5000, "training windows for the SVM (0: all)")
flags.DEFINE_integer("svm_test_samples", 500, "test windows for the SVM (0: all)")
flags.DEFINE_integer("seed", 520, "SVM sampling and CV seed (the paper's 520)")
flags.DEFINE_integer("n_jobs", 1, "parallel grid-search fits")


def main(argv):
  del argv
  common.start()
  from neuript_jax.evaluation import probes as probes_lib
  f = flags.FLAGS
  if len(f.splits) != 3:
    raise app.UsageError(f"--splits needs train,val,test split names, got {f.splits}")
  names = f.name or [os.path.basename(os.path.normpath(c)) for c in f.checkpoint]
  if len(names) != len(f.checkpoint) or len(set(names)) != len(names):
    raise app.UsageError(f"--name: {len(f.checkpoint)} distinct names needed (one per "
                         f"--checkpoint), got {names}")
  results = {}
  for name, ckpt in zip(names, f.checkpoint):
    results[name] = probes_lib.probe_checkpoint(
        ckpt, f.data, tuple(f.splits), f.config, tuple(f.probes), f.num_classes, f.batch_size,
        f.window_len, f.svm_grid, f.svm_train_samples, f.svm_test_samples, f.seed, f.n_jobs)
  n_cls = {r["num_classes"] for r in results.values()}
  if len(n_cls) != 1:
    raise ValueError(f"the checkpoints disagree on the number of classes: {n_cls}")
  n_cls = n_cls.pop()
  table = probes_lib.format_table(results, n_cls)
  print(table)
  os.makedirs(f.output_dir, exist_ok=True)
  path = os.path.join(f.output_dir, "probe_results.json")
  with open(path, "w") as fh:
    json.dump({"table": table, "num_classes": n_cls, "data": list(f.data),
               "splits": list(f.splits), "results": results}, fh, indent=1, default=str)
    fh.write("\n")
  logging.info("wrote %s", path)


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  app.run(main)
