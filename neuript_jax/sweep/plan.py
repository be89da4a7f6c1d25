"""Fine-tuning sweeps: datasets x hyper-parameter settings x seeds, one subprocess per run.

A run is ``python -m <program> --config=<base config> --workdir=<DIR>/runs/<dataset>/<setting>/
seed<k> --config.<field>=<value> ...`` (program: ``launch.finetune``). ``launch/sweep.py`` is the
command line; this module plans, runs, resumes and records. Summaries: ``sweep_summary``.

Datasets. A dataset name is a folder name: its shards are ``--data=name=PATH`` or else
``<data_root>/<name>``, a ``data_prep`` output (``manifest.json``). From the manifest:
``model.num_classes`` = number of the recipe's ``label_names``, ``model.T`` = window samples
(or ``data.window_len`` when that is overridden), and the geometry: ``model.data`` = the
reference key of the recipe in ``DATASET_KEYS`` when its channel list is the manifest's, else
the first key of ``geometry.DATASET_CHANNELS`` with the same channel list (the Fp2-F3 typo of
the reference's TCP list is ignored), else ``model.channels``/``model.montage`` = the manifest's.
``select_metric`` = ``SELECT_METRIC[task]``: AUROC for binary tasks, Cohen's kappa for
multi-class ones (CBraMod's protocol, docs ANCHORS.md). Any of these can be overridden.

Overrides, later wins: dataset-derived, then ``--set`` (``field=value``, or ``name:field=value``
for one dataset only), then the grid, then ``seed``. Grid and ``--set`` keys are a short name
of ``SHORT_NAMES`` (``lr`` -> ``optim.lr``) or a full config path (``optim.lr``); every key must
be a leaf of the base config and every value must parse as that field's type, else
``SweepError`` names the key.

Run records. Each run folder holds ``sweep_run.json`` (what was run: dataset, setting, seed,
hyper-parameters, overrides, command, status, attempts, error), ``sweep_stdout.log`` and
``sweep_stderr.log`` (appended per attempt) and ``sweep.lock`` (an ``flock`` held by the run's
process while it runs). A run is finished iff its ``results.json`` exists; a rerun skips it.
An unfinished run is started again with the same command (``launch.finetune`` resumes from its
latest checkpoint). A run whose lock is held elsewhere is skipped as running. ``results.jsonl``
is rebuilt from all run folders under ``<DIR>/runs`` after every run (atomically), so shards run
on several nodes over a shared filesystem merge into one table.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from neuript_jax.files import atomic_write_text
from neuript_jax import geometry
from neuript_jax.data import pipeline

DEFAULT_BASE_CONFIG = "neuript_jax/configs/finetune.py"
DEFAULT_PROGRAM = "launch.finetune"
RESULTS = "results.json"          # written by the fine-tuning run (neuript_jax.train.finetune)
RUN_RECORD = "sweep_run.json"
RUN_LOCK = "sweep.lock"
STDOUT_LOG = "sweep_stdout.log"
STDERR_LOG = "sweep_stderr.log"
RESULTS_JSONL = "results.jsonl"
STDERR_TAIL_CHARS = 3000

# Short grid / --set names -> config fields (REFERENCE.md §5.3 Table 15 settings).
SHORT_NAMES = {
    "lr": "optim.lr", "schedule": "optim.schedule", "pct_start": "optim.pct_start",
    "warmup": "optim.pct_start", "div_factor": "optim.div_factor",
    "final_div_factor": "optim.final_div_factor", "weight_decay": "optim.weight_decay",
    "min_lr": "optim.min_lr", "batch_size": "data.global_batch_size",
    "window_len": "data.window_len", "epochs": "epochs", "total_steps": "total_steps",
    "freeze_epochs": "freeze_epochs", "k": "bal_bce_k", "bal_bce_k": "bal_bce_k",
    "loss": "loss", "label_smoothing": "label_smoothing", "aux_weight": "aux_weight",
    "patience": "early_stopping_patience", "init_from": "init_from",
    "c_layers": "model.c_layers", "part": "model.part", "dropout": "model.dropout",
    "merge_layers": "model.merge_layers", "enc_expert": "model.enc_expert",
    "noise_std": "model.noise_std", "w_importance": "model.w_importance",
    "top_k": "model.top_k",
}

# data_prep recipe name -> the reference's dataset key (geometry.DATASET_CHANNELS).
DATASET_KEYS = {
    "tuev": "TUEV", "tuab": "TUAB", "mental_arithmetic": "MentalArithmetic",
    "mumtaz": "Mumtaz", "physionet_p300": "PhysioP300", "sleepedfx": "Sleep-EDFx",
    "seedv": "SEED-V", "bcic2a": "BCICIV-2A",
}

SELECT_METRIC = {"binary": "auroc", "multiclass": "cohen_kappa"}
_RESERVED = {"seed": "use --seeds", "data.sources": "use --data or --data_root"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class SweepError(ValueError):
  """Bad sweep input (grid, dataset, flag); the message names the key, flag or file."""


# -- base config and values ---------------------------------------------------------------------

def load_base_config(path: str):
  """``get_config()`` of a config file (ml_collections ConfigDict)."""
  if not os.path.isfile(path):
    raise SweepError(f"--base_config: no such file {path}")
  spec = importlib.util.spec_from_file_location("_sweep_base_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise SweepError(f"--base_config {path} has no get_config()")
  return module.get_config()


def resolve_key(key: str, base) -> str:
  """Short name or config path -> the config path of a leaf field of `base`."""
  path = SHORT_NAMES.get(key, key)
  if path in _RESERVED:
    raise SweepError(f"{key!r} cannot be swept or set here: {_RESERVED[path]}")
  node = base
  parts = path.split(".")
  for i, part in enumerate(parts):
    if not hasattr(node, "keys") or part not in node.keys():
      raise SweepError(f"{key!r} is neither a short name ({', '.join(sorted(SHORT_NAMES))}) "
                       f"nor a field of the base config (no {'.'.join(parts[:i + 1])!r})")
    if i < len(parts) - 1:
      node = node[part]
  if hasattr(node[parts[-1]], "keys"):
    raise SweepError(f"{key!r} ({path}) is a group of fields, not a field; name one of "
                     f"{', '.join(sorted(node[parts[-1]].keys()))}")
  return path


def _field_type(base, path: str):
  *parents, leaf = path.split(".")
  node = base
  for p in parents:
    node = node[p]
  return node.get_type(leaf)


def check_value(key: str, path: str, text: str, base) -> None:
  """Raise SweepError unless `text` parses as the type of field `path`, as the run's
  --config.<path>=<text> flag will parse it."""
  from absl import flags
  from ml_collections.config_flags import tuple_parser
  typ = _field_type(base, path)
  parsers = {int: flags.IntegerParser(), float: flags.FloatParser(),
             bool: flags.BooleanParser(), tuple: tuple_parser.TupleParser()}
  if typ in parsers:
    try:
      parsers[typ].parse(text)
    except Exception as e:  # absl raises ValueError or its own Error types
      raise SweepError(f"{key!r}: value {text!r} is not a valid {typ.__name__} for config "
                       f"field {path} ({e})") from None


def value_text(value) -> str:
  """A JSON/Python value -> the text of a --config flag (tuples/lists as '(a,b,)')."""
  if isinstance(value, str):
    return value
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return repr(value)


# -- grid -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GridAxis:
  """One swept field: `name` as written by the user, its config `path`, value texts."""
  name: str
  path: str
  values: tuple[str, ...]


def split_top_level(text: str, sep: str) -> list[str]:
  """Split on `sep` outside brackets and quotes: '1e-5,(1,2),"a,b"' -> 3 parts."""
  parts, depth, quote, cur = [], 0, None, []
  for ch in text:
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == sep and depth == 0:
      parts.append("".join(cur))
      cur = []
      continue
    cur.append(ch)
  parts.append("".join(cur))
  return parts


def parse_grid(text: str, base) -> list[GridAxis]:
  """'lr=1e-5,5e-6;c_layers=3,6' -> axes; ';' separates keys, ',' values (commas inside
  brackets or quotes belong to the value, e.g. merge_layers=(1,2,2),(1,4,2))."""
  axes = [make_axis(key, [v.strip() for v in split_top_level(values, ",")], base)
          for key, values in key_values(text, ";", "--grid", "key=value1,value2,...")]
  return _check_axes(axes)


def key_values(text: str, sep: str, flag: str, form: str) -> list[tuple[str, str]]:
  """'a=1<sep>b=2' -> [('a', '1'), ('b', '2')] (stripped; empty entries skipped)."""
  out = []
  for entry in split_top_level(text or "", sep):
    entry = entry.strip()
    if not entry:
      continue
    if "=" not in entry:
      raise SweepError(f"{flag} entry {entry!r}: expected {form}")
    key, value = entry.split("=", 1)
    out.append((key.strip(), value.strip()))
  return out


def load_grid_file(path: str, base) -> list[GridAxis]:
  """A grid from a .json file ({"lr": [1e-5, 5e-6], "merge_layers": [[1,2,2]]}) or a .py file
  defining GRID = {...} (same shape). Keys keep the file's order."""
  if not os.path.isfile(path):
    raise SweepError(f"--grid_file: no such file {path}")
  if path.endswith(".json"):
    with open(path) as f:
      grid = json.load(f)
  elif path.endswith(".py"):
    spec = importlib.util.spec_from_file_location("_sweep_grid", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    grid = getattr(module, "GRID", None)
  else:
    raise SweepError(f"--grid_file {path}: expected a .json or .py file")
  if not isinstance(grid, dict):
    raise SweepError(f"--grid_file {path}: expected a dict of key -> list of values (GRID in a "
                     ".py file)")
  axes = []
  for key, values in grid.items():
    if not isinstance(values, (list, tuple)):
      raise SweepError(f"--grid_file {path}: key {key!r} needs a list of values, got "
                       f"{values!r}")
    axes.append(make_axis(str(key), [value_text(v) for v in values], base))
  return _check_axes(axes)


def make_axis(key: str, values: Sequence[str], base) -> GridAxis:
  path = resolve_key(key, base)
  if not values or any(v == "" for v in values):
    raise SweepError(f"grid key {key!r}: empty value in {list(values)}")
  if len(set(values)) != len(values):
    raise SweepError(f"grid key {key!r}: repeated value in {list(values)}")
  for v in values:
    check_value(key, path, v, base)
  return GridAxis(key, path, tuple(values))


def _check_axes(axes: list[GridAxis]) -> list[GridAxis]:
  seen = {}
  for a in axes:
    if a.path in seen:
      raise SweepError(f"grid keys {seen[a.path]!r} and {a.name!r} both set {a.path}")
    seen[a.path] = a.name
  return axes


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "-"


def settings(axes: Sequence[GridAxis]) -> list[tuple[str, dict]]:
  """Every combination as (setting name, {axis name: value text}), first axis slowest. The name
  'lr=1e-5,c_layers=3' is also the run folder; no grid -> one setting 'default'."""
  combos: list[list[tuple[str, str]]] = [[]]
  for a in axes:
    combos = [c + [(a.name, v)] for c in combos for v in a.values]
  out, names = [], {}
  for c in combos:
    name = ",".join(f"{k}={_slug(v)}" for k, v in c) or "default"
    if name in names:
      raise SweepError(f"grid values {names[name]} and {dict(c)} give the same folder name "
                       f"{name!r}")
    names[name] = dict(c)
    out.append((name, dict(c)))
  return out


# -- --set ----------------------------------------------------------------------------------------

def parse_sets(entries: Iterable[str], base, datasets: Sequence[str]) -> dict:
  """['optim.lr=1e-5', 'tuev:epochs=20'] -> {None: {path: text}, 'tuev': {path: text}}."""
  out: dict = {}
  for entry in entries or ():
    if "=" not in entry:
      raise SweepError(f"--set {entry!r}: expected field=value or dataset:field=value")
    key, value = entry.split("=", 1)
    scope = None
    if ":" in key:
      scope, key = key.split(":", 1)
      if scope not in datasets:
        raise SweepError(f"--set {entry!r}: dataset {scope!r} is not in --datasets "
                         f"({', '.join(datasets)})")
    path = resolve_key(key.strip(), base)
    check_value(key, path, value, base)
    out.setdefault(scope, {})[path] = value
  return out


# -- datasets -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Dataset:
  """A prepared dataset and the config overrides derived from its manifest."""
  name: str
  path: str
  recipe: str
  num_classes: int
  task: str                 # "binary" | "multiclass"
  window_samples: int
  overrides: dict           # config path -> flag text
  paper_key: str | None     # key of paper_results.NEURIPT (the recipe name) or None


def parse_data_flag(text: str) -> dict:
  """'tuev=/data/tuev,tuab=/data/tuab' -> {name: path}."""
  out = {}
  for name, path in key_values(text, ",", "--data", "name=PATH"):
    if name in out:
      raise SweepError(f"--data names dataset {name!r} twice")
    out[name] = path
  return out


def _untypo(names) -> tuple[str, ...]:
  return tuple("Fp1-F3" if n == "Fp2-F3" else n for n in names)


def geometry_overrides(recipe: str, channels, montage: str, where: str) -> dict:
  """model.data (a reference key with this channel list) or model.channels + model.montage."""
  if not channels:
    key = DATASET_KEYS.get(recipe)
    if key is None:
      raise SweepError(f"{where}: channels vary between recordings and recipe {recipe!r} has "
                       "no reference key; set --set=<dataset>:model.channels=... and "
                       "model.montage")
    return {"model.data": key}
  wanted = _untypo(channels)
  candidates = [DATASET_KEYS[recipe]] if recipe in DATASET_KEYS else []
  candidates += list(geometry.DATASET_CHANNELS)
  for key in candidates:
    if _untypo(geometry.DATASET_CHANNELS[key][0]) == wanted:
      return {"model.data": key}
  return {"model.channels": value_text(tuple(channels)),
          "model.montage": montage or "standard_1020"}


def load_dataset(name: str, path: str) -> Dataset:
  """A Dataset from a data_prep output folder (see the module docstring)."""
  if not _NAME_RE.match(name):
    raise SweepError(f"dataset name {name!r}: use letters, digits, '.', '_', '+', '-'")
  manifest_path = Path(path) / pipeline.MANIFEST
  if not manifest_path.is_file():
    raise SweepError(f"dataset {name!r}: no {manifest_path} (a data_prep output folder is "
                     "expected; see --data / --data_root)")
  manifest = json.loads(manifest_path.read_text())
  recipe = manifest.get("recipe", {}).get("name", "")
  labels = list(manifest.get("recipe", {}).get("config", {}).get("label_names") or [])
  if len(labels) < 2:
    raise SweepError(f"dataset {name!r}: {manifest_path} lists {len(labels)} label_names; "
                     "fine-tuning needs a labelled conversion (a recipe with label_names)")
  window = manifest.get("window_samples")
  if not isinstance(window, int) or window < 1:
    raise SweepError(f"dataset {name!r}: {manifest_path} has no window_samples")
  task = "binary" if len(labels) == 2 else "multiclass"
  # Double quotes inside: the shell-quoted command stays readable.
  overrides = {"data.sources": f"(({json.dumps(str(Path(path).resolve()))}, 1.0),)"}
  overrides.update(geometry_overrides(recipe, manifest.get("channels"),
                                      manifest.get("montage", ""), str(manifest_path)))
  overrides["model.num_classes"] = str(len(labels))
  overrides["model.T"] = str(window)
  overrides["select_metric"] = SELECT_METRIC[task]
  from neuript_jax.evaluation import paper_results
  paper_key = recipe if paper_results.neuript_result(recipe) else None
  return Dataset(name, str(Path(path).resolve()), recipe, len(labels), task, window, overrides,
                 paper_key)


def resolve_datasets(names: Sequence[str], data: dict, data_root: str) -> list[Dataset]:
  unknown = sorted(set(data) - set(names))
  if unknown:
    raise SweepError(f"--data names {unknown} that are not in --datasets")
  out = []
  for name in names:
    if name in data:
      path = data[name]
    elif data_root:
      path = os.path.join(data_root, name)
    else:
      raise SweepError(f"dataset {name!r}: give --data={name}=PATH or --data_root")
    out.append(load_dataset(name, path))
  return out


# -- the plan -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Run:
  """One fine-tuning run of the sweep."""
  dataset: Dataset
  setting: str
  hparams: dict             # {grid key as written: value text}
  seed: int
  overrides: dict           # config path -> flag text, in flag order
  workdir: str              # <sweep dir>/runs/<dataset>/<setting>/seed<k>

  @property
  def run_id(self) -> str:
    return f"{self.dataset.name}/{self.setting}/seed{self.seed}"


def run_overrides(dataset: Dataset, sets: dict, axes: Sequence[GridAxis], hparams: dict,
                  seed: int) -> dict:
  """Config overrides of one run: dataset-derived < --set < --set name: < grid < seed."""
  user = dict(sets.get(None, {}))
  user.update(sets.get(dataset.name, {}))
  user.update({a.path: hparams[a.name] for a in axes})
  derived = dict(dataset.overrides)
  if "model.data" in user or "model.channels" in user:
    for k in ("model.data", "model.channels", "model.montage"):
      derived.pop(k, None)
  if "model.T" not in user and user.get("data.window_len", "None") != "None":
    derived["model.T"] = user["data.window_len"]
  out = {**derived, **user}
  out["seed"] = str(seed)
  return out


def plan(datasets: Sequence[Dataset], axes: Sequence[GridAxis], seeds: Sequence[int],
         sets: dict, sweep_dir: str) -> list[Run]:
  """Every run, in the order datasets x settings x seeds (the order --shard splits)."""
  if len(set(seeds)) != len(seeds):
    raise SweepError(f"--seeds has repeats: {list(seeds)}")
  if len({d.name for d in datasets}) != len(datasets):
    raise SweepError(f"--datasets has repeats: {[d.name for d in datasets]}")
  runs = []
  for d in datasets:
    for name, hparams in settings(axes):
      for seed in seeds:
        runs.append(Run(d, name, hparams, int(seed),
                        run_overrides(d, sets, axes, hparams, int(seed)),
                        os.path.join(os.path.abspath(sweep_dir), "runs", d.name, name,
                                     f"seed{seed}")))
  return runs


def parse_shard(text: str) -> tuple[int, int]:
  """'i/n' -> (i, n) with 0 <= i < n."""
  m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
  if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
    raise SweepError(f"--shard={text!r}: expected i/n with 0 <= i < n (e.g. 0/4)")
  return int(m.group(1)), int(m.group(2))


def shard_runs(runs: Sequence[Run], index: int, count: int) -> list[Run]:
  """Shard `index` of `count`: runs index, index + count, ... of the plan (round robin, so
  every node given the same flags gets a disjoint, deterministic share)."""
  return list(runs[index::count])


def command(run: Run, base_config: str, program: str = DEFAULT_PROGRAM,
            python: str = sys.executable) -> list[str]:
  return [python, "-m", program, f"--config={base_config}", f"--workdir={run.workdir}",
          *(f"--config.{k}={v}" for k, v in run.overrides.items())]


def shell_command(cmd: Sequence[str]) -> str:
  return " ".join(shlex.quote(c) for c in cmd)


# -- records --------------------------------------------------------------------------------------

def is_finished(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, RESULTS))


