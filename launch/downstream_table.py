r"""One downstream dataset's results table over several seeds (neuript_jax/bench/downstream_table.py):
NeurIPT from scratch, pretrained with AAMP / random masking on the training subjects only,
band power + logistic regression, EEGNet; writes WORKDIR/summary.md, summary.csv, roc_test.png.

  python -m launch.downstream_table --dataset=mental_arithmetic --data=SHARDS_OR_RAW \
      --workdir=W --seeds=0,1,2,3,4 --size=cpu

--data: a data_prep output folder (manifest.json) or the raw recordings, which are converted
with the dataset's recipe into W/shards first. The pretraining data are the recordings of the
training split only (the manifest's files whose split is "train"), converted again with the
same recipe into W/pretrain_shards; the validation and test subjects' files are never read
for it. If those recordings are no longer where the manifest says, the `train` split of the
shards is used instead (the same windows). Rerunning the same command skips finished runs and
resumes an interrupted one. --records=FOLDER keeps the finished runs' small files there (and
takes the ones already recorded), so the table continues from a fresh checkout. The baselines
need requirements-bench.txt (braindecode).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from absl import app, flags, logging

DATASET = flags.DEFINE_string("dataset", "mental_arithmetic", "a downstream config / recipe "
                              "name (neuript_jax/configs/downstream)")
DATA = flags.DEFINE_string("data", None, "data_prep output folder or raw recordings",
                           required=True)
WORKDIR = flags.DEFINE_string("workdir", None, "where every run and the summary go",
                              required=True)
SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "seeds, comma-separated")
SIZE = flags.DEFINE_enum("size", "cpu", ["cpu", "paper"], "downstream config preset")
ROWS = flags.DEFINE_list("rows", ["neuript_scratch", "neuript_aamp", "neuript_random",
                                  "band_power_lr", "eegnet"], "rows to run, in this order")
PRETRAIN_STEPS = flags.DEFINE_integer("pretrain_steps", 300, "pretraining steps per masking")
PRETRAIN_BATCH = flags.DEFINE_integer("pretrain_batch", 8, "pretraining global batch")
EEGNET_EPOCHS = flags.DEFINE_integer(
    "eegnet_epochs", 100, "EEGNet training epochs (the best validation epoch is kept)")
RECORDS = flags.DEFINE_string("records", "", "a folder of finished runs' small files, synced "
                              "both ways (e.g. docs/benchmark_records/mental_arithmetic_cpu: "
                              "the seeds measured so far are taken from it, new ones added)")
CACHE = flags.DEFINE_string("compilation_cache", "", "JAX persistent compilation cache "
                            "folder (default WORKDIR/jax_cache: the seeds and NeurIPT rows "
                            "share one compiled program)")


def _converted(data: str, dataset: str, out: Path) -> str:
  """`data` if it is a data_prep output folder, else its conversion into `out`."""
  if (Path(data) / "manifest.json").exists():
    return data
  from data_prep import convert
  from data_prep.recipes import get_recipe
  logging.info("converting %s with the %s recipe into %s", data, dataset, out)
  convert.convert(data, get_recipe(dataset), out)
  return str(out)


def _training_recordings(shards: str, dataset: str, out: Path) -> str | None:
  """The training split's recordings (from the manifest) converted again into `out`; None if
  any of them is missing."""
  manifest = json.loads((Path(shards) / "manifest.json").read_text())
  files = sorted({f["path"] for f in manifest["files"] if f.get("split") == "train"})
  if not files or not all(os.path.exists(f) for f in files):
    logging.warning("the training recordings of %s are not all on disk: pretraining reads "
                    "the shards' train split instead", shards)
    return None
  if (out / "manifest.json").exists():
    return str(out)
  from data_prep import convert
  from data_prep.recipes import get_recipe
  logging.info("converting the %d training-split recordings for pretraining into %s",
               len(files), out)
  convert.convert(files, get_recipe(dataset), out)
  return str(out)


def main(argv):
  del argv
  import jax
  from neuript_jax.bench import downstream_table
  root = Path(WORKDIR.value)
  root.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", CACHE.value or str(root / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  shards = _converted(DATA.value, DATASET.value, root / "shards")
  pretrain_shards = None
  if any(r in downstream_table.PRETRAIN_MODES for r in ROWS.value):
    pretrain_shards = _training_recordings(shards, DATASET.value, root / "pretrain_shards")
  failed = []
  try:
    table = downstream_table.run_table(
        DATASET.value, shards, str(root), [int(s) for s in SEEDS.value], SIZE.value,
        rows=ROWS.value, pretrain_shards=pretrain_shards, pretrain_steps=PRETRAIN_STEPS.value,
        pretrain_batch=PRETRAIN_BATCH.value, eegnet_epochs=EEGNET_EPOCHS.value, failed=failed,
        records=RECORDS.value or None)
  except downstream_table.SettingsMismatchError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from e
  print((root / "summary.md").read_text())
  logging.info("rows done: %s", {k: v["n"] for k, v in table.items()})
  for row, seed, error in failed:
    logging.error("FAILED %s seed %d: %s (rerun the command to retry)", row, seed, error)
  if failed:
    raise SystemExit(1)


if __name__ == "__main__":
  from neuript_jax import host_memory
  host_memory.reexec_with_hugepages()
  app.run(main)
