r"""Fine-tuning sweeps over datasets x hyper-parameters x seeds, with paper-format summaries.

  python -m launch.sweep --datasets=tuev,tuab --size=paper --seeds=0,1,2,3,4 \
      --grid='optim.lr=1e-5,5e-6;model.c_layers=3,6' --data_root=/data/prepared \
      --set=init_from=runs/pretrain --set=tuev:epochs=20 --workdir=runs/sweep1 --parallel=2

Each run is a subprocess `python -m launch.finetune --config=<dataset's config>
--workdir=<workdir>/runs/<dataset>/<setting>/seed<k> --config.<path>=<value> ...`; add
--dry_run to print those commands (one per line) without running anything.

Datasets: --datasets names folders of data_prep outputs: `--data=tuev=/path,tuab=/path`, or
else `<--data_root>/<name>`. A dataset's runs start from the config file of its manifest's
recipe, `<--configs_dir>/<recipe>.py:<--size>` (neuript_jax/configs/downstream/tuev.py:paper:
the paper's model, classes, window, loss, optimizer, schedule and selection metric for TUEV);
the sweep adds data.sources. A recipe without such a file (e.g. `generic`) starts from
--base_config with model.num_classes, model.T, the geometry and select_metric read from the
manifest. Every run's config must agree with its manifest (classes, window, channels).
Grid: --grid='path=v1,v2;path2=v3' (';' between keys, ',' between values, commas inside
brackets stay: model.merge_layers=(1,2,2),(1,4,2)) or --grid_file=grid.json
({"optim.lr": [1e-5, 5e-6]}) or grid.py (GRID = {...}). Keys are config paths, the same paths
as --config.<path>=<value> of launch.finetune.
--set=path=value (repeatable) is `--config.<path>=<value>` for every run, --set=tuev:path=value
for one dataset's runs; the grid wins over --set. A key that is not a config field, or a value
that the field's --config flag rejects, stops the sweep at start with an error naming it.

Resume: rerun the same command. Finished runs (results.json in the run folder) are skipped;
interrupted ones restart and launch.finetune resumes from their last checkpoint; failed ones
are retried (--noretry_failed: kept as failed). A failed run is recorded with its exit code and
stderr tail and the sweep goes on. Exit code: 0 when every run of this share is finished, 1
when one failed or was interrupted, 2 for bad flags (the message names the flag and value).
Clusters: `--shard=i/n` on node i of n (same flags everywhere) runs runs i, i+n, i+2n, ... of
the datasets x settings x seeds list; with a shared --workdir every node rebuilds the same
results.jsonl/summary from all run folders. SIGTERM is forwarded to the running runs (they
save a checkpoint) and the sweep exits.

Outputs in --workdir: per run folder sweep_run.json (the command, config and overrides, status)
and sweep_config.json (the resolved config); results.jsonl (one line per run: dataset,
setting, seed, hparams, config, overrides, status, validation + test metrics, checkpoint,
plots, error), summary.md and summary.csv (per dataset and setting: test mean ± std over seeds
in the paper's columns, the best setting chosen on validation, the paper's NeurIPT numbers
beside, links to each run's PNGs). --summarize_only rebuilds them from the run folders without
running anything. Runs share compiled programs through JAX_COMPILATION_CACHE_DIR (default
<workdir>/jax_cache). With --parallel > 1 runs share the accelerators
(XLA_PYTHON_CLIENT_PREALLOCATE=false) unless --devices_per_run=K gives each parallel slot its
own K GPUs (CUDA_VISIBLE_DEVICES). See neuript_jax/sweep/.
"""

from __future__ import annotations

import sys

from absl import app, flags

DATASETS = flags.DEFINE_list("datasets", [], "dataset names (folders under --data_root or "
                             "names given in --data)")
SIZE = flags.DEFINE_enum("size", "paper", ["paper", "cpu"], "argument of every dataset's "
                         "config file: <configs_dir>/<recipe>.py:<size>")
CONFIGS_DIR = flags.DEFINE_string("configs_dir", "neuript_jax/configs/downstream",
                                  "folder of per-dataset fine-tuning configs, <recipe>.py")
BASE_CONFIG = flags.DEFINE_string("base_config", "neuript_jax/configs/finetune.py",
                                  "FILE[:ARG] for datasets whose recipe has no config file")
SEEDS = flags.DEFINE_list("seeds", ["0"], "seeds (distinct integers >= 0); each setting runs "
                          "once per seed")
GRID = flags.DEFINE_string("grid", "", "'path=v1,v2;path2=v3' over config paths (see the "
                           "module docstring)")