def _write_json(path: str, obj) -> None:
  atomic_write_text(Path(path), json.dumps(obj, indent=1, default=str) + "\n")


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def _lock_is_held(workdir: str) -> bool:
  path = os.path.join(workdir, RUN_LOCK)
  if not os.path.exists(path):
    return False
  fd = os.open(path, os.O_RDWR)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    return True
  finally:
    os.close(fd)
  return False


def _plots(workdir: str, sweep_dir: str) -> list[str]:
  """*.png under a run folder (not inside checkpoints), relative to the sweep folder."""
  out = []
  for p in sorted(Path(workdir).rglob("*.png")):
    rel = p.relative_to(workdir).parts
    if rel[0] in ("checkpoints", "best"):
      continue
    out.append(os.path.relpath(p, sweep_dir))
  return out


def run_row(workdir: str, sweep_dir: str) -> dict | None:
  """The results.jsonl row of one run folder (None if it has no sweep_run.json)."""
  record = _read_json(os.path.join(workdir, RUN_RECORD))
  if record is None:
    return None
  row = {k: record.get(k) for k in ("dataset", "setting", "seed", "hparams", "overrides",
                                    "task", "num_classes", "paper_key", "recipe", "attempts",
                                    "command")}
  row["workdir"] = os.path.relpath(workdir, sweep_dir)
  results = _read_json(os.path.join(workdir, RESULTS)) if is_finished(workdir) else None
  if results is not None:
    row["status"] = "finished"
    for k in ("validation", "test", "selected_step", "select_metric", "checkpoint",
              "stopped_early", "steps_trained"):
      row[k] = results.get(k)
    row["num_classes"] = results.get("num_classes", row["num_classes"])
  else:
    status = record.get("status", "interrupted")
    if status == "running" and not _lock_is_held(workdir):
      status = "interrupted"
    row["status"] = status
    row["select_metric"] = record.get("overrides", {}).get("select_metric")
    if status == "failed":
      row["error"] = record.get("error")
  row["plots"] = _plots(workdir, sweep_dir)
  return row


