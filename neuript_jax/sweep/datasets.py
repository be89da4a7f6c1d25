"""Sweep datasets: a data_prep output folder and the fine-tuning config its runs start from.

A dataset name (``--datasets``) is a folder name; its shards are ``--data=name=PATH`` or else
``<data_root>/<name>``, a ``data_prep`` output (``manifest.json``). Its config is
``<configs_dir>/<recipe>.py:<size>`` where ``recipe`` is the manifest's recipe name
(``neuript_jax/configs/downstream/tuev.py:paper``: the paper's settings for that dataset) and
the run overrides only ``data.sources``. A dataset whose recipe has no such file (a ``generic``
conversion, say) starts from the base config (``--base_config``) with settings read from its
manifest: ``model.num_classes`` = number of ``label_names``, ``model.T`` = window samples,
the geometry (``model.data`` = the first key of ``geometry.DATASET_CHANNELS`` with the
manifest's channel list, in either spelling of the reference's Fp2-F3 typo, else
``model.channels``/``model.montage`` = the manifest's) and ``select_metric`` =
``SELECT_METRIC[task]`` (AUROC for binary tasks, Cohen's kappa for multi-class ones: CBraMod's
protocol, docs ANCHORS.md). Either way every run's resolved config must agree with the
manifest (classes, window length, channels; ``Dataset.check``), else the sweep stops at start.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from neuript_jax import geometry
from neuript_jax.sweep import paper_results
from neuript_jax.sweep.overrides import SweepError, resolve, value_text
from neuript_jax.sweep.plan import key_values

DEFAULT_CONFIGS_DIR = "neuript_jax/configs/downstream"
DEFAULT_BASE_CONFIG = "neuript_jax/configs/finetune.py"
SIZES = ("paper", "cpu")
SELECT_METRIC = {"binary": "auroc", "multiclass": "cohen_kappa"}
MANIFEST = "manifest.json"     # data_prep's output index (neuript_jax.data.pipeline.MANIFEST)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A prepared dataset, its config spec (``FILE[:ARG]``) and the overrides its runs get."""
  name: str
  path: str                 # the data_prep output folder (absolute)
  recipe: str
  labels: tuple[str, ...]
  window_samples: int
  channels: tuple[str, ...] | None   # None: they vary between recordings
  config_spec: str
  from_config_file: bool    # False: base config + settings read from the manifest
  overrides: dict           # config path -> flag text
  needs_geometry: bool      # no config file and no channel list: --set must give one
  paper_key: str | None     # key of paper_results.NEURIPT (the recipe name) or None
  config: Any = dataclasses.field(compare=False, repr=False, default=None)

  @property
  def num_classes(self) -> int:
    return len(self.labels)

  @property
  def task(self) -> str:
    return "binary" if self.num_classes == 2 else "multiclass"

  @property
  def manifest(self) -> str:
    return os.path.join(self.path, MANIFEST)

  def check(self, config, run_id: str) -> None:
    """SweepError unless a run's resolved `config` passes the fine-tuning checks
    (``train.validate.check_finetune`` on the smallest mesh the config allows) and fits this
    dataset's shards (classes, window length, channels)."""
    from neuript_jax.configs.common import to_model_config
    from neuript_jax.train import validate
    where = f"--datasets={self.name}: run {run_id} ({self.config_spec} + overrides)"
    axes = [v for v in config.mesh.values() if isinstance(v, int) and v > 0]
    try:
      validate.check_finetune(config, n_devices=math.prod(axes), n_processes=1)
      model = to_model_config(config.model)
    except (ValueError, KeyError, TypeError) as e:
      raise SweepError(f"{where}: {e}") from None
    hint = f" (fix the config file or --set={self.name}:<path>=...)"
    if model.num_classes != self.num_classes:
      raise SweepError(f"{where}: model.num_classes={model.num_classes} but {self.manifest} "
                       f"lists {self.num_classes} label_names {list(self.labels)}{hint}")
    window_len = config.data.get("window_len")
    if window_len is not None and window_len > self.window_samples:
      raise SweepError(f"{where}: data.window_len={window_len} is longer than the "
                       f"{self.window_samples}-sample windows of {self.manifest}{hint}")
    want = window_len or self.window_samples
    if model.T != want:
      raise SweepError(f"{where}: model.T={model.T} but its windows are {want} samples "
                       f"({'data.window_len' if window_len else self.manifest}){hint}")
    if self.channels is None:
      return
    try:
      names = model.channel_names
    except KeyError as e:
      raise SweepError(f"{where}: {e}{hint}") from None
    if geometry.fix_fp2_f3_typo(names) != geometry.fix_fp2_f3_typo(self.channels):
      named = f"model.data={model.data}" if model.channels is None else "model.channels"
      raise SweepError(f"{where}: {named} gives channels {list(names)} but {self.manifest} "
                       f"has {list(self.channels)}{hint}")