GRID_FILE = flags.DEFINE_string("grid_file", "", "grid as .json or .py (GRID = {...})")
WORKDIR = flags.DEFINE_string("workdir", None, "sweep folder: runs/, results.jsonl, summaries")
DATA_ROOT = flags.DEFINE_string("data_root", "", "folder holding one data_prep output per "
                                "dataset name")
DATA = flags.DEFINE_string("data", "", "name=PATH,... data_prep outputs (wins over --data_root)")
SET = flags.DEFINE_multi_string("set", [], "config override path=value (= --config.path=value "
                                "of every run) or dataset:path=value (that dataset's runs)")
PROGRAM = flags.DEFINE_string("program", "launch.finetune", "python module each run executes")
PARALLEL = flags.DEFINE_integer("parallel", 1, "runs at a time on this machine")
DEVICES_PER_RUN = flags.DEFINE_integer("devices_per_run", 0, "GPUs per run: parallel slot k "
                                       "gets CUDA_VISIBLE_DEVICES k*K..k*K+K-1; 0 = all")
SHARD = flags.DEFINE_string("shard", "0/1", "i/n: run only share i of n (round robin)")
DRY_RUN = flags.DEFINE_bool("dry_run", False, "print the commands of this share and exit")
SUMMARIZE_ONLY = flags.DEFINE_bool("summarize_only", False, "rebuild results.jsonl, summary.md "
                                   "and summary.csv from the run folders; run nothing")
RETRY_FAILED = flags.DEFINE_bool("retry_failed", True, "rerun runs recorded as failed")


def plan_from_flags():
  """(runs, this share's runs, shard index, shard count, sweeper) from the flags; SweepError
  on any bad flag, before anything runs."""
  from neuript_jax.sweep import datasets as datasets_lib
  from neuript_jax.sweep import plan, runner
  from neuript_jax.sweep.overrides import SweepError
  names = plan.parse_dataset_names(DATASETS.value)
  seeds = plan.parse_seeds(SEEDS.value)
  index, count = plan.parse_shard(SHARD.value)
  if GRID.value and GRID_FILE.value:
    raise SweepError("give --grid or --grid_file, not both")
  sweeper = runner.Sweeper(WORKDIR.value, PROGRAM.value, PARALLEL.value, RETRY_FAILED.value,
                           DEVICES_PER_RUN.value)
  datasets = datasets_lib.resolve_datasets(names, datasets_lib.parse_data_flag(DATA.value),
                                           DATA_ROOT.value, CONFIGS_DIR.value, SIZE.value,
                                           BASE_CONFIG.value)
  specs = {d.config_spec: d.config for d in datasets}
  axes = (plan.load_grid_file(GRID_FILE.value, specs) if GRID_FILE.value
          else plan.parse_grid(GRID.value, specs))
  sets = plan.parse_sets(SET.value, {d.name: (d.config_spec, d.config) for d in datasets})
  runs = plan.plan(datasets, axes, seeds, sets, WORKDIR.value)
  return datasets, runs, plan.shard_runs(runs, index, count), index, count, sweeper


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from neuript_jax.sweep import plan, records
  from neuript_jax.sweep.overrides import SweepError
  workdir = WORKDIR.value
  if not workdir:
    raise app.UsageError("--workdir is required")
  if SUMMARIZE_ONLY.value:
    rows = records.refresh(workdir)
    print(f"{len(rows)} runs -> {workdir}/results.jsonl, summary.md, summary.csv")
    return 0
  try:
    datasets, runs, mine, index, count, sweeper = plan_from_flags()
  except SweepError as e:
    print(f"launch.sweep: {e}", file=sys.stderr)
    return 2
  if DRY_RUN.value:
    print(f"# {len(runs)} runs in the sweep, {len(mine)} in shard {index}/{count}")
    for d in datasets:
      how = "" if d.from_config_file else " + settings read from its manifest"
      print(f"# {d.name}: {d.path} (recipe {d.recipe or '?'}), config {d.config_spec}{how}")
    for run in mine:
      done = "# finished: " if records.is_finished(run.workdir) else ""
      print(done + plan.shell_command(plan.command(run, PROGRAM.value)))
    return 0
  status = sweeper.execute(mine)
  bad = {k: v for k, v in status.items() if v != "finished"}
  print(f"{len(status) - len(bad)}/{len(status)} runs of shard {index}/{count} finished; "
        f"summary: {workdir}/summary.md")
  for k, v in sorted(bad.items()):
    print(f"  {v}: {k}")
  return 1 if bad else 0


if __name__ == "__main__":
  app.run(main)