def collect_rows(sweep_dir: str) -> list[dict]:
  """Rows of every run folder under <sweep_dir>/runs, sorted by dataset, setting, seed."""
  rows = []
  for rec in sorted(Path(sweep_dir, "runs").glob(f"*/*/seed*/{RUN_RECORD}")):
    row = run_row(str(rec.parent), sweep_dir)
    if row is not None:
      rows.append(row)
  rows.sort(key=lambda r: (str(r["dataset"]), str(r["setting"]), int(r["seed"] or 0)))
  return rows


def write_results_jsonl(sweep_dir: str, rows: Sequence[dict]) -> str:
  path = os.path.join(sweep_dir, RESULTS_JSONL)
  atomic_write_text(Path(path), "".join(json.dumps(r, default=str) + "\n" for r in rows))
  return path


def read_results_jsonl(path: str) -> list[dict]:
  if not os.path.isfile(path):
    raise SweepError(f"no {path}: nothing to summarize")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def refresh(sweep_dir: str) -> list[dict]:
  """Rebuild results.jsonl from the run folders, then summary.md / summary.csv from it."""
  from neuript_jax.evaluation import sweep_summary
  rows = collect_rows(sweep_dir)
  write_results_jsonl(sweep_dir, rows)
  sweep_summary.write_summary(read_results_jsonl(os.path.join(sweep_dir, RESULTS_JSONL)),
                              sweep_dir)
  return rows