def parse_data_flag(text: str) -> dict:
  """'tuev=/data/tuev,tuab=/data/tuab' -> {name: path}."""
  out = {}
  for name, path in key_values(text, ",", "--data", "name=PATH"):
    if name in out:
      raise SweepError(f"--data names dataset {name!r} twice")
    out[name] = path
  return out


def geometry_overrides(channels: Sequence[str], montage: str) -> dict:
  """model.data (the first reference key with this channel list) or model.channels +
  model.montage."""
  fixed = geometry.fix_fp2_f3_typo(channels)
  for key, (names, _) in geometry.DATASET_CHANNELS.items():
    if geometry.fix_fp2_f3_typo(names) == fixed:
      return {"model.data": key}
  return {"model.channels": value_text(tuple(channels)),
          "model.montage": montage or "standard_1020"}


def load_dataset(name: str, path: str, configs_dir: str = DEFAULT_CONFIGS_DIR,
                 size: str = "paper", base_config: str = DEFAULT_BASE_CONFIG) -> Dataset:
  """A Dataset from a data_prep output folder (see the module docstring)."""
  flag = f"--datasets={name}"
  if size not in SIZES:
    raise SweepError(f"--size={size}: choose one of {', '.join(SIZES)}")
  manifest_path = Path(path) / MANIFEST
  if not manifest_path.is_file():
    raise SweepError(f"{flag}: no {manifest_path} (a data_prep output folder is expected; see "
                     "--data / --data_root)")
  try:
    manifest = json.loads(manifest_path.read_text())
  except json.JSONDecodeError as e:
    raise SweepError(f"{flag}: {manifest_path} is not JSON ({e})") from None
  recipe = manifest.get("recipe", {}).get("name", "")
  labels = tuple(manifest.get("recipe", {}).get("config", {}).get("label_names") or ())
  if len(labels) < 2:
    raise SweepError(f"{flag}: {manifest_path} lists {len(labels)} label_names; fine-tuning "
                     "needs a labelled conversion (a recipe with label_names)")
  window = manifest.get("window_samples")
  if not isinstance(window, int) or window < 1:
    raise SweepError(f"{flag}: {manifest_path} has no window_samples")
  channels = manifest.get("channels")
  channels = tuple(channels) if channels else None
  root = str(Path(path).resolve())
  # Double quotes inside: the shell-quoted command stays readable.
  overrides = {"data.sources": f"(({json.dumps(root)}, 1.0),)"}
  config_path = os.path.join(configs_dir, f"{recipe}.py")
  from_file = bool(recipe) and os.path.isfile(config_path)
  needs_geometry = False
  if from_file:
    spec = f"{config_path}:{size}"
  else:
    spec = base_config
    task = "binary" if len(labels) == 2 else "multiclass"
    if channels:
      overrides.update(geometry_overrides(channels, manifest.get("montage", "")))
    else:
      needs_geometry = True
    overrides["model.num_classes"] = str(len(labels))
    overrides["model.T"] = str(window)
    overrides["select_metric"] = SELECT_METRIC[task]
  config = resolve(spec, {}, f"{flag} (config {spec})")
  paper_key = recipe if paper_results.neuript_result(recipe) else None
  return Dataset(name, root, recipe, labels, window, channels, spec, from_file, overrides,
                 needs_geometry, paper_key, config)


def resolve_datasets(names: Sequence[str], data: dict, data_root: str,
                     configs_dir: str = DEFAULT_CONFIGS_DIR, size: str = "paper",
                     base_config: str = DEFAULT_BASE_CONFIG) -> list[Dataset]:
  """The Dataset of every --datasets name (its folder from `data`, else under `data_root`)."""
  if not os.path.isdir(configs_dir):
    raise SweepError(f"--configs_dir={configs_dir}: no such folder")
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
      raise SweepError(f"--datasets={name}: give --data={name}=PATH or --data_root")
    out.append(load_dataset(name, path, configs_dir, size, base_config))
  return out
