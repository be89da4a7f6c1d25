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

from neuript_jax import host_memory


def num_classes_of(split_arrays: dict) -> int:
  """len(label_names) from the embed meta, else the largest label over the splits + 1."""
  first = next(iter(split_arrays.values()))
  names = json.loads(str(first["meta"])).get("label_names")
  if names:
    return len(names)
  return int(max(a["labels"].max() for a in split_arrays.values())) + 1


def probe_checkpoint(checkpoint: str, data, splits=("train", "val", "test"), config=None,
                     probes=("linear", "svm"), num_classes: int = 0, batch_size: int = 64,
                     window_len="config", svm_grid="paper", svm_train_samples: int = 5000,
                     svm_test_samples: int = 500, seed: int = 520, n_jobs: int = 1) -> dict:
  """{"checkpoint", "num_classes", "linear"?, "svm"?} for one encoder; splits: (train, val,
  test) split names."""
  from launch import embed
  from neuript_jax.evaluation import probes as probes_lib
  unknown = set(probes) - {"linear", "svm"}
  if unknown:
    raise ValueError(f"--probes: unknown {sorted(unknown)}; choose from linear, svm")
  arrays = embed.embed_splits(checkpoint, data, list(dict.fromkeys(splits)), config,
                              batch_size, window_len)
  n_cls = num_classes or num_classes_of(arrays)
  tr, va, te = ((arrays[s]["features"], arrays[s]["labels"]) for s in splits)
  out = {"checkpoint": os.path.abspath(checkpoint), "num_classes": n_cls,
         "features": int(tr[0].shape[1])}
  if "linear" in probes:
    out["linear"] = probes_lib.linear_probe(tr, va, te, n_cls)
    logging.info("%s linear probe (C=%g): test balanced accuracy %.4f", checkpoint,
                 out["linear"]["C"], out["linear"]["test"]["balanced_accuracy"])
  if "svm" in probes:
    out["svm"] = probes_lib.svm_probe(tr, te, n_cls, svm_train_samples, svm_test_samples,
                                      seed, svm_grid, n_jobs=n_jobs)
    logging.info("%s SVM probe (%s): test balanced accuracy %.4f", checkpoint,
                 out["svm"]["params"], out["svm"]["test"]["balanced_accuracy"])
  return out


def _define_flags():
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", "neuript_jax/configs/finetune.py",
                                  "model for encoder-only checkpoints (see launch.embed)")
  flags.DEFINE_multi_string("checkpoint", None, "encoder to probe (repeat the flag)",
                            required=True)
  flags.DEFINE_multi_string("name", None, "row name of each --checkpoint (default: its path)")
  flags.DEFINE_list("data", None, "data_prep output folder(s)", required=True)
  flags.DEFINE_list("splits", ["train", "val", "test"], "train, validation and test split")
  flags.DEFINE_string("output_dir", "runs/probes", "where probe_results.json goes")
  flags.DEFINE_list("probes", ["linear", "svm"], "linear and/or svm")
  flags.DEFINE_integer("num_classes", 0, "0: from the data's label_names")
  flags.DEFINE_enum("svm_grid", "paper", ["paper", "quick"], "SVM grid (probes.SVM_GRIDS)")
  flags.DEFINE_integer("svm_train_samples", 5000, "training windows for the SVM (0: all)")
  flags.DEFINE_integer("svm_test_samples", 500, "test windows for the SVM (0: all)")
  flags.DEFINE_integer("seed", 520, "SVM sampling and CV seed (the paper's 520)")
  flags.DEFINE_integer("n_jobs", 1, "parallel grid-search fits")
  flags.DEFINE_integer("batch_size", 64, "feature extraction batch size")
  flags.DEFINE_string("window_len", "config", "'config', 'none' or an integer")


def main(argv):
  del argv
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
    results[name] = probe_checkpoint(
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
  _define_flags()
  app.run(main)
