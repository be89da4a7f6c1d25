r"""Fine-tuning sweeps over datasets x hyper-parameters x seeds, with paper-format summaries.

  python -m launch.sweep --datasets=tuev,tuab --seeds=0,1,2,3,4 \
      --grid='lr=1e-5,5e-6;c_layers=3,6' --data_root=/data/prepared --workdir=runs/sweep1 \
      --set=init_from=runs/pretrain --set=tuev:epochs=20 --parallel=2

Each run is a subprocess `python -m launch.finetune --config=<--base_config>
--workdir=<workdir>/runs/<dataset>/<setting>/seed<k> --config.<field>=<value> ...`; add
--dry_run to print those commands (one per line) without running anything.

Datasets: --datasets names folders of data_prep outputs: `--data=tuev=/path,tuab=/path`, or
else `<--data_root>/<name>`. Their manifest.json gives model.num_classes (label_names),
model.T (window samples), the geometry (model.data for the reference's dataset keys, e.g.
recipe tuev -> TUEV, else the manifest's channels) and select_metric (binary: auroc,
multi-class: cohen_kappa); see neuript_jax/evaluation/sweep.py.
Grid: --grid='key=v1,v2;key2=v3' (';' between keys, ',' between values, commas inside
brackets stay: merge_layers=(1,2,2),(1,4,2)) or --grid_file=grid.json ({"lr": [1e-5, 5e-6]})
or grid.py (GRID = {...}). Keys are short names (lr, c_layers, dropout, batch_size, epochs,
freeze_epochs, k, aux_weight, merge_layers, enc_expert, part, ... = sweep.SHORT_NAMES) or full
config paths (optim.lr, model.c_layers); a key that is not a field, or a value that does not
parse as the field's type, is an error naming it. --set=field=value (repeatable) is passed to
every run, --set=tuev:field=value to one dataset's runs; the grid wins over --set.

Resume: rerun the same command. Finished runs (results.json in the run folder) are skipped;
interrupted ones restart and launch.finetune resumes from their last checkpoint; failed ones
are retried (--noretry_failed: kept as failed). A failed run is recorded with its exit code and
stderr tail and the sweep goes on. Exit code: 0 when every run of this share is finished, 1
when one failed or was interrupted, 2 for bad flags (the message names the flag or grid key).
Clusters: `--shard=i/n` on node i of n (same flags everywhere) runs runs i, i+n, i+2n, ... of
the datasets x settings x seeds list; with a shared --workdir every node rebuilds the same
results.jsonl/summary from all run folders. SIGTERM is forwarded to the running runs (they
save a checkpoint) and the sweep exits.

Outputs in --workdir: results.jsonl (one line per run: dataset, setting, seed, hparams,
overrides, status, validation + test metrics, checkpoint, plots, error), summary.md and
summary.csv (per dataset and setting: test mean ± std over seeds in the paper's columns, the
best setting chosen on validation, the paper's NeurIPT numbers beside, links to each run's
PNGs). --summarize_only rebuilds them from the run folders without running anything. Runs share
compiled programs through JAX_COMPILATION_CACHE_DIR (default <workdir>/jax_cache). With
--parallel > 1 runs share the accelerators (XLA_PYTHON_CLIENT_PREALLOCATE=false) unless
--devices_per_run=K gives each parallel slot its own K GPUs (CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import sys

from absl import app, flags

DATASETS = flags.DEFINE_list("datasets", [], "dataset names (folders under --data_root or "
                             "names given in --data)")
SEEDS = flags.DEFINE_list("seeds", ["0"], "seeds; each setting runs once per seed")
GRID = flags.DEFINE_string("grid", "", "'key=v1,v2;key2=v3' (see the module docstring)")
GRID_FILE = flags.DEFINE_string("grid_file", "", "grid as .json or .py (GRID = {...})")
WORKDIR = flags.DEFINE_string("workdir", None, "sweep folder: runs/, results.jsonl, summaries")
DATA_ROOT = flags.DEFINE_string("data_root", "", "folder holding one data_prep output per "
                                "dataset name")
DATA = flags.DEFINE_string("data", "", "name=PATH,... data_prep outputs (wins over --data_root)")
BASE_CONFIG = flags.DEFINE_string("base_config", "neuript_jax/configs/finetune.py",
                                  "fine-tuning config file passed as --config to every run")
SET = flags.DEFINE_multi_string("set", [], "field=value or dataset:field=value for every run")
PROGRAM = flags.DEFINE_string("program", "launch.finetune", "python module each run executes")
PARALLEL = flags.DEFINE_integer("parallel", 1, "runs at a time on this machine")
DEVICES_PER_RUN = flags.DEFINE_integer("devices_per_run", 0, "GPUs per run: parallel slot k "
                                       "gets CUDA_VISIBLE_DEVICES k*K..k*K+K-1; 0 = all")
SHARD = flags.DEFINE_string("shard", "0/1", "i/n: run only share i of n (round robin)")
DRY_RUN = flags.DEFINE_bool("dry_run", False, "print the commands of this share and exit")
SUMMARIZE_ONLY = flags.DEFINE_bool("summarize_only", False, "rebuild results.jsonl, summary.md "
                                   "and summary.csv from the run folders; run nothing")
RETRY_FAILED = flags.DEFINE_bool("retry_failed", True, "rerun runs recorded as failed")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from neuript_jax.evaluation import sweep
  workdir = WORKDIR.value
  if not workdir:
    raise app.UsageError("--workdir is required")
  if SUMMARIZE_ONLY.value:
    rows = sweep.refresh(workdir)
    print(f"{len(rows)} runs -> {workdir}/results.jsonl, summary.md, summary.csv")
    return 0
  try:
    if not DATASETS.value:
      raise sweep.SweepError("--datasets is empty")
    if GRID.value and GRID_FILE.value:
      raise sweep.SweepError("give --grid or --grid_file, not both")
    try:
      seeds = [int(s) for s in SEEDS.value]
    except ValueError:
      raise sweep.SweepError(f"--seeds must be integers, got {SEEDS.value}") from None
    base = sweep.load_base_config(BASE_CONFIG.value)
    axes = (sweep.load_grid_file(GRID_FILE.value, base) if GRID_FILE.value
            else sweep.parse_grid(GRID.value, base))
    sets = sweep.parse_sets(SET.value, base, DATASETS.value)
    datasets = sweep.resolve_datasets(DATASETS.value, sweep.parse_data_flag(DATA.value),
                                      DATA_ROOT.value)
    runs = sweep.plan(datasets, axes, seeds, sets, workdir)
    index, count = sweep.parse_shard(SHARD.value)
  except sweep.SweepError as e:
    print(f"launch.sweep: {e}", file=sys.stderr)
    return 2
  mine = sweep.shard_runs(runs, index, count)
  if DRY_RUN.value:
    print(f"# {len(runs)} runs in the sweep, {len(mine)} in shard {index}/{count}")
    for run in mine:
      done = "# finished: " if sweep.is_finished(run.workdir) else ""
      print(done + sweep.shell_command(sweep.command(run, BASE_CONFIG.value, PROGRAM.value)))
    return 0
  sweeper = sweep.Sweeper(workdir, BASE_CONFIG.value, PROGRAM.value, PARALLEL.value,
                          RETRY_FAILED.value, DEVICES_PER_RUN.value)
  status = sweeper.execute(mine)
  bad = {k: v for k, v in status.items() if v != "finished"}
  print(f"{len(status) - len(bad)}/{len(status)} runs of shard {index}/{count} finished; "
        f"summary: {workdir}/summary.md")
  for k, v in sorted(bad.items()):
    print(f"  {v}: {k}")
  return 1 if bad else 0


if __name__ == "__main__":
  app.run(main)