# -- execution ------------------------------------------------------------------------------------

def _die_with_parent():
  """preexec_fn: the run gets SIGKILL if the sweep process dies (Linux prctl), so a killed
  sweep leaves no orphan writing into a run folder that its rerun will use."""
  try:
    import ctypes
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
  except OSError:
    pass


def _tail(path: str, start: int, chars: int = STDERR_TAIL_CHARS) -> str:
  try:
    with open(path, "rb") as f:
      f.seek(start)
      data = f.read()
  except OSError:
    return ""
  return data.decode("utf-8", "replace")[-chars:]


@dataclasses.dataclass
class _Active:
  run: Run
  proc: subprocess.Popen
  lock_fd: int
  stderr_start: int
  record: dict
  slot: int


class Sweeper:
  """Runs a list of runs with up to `parallel` processes; see `execute`."""

  def __init__(self, sweep_dir: str, base_config: str, program: str = DEFAULT_PROGRAM,
               parallel: int = 1, retry_failed: bool = True, devices_per_run: int = 0,
               env: dict | None = None, log: Callable[[str], None] = print):
    if parallel < 1:
      raise SweepError(f"--parallel must be >= 1, got {parallel}")
    if devices_per_run < 0:
      raise SweepError(f"--devices_per_run must be >= 0, got {devices_per_run}")
    self.sweep_dir = os.path.abspath(sweep_dir)
    self.base_config = base_config
    self.program = program
    self.parallel = parallel
    self.retry_failed = retry_failed
    self.env = dict(os.environ if env is None else env)
    # Runs of one setting compile the same programs: share them through JAX's disk cache.
    self.env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(self.sweep_dir, "jax_cache"))
    if parallel > 1:   # several processes on one accelerator must not each take 75% of it
      self.env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    self.log = log
    self.stopping = False
    # Slot k of `parallel` sees accelerators k*K .. k*K+K-1 (of CUDA_VISIBLE_DEVICES if set).
    self.devices_per_run = devices_per_run
    listed = self.env.get("CUDA_VISIBLE_DEVICES", "")
    self.devices = listed.split(",") if listed else [str(i) for i in
                                                     range(parallel * devices_per_run)]
    if devices_per_run and len(self.devices) < parallel * devices_per_run:
      raise SweepError(f"--parallel={parallel} x --devices_per_run={devices_per_run} needs "
                       f"{parallel * devices_per_run} devices; CUDA_VISIBLE_DEVICES lists "
                       f"{len(self.devices)}")
    self.free_slots = list(range(parallel))

  def _start(self, run: Run, slot: int) -> _Active | None:
    os.makedirs(run.workdir, exist_ok=True)
    lock_fd = os.open(os.path.join(run.workdir, RUN_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(5):   # a status check elsewhere holds the lock for an instant
      try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if attempt == 4:
          os.close(lock_fd)
          self.log(f"[sweep] {run.run_id}: running in another process (locked); skipped")
          return None
        time.sleep(0.2)
    if is_finished(run.workdir):   # finished while we waited for the lock
      os.close(lock_fd)
      return None
    previous = _read_json(os.path.join(run.workdir, RUN_RECORD)) or {}
    cmd = command(run, self.base_config, self.program)
    record = {"dataset": run.dataset.name, "setting": run.setting, "seed": run.seed,
              "hparams": run.hparams, "overrides": run.overrides, "recipe": run.dataset.recipe,
              "task": run.dataset.task, "num_classes": run.dataset.num_classes,
              "paper_key": run.dataset.paper_key, "command": shell_command(cmd),
              "status": "running", "attempts": int(previous.get("attempts", 0)) + 1,
              "started": time.time()}
    env = self.env
    if self.devices_per_run:
      k = self.devices_per_run
      env = dict(env, CUDA_VISIBLE_DEVICES=",".join(self.devices[slot * k:(slot + 1) * k]))
      record["devices"] = env["CUDA_VISIBLE_DEVICES"]
    _write_json(os.path.join(run.workdir, RUN_RECORD), record)
    out_path, err_path = (os.path.join(run.workdir, n) for n in (STDOUT_LOG, STDERR_LOG))
    header = f"=== sweep attempt {record['attempts']}: {record['command']}\n"
    for p in (out_path, err_path):
      with open(p, "a") as f:
        f.write(header)
    stderr_start = os.path.getsize(err_path)
    with open(out_path, "a") as out, open(err_path, "a") as err:
      proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                              env=env, pass_fds=(lock_fd,),
                              preexec_fn=_die_with_parent)
    self.log(f"[sweep] started {run.run_id} (attempt {record['attempts']}, pid {proc.pid})")
    return _Active(run, proc, lock_fd, stderr_start, record, slot)

  def _finish(self, a: _Active) -> str:
    rc = a.proc.returncode
    os.close(a.lock_fd)
    self.free_slots.append(a.slot)
    record = dict(a.record, exit_code=rc, ended=time.time())
    if is_finished(a.run.workdir):
      record["status"] = "finished"
      record.pop("error", None)
    elif self.stopping:
      record["status"] = "interrupted"
    else:
      tail = _tail(os.path.join(a.run.workdir, STDERR_LOG), a.stderr_start)
      reason = (f"exit code {rc}" if rc else f"exit code 0 without {RESULTS}")
      record["status"] = "failed"
      record["error"] = {"exit_code": rc, "reason": reason, "stderr_tail": tail}
    _write_json(os.path.join(a.run.workdir, RUN_RECORD), record)
    took = record["ended"] - record["started"]
    self.log(f"[sweep] {record['status']} {a.run.run_id} in {took:.0f} s"
             + (f" ({record['error']['reason']}; see {STDERR_LOG})"
                if record["status"] == "failed" else ""))
    return record["status"]

  def _request_stop(self, active: dict) -> None:
    self.stopping = True
    self.log("[sweep] SIGTERM: stopping the running runs (they checkpoint and exit); "
             "rerun the same command to resume")
    for a in active.values():
      if a.proc.poll() is None:
        a.proc.send_signal(signal.SIGTERM)

  def execute(self, runs: Sequence[Run]) -> dict:
    """Run every unfinished run of `runs`; returns {run_id: status}. Finished runs are skipped,
    failed runs are retried if retry_failed; results.jsonl and the summary are refreshed after
    each run. SIGTERM forwards SIGTERM to the runs and stops launching new ones."""
    os.makedirs(self.sweep_dir, exist_ok=True)
    status: dict = {}
    pending: collections.deque = collections.deque()
    for run in runs:
      rec = _read_json(os.path.join(run.workdir, RUN_RECORD)) or {}
      if is_finished(run.workdir):
        status[run.run_id] = "finished"
      elif rec.get("status") == "failed" and not self.retry_failed:
        status[run.run_id] = "failed"
      else:
        pending.append(run)
    self.log(f"[sweep] {len(runs)} runs in this share: {len(runs) - len(pending)} already "
             f"done or skipped, {len(pending)} to run, {self.parallel} at a time")
    active: dict = {}
    previous = signal.signal(signal.SIGTERM, lambda *_: self._request_stop(active))
    try:
      while pending or active:
        while pending and len(active) < self.parallel and not self.stopping:
          run = pending.popleft()
          slot = min(self.free_slots)
          a = self._start(run, slot)
          if a is None:
            status[run.run_id] = "finished" if is_finished(run.workdir) else "running"
          else:
            self.free_slots.remove(slot)
            active[run.run_id] = a
        if self.stopping:
          for run in pending:
            status[run.run_id] = "not started"
          pending.clear()
        done = [k for k, a in active.items() if a.proc.poll() is not None]
        for k in done:
          status[k] = self._finish(active.pop(k))
          refresh(self.sweep_dir)
        if not done:
          time.sleep(0.2)
    finally:
      signal.signal(signal.SIGTERM, previous)
    refresh(self.sweep_dir)
    return status
