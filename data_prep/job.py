"""One conversion job: inputs -> per-recording units -> shards + manifest, resumable.

A *unit* is one input file. Converting a unit (``convert_task``) runs the per-recording
function (``data_prep.pipeline``), writes the unit's shard atomically (temporary hidden name,
renamed when complete) and then commits the unit by atomically writing its state file
``DIR/.state/<unit>.json`` (status, reason, checksum, counts). The state file is the journal:

* a rerun skips every unit whose state matches the input's size and mtime and the recipe
  hash, and redoes the others (a unit interrupted before its state file was written is
  redone from scratch; its shard name is fixed, so a window is never written twice);
* temporary files of an interrupted run are hidden (``.name.tmp-<pid>``), never read, and
  removed by the next run;
* ``DIR/.state/recipe.json`` pins the recipe name and hash: a rerun with a different recipe
  configuration into the same DIR is an error naming the differing settings.

The manifest (``data_prep.manifest``) is rebuilt from the state files of the current inputs
at the end of every run, so the output (shards and manifest) depends only on the inputs and
the recipe: byte-identical for any worker count, runner, or number of interruptions.

Shard layout: ``DIR/<split>/<unit>.array_record`` (one shard per recording and split, records
in window order), with ``unit`` = the input path relative to its input root, made file-name
safe, plus 8 hex digits of the SHA-1 of the absolute path (unique even after sanitising).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Iterable, Sequence

from absl import logging

from data_prep import pipeline
from data_prep import shards
from data_prep.recipes.base import Recipe, RecordingInfo, Rejected
from neuript_jax.files import atomic_write_text

STATE_DIR = ".state"
RECIPE_STATE = "recipe.json"


@dataclasses.dataclass
class Task:
  """One input file to convert (everything a worker needs; picklable)."""

  path: str
  """Absolute path of the input file."""
  root: str
  """The input folder it was found under (ids are relative to it)."""
  unit: str
  """Unit name: shard and state file stem."""
  size: int
  mtime_ns: int
  info: RecordingInfo | None = None
  """None when ``describe`` rejected the file (``reject_reason`` says why)."""
  reject_reason: str | None = None


class RecipeMismatchError(RuntimeError):
  """The output directory was made with another recipe configuration."""


class OutputBusyError(RuntimeError):
  """Another conversion is writing into the same output directory."""


def lock_output(out_dir: Path):
  """Hold an exclusive lock on ``DIR/.state/lock`` for this process (released at exit).

  Returns the open lock file (keep a reference). Raises OutputBusyError if another running
  conversion holds it: two runs into one DIR would delete each other's temporary files.
  """
  import fcntl  # pylint: disable=g-import-not-at-top  # POSIX only.
  path = Path(out_dir) / STATE_DIR / "lock"
  path.parent.mkdir(parents=True, exist_ok=True)
  handle = open(path, "a+")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError as e:
    handle.close()
    raise OutputBusyError(f"another data_prep.convert is writing into {out_dir}") from e
  return handle


# ---------------------------------------------------------------------------------------------
# Input discovery.

def _glob_root(pattern: str) -> Path:
  """The longest leading directory of a glob pattern that holds no wildcard."""
  parts = Path(pattern).parts
  fixed = []
  for p in parts:
    if any(c in p for c in "*?["):
      break
    fixed.append(p)
  return Path(*fixed) if fixed else Path(".")


def discover(inputs: str | Sequence[str], recipe: Recipe) -> list[tuple[Path, Path]]:
  """(file, root) pairs for every input file the recipe accepts, sorted by path, unique.

  ``inputs``: a folder (searched recursively), a glob (``**`` allowed), a file, or a comma
  list of those. Hidden files and folders (names starting with ``.``) are skipped.
  """
  if isinstance(inputs, str):
    inputs = [s for s in inputs.split(",") if s.strip()]
  found: dict[Path, Path] = {}
  for item in inputs:
    item = os.path.expanduser(item.strip())
    if any(c in item for c in "*?["):
      root = _glob_root(item).resolve()
      files = [Path(p) for p in glob.glob(item, recursive=True)]
    elif os.path.isdir(item):
      root = Path(item).resolve()
      files = [p for p in root.rglob("*")]
    elif os.path.exists(item):
      root = Path(item).resolve().parent
      files = [Path(item)]
    else:
      raise FileNotFoundError(f"input {item!r} matches no file or folder")
    for f in files:
      f = f.resolve()
      rel = f.relative_to(root) if f.is_relative_to(root) else Path(f.name)
      if any(part.startswith(".") for part in rel.parts):
        continue
      if f.is_file() and recipe.accepts(f) and f not in found:
        found[f] = root
  return sorted(found.items(), key=lambda kv: str(kv[0]))


def unit_name(path: Path, root: Path) -> str:
  """File-name-safe unique unit name for an input file."""
  try:
    rel = path.relative_to(root).as_posix()
  except ValueError:
    rel = path.name
  safe = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "__"))[:150]
  return f"{safe}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def make_tasks(files: Iterable[tuple[Path, Path]], recipe: Recipe) -> list[Task]:
  """Describe every file (ids, split, label) and let the recipe assign splits globally."""
  tasks, infos = [], []
  for path, root in files:
    st = path.stat()
    task = Task(path=str(path), root=str(root), unit=unit_name(path, root), size=st.st_size,
                mtime_ns=st.st_mtime_ns)
    try:
      task.info = recipe.describe(path, root)
    except Rejected as e:
      task.reject_reason = e.reason
    except Exception as e:  # pylint: disable=broad-except  # One odd path must not stop a run.
      logging.exception("recipe %s could not describe %s", recipe.name, path)
      task.reject_reason = (f"the {recipe.name} recipe could not parse this path "
                            f"({type(e).__name__}: {e})")
    tasks.append(task)
  described = [t for t in tasks if t.info is not None]
  infos = list(recipe.assign_splits([t.info for t in described]))
  for t, info in zip(described, infos):
    t.info = info
    problem = _info_problem(info)
    if problem:
      logging.error("recipe %s described %s badly: %s", recipe.name, t.path, problem)
      t.info, t.reject_reason = None, f"the {recipe.name} recipe gave {problem}"
  return tasks


def _info_problem(info: RecordingInfo) -> str | None:
  """What is wrong with a recipe's RecordingInfo (ids must be strings, split non-empty)."""
  for field in ("dataset", "subject", "session", "recording", "split"):
    value = getattr(info, field)
    if not isinstance(value, str) or (field in ("subject", "split") and not value):
      return f"an invalid {field} ({value!r})"
  if not isinstance(info.label, int):
    return f"an invalid label ({info.label!r})"
  return None


