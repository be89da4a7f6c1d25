"""The sweep's plan: datasets x grid settings x seeds, one fine-tuning run each.

A run is ``python -m <program> --config=<dataset's config> --workdir=<DIR>/runs/<dataset>/
<setting>/seed<k> --config.<path>=<value> ...`` (program: ``launch.finetune``). Its overrides,
later wins: the dataset's (``data.sources``, and for a dataset without a config file the
settings read from its manifest; ``datasets``), then ``--set`` (``path=value``, or
``name:path=value`` for one dataset), then the grid setting, then ``seed``. ``--set`` and grid
keys are config paths, the paths of ``--config.<path>=<value>``; a key that is not a leaf field
of a dataset's config, or a value that its ``--config`` flag would reject, is a SweepError that
names the flag, the key and the value. Every run's config is resolved at planning time (as the
run will resolve it) and checked against the dataset's manifest (``Dataset.check``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shlex
import sys
from typing import Any, Iterable, Sequence

from neuript_jax.sweep.overrides import SweepError, check_path, resolve, value_text

DEFAULT_PROGRAM = "launch.finetune"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# -- --datasets, --seeds, --shard ---------------------------------------------------------------

def parse_dataset_names(names: Sequence[str]) -> list[str]:
  """--datasets entries, checked: at least one, each a folder-safe name, no repeats."""
  flag = f"--datasets={','.join(names)}"
  if not names:
    raise SweepError("--datasets is empty: name at least one dataset")
  seen = set()
  for name in names:
    if not NAME_RE.match(name):
      raise SweepError(f"{flag}: name {name!r}: use letters, digits, '.', '_', '+', '-' "
                       "(it is a folder name)")
    if name in seen:
      raise SweepError(f"{flag}: {name!r} is named twice")
    seen.add(name)
  return list(names)


def parse_seeds(values: Sequence[str]) -> list[int]:
  """--seeds entries -> distinct non-negative integers."""
  flag = f"--seeds={','.join(values)}"
  if not values:
    raise SweepError("--seeds is empty: give at least one seed")
  seeds = []
  for v in values:
    try:
      seed = int(v)
    except ValueError:
      raise SweepError(f"{flag}: {v!r} is not an integer") from None
    if seed < 0:
      raise SweepError(f"{flag}: seed {seed} is negative")
    if seed in seeds:
      raise SweepError(f"{flag}: seed {seed} is given twice")
    seeds.append(seed)
  return seeds


def parse_shard(text: str) -> tuple[int, int]:
  """'i/n' -> (i, n) with 0 <= i < n."""
  m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
  if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
    raise SweepError(f"--shard={text!r}: expected i/n with 0 <= i < n (e.g. 0/4)")
  return int(m.group(1)), int(m.group(2))


# -- grid -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GridAxis:
  """One swept config field: its `path` and the flag texts of its values."""
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


def check_override(path: str, text: str, configs: dict, flag: str) -> str:
  """`path` checked as a field of every config in `configs` ({spec: ConfigDict}) and `text` as
  a value of its --config flag; returns `path`."""
  for spec, config in configs.items():
    check_path(path, config, flag)
    resolve(spec, {path: text}, f"{flag}: {path}={text}")
  return path


def parse_grid(text: str, configs: dict) -> list[GridAxis]:
  """'optim.lr=1e-5,5e-6;model.c_layers=3,6' -> axes; ';' separates keys, ',' values (commas
  inside brackets or quotes belong to the value: model.merge_layers=(1,2,2),(1,4,2))."""
  axes = [make_axis(key, [v.strip() for v in split_top_level(values, ",")], configs, "--grid")
          for key, values in key_values(text, ";", "--grid", "path=value1,value2,...")]
  return _check_axes(axes, "--grid")


def load_grid_file(path: str, configs: dict) -> list[GridAxis]:
  """A grid from a .json file ({"optim.lr": [1e-5, 5e-6], "model.merge_layers": [[1,2,2]]}) or
  a .py file defining GRID = {...} (same shape). Keys keep the file's order."""
  flag = f"--grid_file={path}"
  if not os.path.isfile(path):
    raise SweepError(f"{flag}: no such file")
  if path.endswith(".json"):
    with open(path) as f:
      grid = json.load(f)
  elif path.endswith(".py"):
    spec = importlib.util.spec_from_file_location("_sweep_grid", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    grid = getattr(module, "GRID", None)
  else:
    raise SweepError(f"{flag}: expected a .json or .py file")
  if not isinstance(grid, dict):
    raise SweepError(f"{flag}: expected a dict of config path -> list of values (GRID in a "
                     ".py file)")
  axes = []
  for key, values in grid.items():
    if not isinstance(values, (list, tuple)):
      raise SweepError(f"{flag}: key {key!r} needs a list of values, got {values!r}")
    axes.append(make_axis(str(key), [value_text(v) for v in values], configs, flag))
  return _check_axes(axes, flag)


def make_axis(path: str, values: Sequence[str], configs: dict, flag: str) -> GridAxis:
  for config in configs.values():
    check_path(path, config, flag)
  if not values or any(v == "" for v in values):
    raise SweepError(f"{flag}: {path}: empty value in {list(values)}")
  if len(set(values)) != len(values):
    raise SweepError(f"{flag}: {path}: repeated value in {list(values)}")
  for v in values:
    check_override(path, v, configs, flag)
  return GridAxis(path, tuple(values))


def _check_axes(axes: list[GridAxis], flag: str) -> list[GridAxis]:
  seen = set()
  for a in axes:
    if a.path in seen:
      raise SweepError(f"{flag}: {a.path} is swept twice")
    seen.add(a.path)
  return axes


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "-"


def settings(axes: Sequence[GridAxis]) -> list[tuple[str, dict]]:
  """Every combination as (setting name, {path: value text}), first axis slowest. The name
  'optim.lr=1e-5,model.c_layers=3' is also the run folder; no grid -> one setting 'default'."""
  combos: list[list[tuple[str, str]]] = [[]]
  for a in axes:
    combos = [c + [(a.path, v)] for c in combos for v in a.values]
  out, names = [], {}
  for c in combos:
    name = ",".join(f"{k}={_slug(v)}" for k, v in c) or "default"
    if name in names:
      raise SweepError(f"--grid values {names[name]} and {dict(c)} give the same folder name "
                       f"{name!r}")
    names[name] = dict(c)
    out.append((name, dict(c)))
  return out


# -- --set ----------------------------------------------------------------------------------------

def parse_sets(entries: Iterable[str], configs: dict) -> dict:
  """['optim.lr=1e-5', 'tuev:epochs=20'] -> {None: {path: text}, 'tuev': {path: text}}.

  `configs`: {dataset name: (config spec, ConfigDict)}; a path is checked against the config
  of every dataset it applies to."""
  out: dict = {}
  for entry in entries or ():
    flag = f"--set={entry}"
    if "=" not in entry:
      raise SweepError(f"{flag}: expected path=value or dataset:path=value")
    key, value = entry.split("=", 1)
    scope = None
    if ":" in key:
      scope, key = key.split(":", 1)
      if scope not in configs:
        raise SweepError(f"{flag}: dataset {scope!r} is not in --datasets "
                         f"({', '.join(configs)})")
    names = [scope] if scope else list(configs)
    path = check_override(key.strip(), value, dict(configs[n] for n in names), flag)
    out.setdefault(scope, {})[path] = value
  return out


# -- runs -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Run:
  """One fine-tuning run of the sweep; `config` is its resolved ConfigDict."""
  dataset: Any              # datasets.Dataset
  setting: str
  hparams: dict             # {config path: value text} of the grid setting
  seed: int
  overrides: dict           # config path -> flag text, in flag order
  workdir: str              # <sweep dir>/runs/<dataset>/<setting>/seed<k>
  config: Any = dataclasses.field(compare=False, repr=False, default=None)

  @property
  def run_id(self) -> str:
    return f"{self.dataset.name}/{self.setting}/seed{self.seed}"


def run_overrides(dataset, sets: dict, hparams: dict, seed: int) -> dict:
  """Config overrides of one run: the dataset's < --set < --set name: < grid < seed."""
  user = dict(sets.get(None, {}))
  user.update(sets.get(dataset.name, {}))
  user.update(hparams)
  derived = dict(dataset.overrides)
  if "model.data" in user or "model.channels" in user:
    for k in ("model.data", "model.channels", "model.montage"):
      derived.pop(k, None)
  elif dataset.needs_geometry:
    raise SweepError(f"--datasets={dataset.name}: its channels vary between recordings and it "
                     "has no config file; give --set=" + dataset.name + ":model.channels=... "
                     "(and model.montage) or model.data=KEY")
  if "model.T" not in user and user.get("data.window_len", "None") != "None":
    derived["model.T"] = user["data.window_len"]
  out = {**derived, **user}
  out["seed"] = str(seed)
  return out


def plan(datasets: Sequence, axes: Sequence[GridAxis], seeds: Sequence[int], sets: dict,
         sweep_dir: str) -> list[Run]:
  """Every run, in the order datasets x settings x seeds (the order --shard splits), each with
  its resolved config, checked against its dataset's manifest."""
  runs = []
  for d in datasets:
    for name, hparams in settings(axes):
      for seed in seeds:
        overrides = run_overrides(d, sets, hparams, int(seed))
        run_id = f"{d.name}/{name}/seed{seed}"
        config = resolve(d.config_spec, overrides, f"run {run_id}")
        d.check(config, run_id)
        runs.append(Run(d, name, hparams, int(seed), overrides,
                        os.path.join(os.path.abspath(sweep_dir), "runs", d.name, name,
                                     f"seed{seed}"), config))
  return runs


def shard_runs(runs: Sequence[Run], index: int, count: int) -> list[Run]:
  """Shard `index` of `count`: runs index, index + count, ... of the plan (round robin, so
  every node given the same flags gets a disjoint, deterministic share)."""
  return list(runs[index::count])


def command(run: Run, program: str = DEFAULT_PROGRAM, python: str = sys.executable) -> list[str]:
  return [python, "-m", program, f"--config={run.dataset.config_spec}",
          f"--workdir={run.workdir}", *(f"--config.{k}={v}" for k, v in run.overrides.items())]


def shell_command(cmd: Sequence[str]) -> str:
  return " ".join(shlex.quote(c) for c in cmd)
