"""Config overrides as a sweep passes them to its runs: ``--config.<path>=<text>`` flags.

A run's config is ``--config=FILE[:ARG]`` plus overrides, resolved here exactly as the run's
launcher resolves them (ml_collections ``config_flags`` on a private flag set), so a key or a
value that the run would reject is rejected when the sweep is planned, and the resolved
config can be written beside the run.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from typing import Mapping

# Fields the sweep sets itself.
RESERVED = {"seed": "use --seeds", "data.sources": "use --data or --data_root"}


class SweepError(ValueError):
  """Bad sweep input (flag, grid key, dataset, config file); the message names it."""


def config_file(spec: str) -> str:
  """The file of a ``FILE[:ARG]`` config spec."""
  return spec.split(":", 1)[0]


_LOADED: dict = {}   # spec -> get_config() result, each file executed once per process


def load(spec: str, where: str):
  """``get_config(ARG)`` (or ``get_config()``) of the file of ``FILE[:ARG]``, as config_flags
  calls it; loaded once per spec."""
  if spec not in _LOADED:
    path, *arg = spec.split(":", 1)
    if not os.path.isfile(path):
      raise SweepError(f"{where}: no config file {path}")
    module_spec = importlib.util.spec_from_file_location("_sweep_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
      module_spec.loader.exec_module(module)
      config = module.get_config(*arg)
    except Exception as e:  # the config file's own errors, whatever they are
      raise SweepError(f"{where}: {spec}: {type(e).__name__}: {e}") from None
    if not hasattr(config, "keys"):
      raise SweepError(f"{where}: {spec}: get_config() returned {type(config).__name__}, not "
                       "a ConfigDict")
    _LOADED[spec] = config
  return _LOADED[spec]


def resolve(spec: str, overrides: Mapping[str, str], where: str):
  """The ConfigDict of ``--config=<spec>`` with ``--config.<path>=<text>`` for each override,
  parsed by ml_collections config_flags as the run's launcher parses them.

  Args:
    spec: ``FILE[:ARG]`` (ARG goes to the file's ``get_config``).
    overrides: config path -> flag text, applied in order.
    where: what to name in an error (a flag, a run).
  Raises:
    SweepError: no such file, or the file or an override is rejected.
  """
  from absl import flags
  from ml_collections import config_flags
  config = copy.deepcopy(load(spec, where))
  argv = ["sweep", *(f"--config.{k}={v}" for k, v in overrides.items())]
  values = flags.FlagValues()
  config_flags.DEFINE_config_dict("config", config, flag_values=values, sys_argv=argv)
  try:
    values(argv)
  except Exception as e:  # absl and ml_collections raise many kinds
    raise SweepError(f"{where}: {type(e).__name__}: {e}") from None
  return values.config


def leaf_paths(config, prefix: str = "") -> list[str]:
  """Every leaf field of a ConfigDict as a dotted path, in field order."""
  out = []
  for key in config.keys():
    value = config[key]
    path = f"{prefix}{key}"
    if hasattr(value, "keys"):
      out += leaf_paths(value, path + ".")
    else:
      out.append(path)
  return out


def check_path(path: str, config, flag: str) -> str:
  """`path` if it names a leaf field of `config`, else SweepError naming `flag` and `path`
  (with the fields whose last name is `path`, e.g. 'lr' -> optim.lr)."""
  if path in RESERVED:
    raise SweepError(f"{flag}: {path!r} cannot be swept or set here: {RESERVED[path]}")
  node = config
  parts = path.split(".")
  for i, part in enumerate(parts):
    if not hasattr(node, "keys") or part not in node.keys():
      near = [p for p in leaf_paths(config) if p.rsplit(".", 1)[-1] == parts[-1]]
      hint = f"; did you mean {' or '.join(near)}?" if near else ""
      raise SweepError(f"{flag}: {path!r} is not a config field (no "
                       f"{'.'.join(parts[:i + 1])!r}){hint}")
    node = node[part]
  if hasattr(node, "keys"):
    raise SweepError(f"{flag}: {path!r} is a group of fields, not a field; name one of "
                     f"{', '.join(sorted(node.keys()))}")
  return path


def value_text(value) -> str:
  """A JSON/Python value -> the text of a --config flag (tuples/lists as '(a, b)')."""
  if isinstance(value, str):
    return value
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return repr(value)