# ---------------------------------------------------------------------------------------------
# State (the journal).

def state_path(out_dir: Path, unit: str, suffix: str = ".json") -> Path:
  return Path(out_dir) / STATE_DIR / f"{unit}{suffix}"


def load_state(out_dir: Path, task: Task, recipe_hash: str) -> dict | None:
  """The committed state of a task's unit if it is current (same input and recipe)."""
  p = state_path(out_dir, task.unit)
  if not p.exists():
    return None
  try:
    state = json.loads(p.read_text())
  except (OSError, ValueError):
    return None
  if (state.get("size") != task.size or state.get("mtime_ns") != task.mtime_ns
      or state.get("recipe_hash") != recipe_hash or state.get("path") != task.path
      or state.get("task_digest") != task_digest(task)):
    return None
  if state.get("shard") and not (Path(out_dir) / state["shard"]).exists():
    return None
  return state


def task_digest(task: Task) -> str:
  """Digest of what the recipe decided for a file before reading it (ids, split, label,
  extra, or the rejection): a rerun whose decision differs (e.g. a split rule over a grown
  subject list) reconverts the file instead of keeping a stale shard."""
  decided = dataclasses.asdict(task.info) if task.info is not None else task.reject_reason
  text = json.dumps(decided, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_recipe(out_dir: Path, recipe: Recipe) -> None:
  """Pin the recipe (and engine version) of ``out_dir``; raise RecipeMismatchError if another
  recipe configuration or engine version made it."""
  p = Path(out_dir) / STATE_DIR / RECIPE_STATE
  mine = {"name": recipe.name, "hash": recipe.config_hash,
          "config": json.loads(recipe.config.canonical_json()),
          "engine_version": pipeline.ENGINE_VERSION}
  if p.exists():
    theirs = json.loads(p.read_text())
    if theirs.get("engine_version") != mine["engine_version"]:
      raise RecipeMismatchError(
          f"{out_dir} was written by data_prep engine version {theirs.get('engine_version')}; "
          f"this is version {mine['engine_version']}, whose windows differ. Use a new "
          "--output directory.")
    if theirs["hash"] != mine["hash"]:
      diff = sorted(k for k in set(mine["config"]) | set(theirs["config"])
                    if mine["config"].get(k) != theirs["config"].get(k))
      details = "; ".join(f"{k}: {theirs['config'].get(k)!r} -> {mine['config'].get(k)!r}"
                          for k in diff)
      raise RecipeMismatchError(
          f"{out_dir} was written by recipe {theirs['name']!r} (hash {theirs['hash']}); this "
          f"run uses {mine['name']!r} (hash {mine['hash']}). Differences: {details}. Use a "
          "new --output directory.")
    return
  atomic_write_text(p, json.dumps(mine, sort_keys=True, indent=1))


def clean_temporaries(out_dir: Path) -> int:
  """Delete hidden temporary files left by interrupted runs; returns how many."""
  n = 0
  for p in Path(out_dir).rglob(".*.tmp-*"):
    p.unlink(missing_ok=True)
    n += 1
  for p in (Path(out_dir) / STATE_DIR).glob("*.started"):
    p.unlink(missing_ok=True)
  return n


def sha256_file(path: str | Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The unit of work.

def convert_task(task: Task, out_dir: str | Path, recipe: Recipe) -> dict:
  """Convert one input and commit it; returns its state dict. Never raises for bad input."""
  out_dir = Path(out_dir)
  started = state_path(out_dir, task.unit, ".started")
  started.parent.mkdir(parents=True, exist_ok=True)
  started.write_text(str(os.getpid()))
  t0, c0 = time.perf_counter(), time.process_time()
  previous = state_path(out_dir, task.unit)
  try:
    old_shard = json.loads(previous.read_text()).get("shard") if previous.exists() else None
  except (OSError, ValueError):
    old_shard = None
  state = {"path": task.path, "unit": task.unit, "size": task.size, "mtime_ns": task.mtime_ns,
           "recipe_hash": recipe.config_hash, "status": "rejected", "reason": None,
           "shard": None, "windows": 0, "duration_s": 0.0, "task_digest": task_digest(task)}
  try:
    state["sha256"] = sha256_file(task.path)
    if task.info is None:
      raise Rejected(task.reject_reason or "rejected by the recipe")
    info = task.info
    state.update(subject=info.subject, session=info.session, recording=info.recording,
                 split=info.split, dataset=info.dataset)
    result = pipeline.process_recording(task.path, info, recipe)
    state.update(status="converted", duration_s=result.duration_s,
                 source_rate_hz=result.source_rate_hz, windows=len(result.records),
                 rejected_windows=result.rejected_windows, channels=list(result.channels),
                 positions=result.positions.tolist(),
                 labels=_label_counts(result.records, recipe))
    if result.records:
      rel = Path(info.split) / f"{task.unit}{shards.SHARD_SUFFIX}"
      shards.write_shard(out_dir / rel, result.records)
      state["shard"] = rel.as_posix()
  except Rejected as e:
    state["reason"] = e.reason
  except Exception as e:  # pylint: disable=broad-except  # A bug must not stop the corpus.
    logging.exception("unexpected error converting %s", task.path)
    state["reason"] = f"internal error while converting ({type(e).__name__}: {e})"
  if state["status"] == "rejected":
    logging.warning("rejected %s: %s", task.path, state["reason"])
  atomic_write_text(state_path(out_dir, task.unit),
                    json.dumps(state, sort_keys=True, separators=(",", ":")))
  if old_shard and old_shard != state["shard"]:
    (out_dir / old_shard).unlink(missing_ok=True)  # e.g. the file moved to another split
  started.unlink(missing_ok=True)
  # Not persisted (timings would break byte-identical output): for progress and benchmarks.
  state["seconds"] = time.perf_counter() - t0
  state["cpu_seconds"] = time.process_time() - c0
  return state


def reject_crashed(task: Task, out_dir: str | Path, recipe: Recipe) -> dict:
  """Commit a rejection for an input whose worker process died while converting it alone."""
  state = {"path": task.path, "unit": task.unit, "size": task.size, "mtime_ns": task.mtime_ns,
           "recipe_hash": recipe.config_hash, "status": "rejected", "shard": None,
           "task_digest": task_digest(task),
           "windows": 0, "duration_s": 0.0, "sha256": sha256_file(task.path),
           "reason": "the worker process died while converting this file (killed, out of "
                     "memory, or a crash in a reader library)"}
  atomic_write_text(state_path(Path(out_dir), task.unit),
                    json.dumps(state, sort_keys=True, separators=(",", ":")))
  return state


def _label_counts(records, recipe: Recipe) -> dict[str, int]:
  counts: dict[str, int] = {}
  for r in records:
    key = r.label_name if r.label_name is not None else (
        recipe.config.label_names[r.label] if 0 <= r.label < len(recipe.config.label_names)
        else ("unlabelled" if r.label < 0 else str(r.label)))
    counts[key] = counts.get(key, 0) + 1
  return counts
