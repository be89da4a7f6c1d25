"""Checkpoints with orbax: the latest N steps (for resume) and the best by eval loss, with an
integrity record per step so that a damaged checkpoint is never loaded.

Each checkpoint holds the train state (params, optimizer state, step, RNG key data) and the
data iterator's state (JSON), so a resumed run continues with exactly the batches and random
draws an uninterrupted run would have used. Saves are asynchronous; `wait()` blocks until the
last one is on disk.

Integrity. Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it to `<step>`
when every process has written its part, so a save killed midway (kill -9, preemption) leaves
only the tmp folder, which orbax does not list as a step. What orbax does not catch: a
flipped byte in an array file loads silently as other numbers (the data are zstd-compressed
without a checksum), and a missing `_CHECKPOINT_METADATA`, `_sharding` or array-metadata file,
or a JSON item garbled into other valid JSON, loads without complaint. So, after every
process has finished writing and before the rename, process 0 writes `INTEGRITY_FILE` into the
step folder: the size and CRC-32 of every file in it. The record is renamed together with the
step, so a finished step always has one.

`restore()` checks the step against its record (every file present, same size, same CRC; the
JSON files parse) before orbax reads it. A bad latest step is skipped with an absl warning
that names it and the reason, and the previous step is tried, down to the oldest; a finished
step that is bad is moved aside to `<step>.corrupt` (so that the run can save that step again;
nothing is deleted), a leftover `<step>.orbax-checkpoint-tmp` is left where it is (orbax
replaces it when it saves that step again). With no good step left, `CheckpointIntegrityError`
names the folder and every step's reason. A step without a record (written by an older version
of this module) gets the structural checks only, with a warning.

Multi-process: every process calls every method (orbax needs it). The record is written by
process 0 only. Every process checks the same files on the shared filesystem, so all reach the
same decision; the moves aside are made by process 0 between two barriers, after every process
has decided. A restore reads every file of the step once for the CRCs, on every process.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from neuript_jax import files

INTEGRITY_FILE = "_NEURIPT_INTEGRITY.json"
INTEGRITY_VERSION = 1
TMP_SUFFIX = ".orbax-checkpoint-tmp"
CORRUPT_SUFFIX = ".corrupt"
# Written or rewritten by orbax after the record (at the rename): not covered by the CRCs.
_UNRECORDED = frozenset({INTEGRITY_FILE, "commit_success.txt", "_CHECKPOINT_METADATA"})
_CHUNK = 8 << 20


class CheckpointIntegrityError(RuntimeError):
  """No good checkpoint to restore, or a requested step failed its integrity check."""


# -- integrity record -------------------------------------------------------------------------

def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _step_files(step_dir: str) -> list[str]:
  """Paths (relative, '/'-separated, sorted) of the files under a step folder."""
  out = []
  for root, dirs, names in os.walk(step_dir):
    dirs.sort()
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), step_dir).replace(os.sep, "/")
      out.append(rel)
  return sorted(out)


def write_integrity_record(step_dir: str) -> dict:
  """Write `INTEGRITY_FILE` into `step_dir`: {"version", "algorithm": "crc32", "files":
  {relative path: [size in bytes, crc32]}} over every file except `_UNRECORDED`."""
  record = {"version": INTEGRITY_VERSION, "algorithm": "crc32", "files": {}}
  for rel in _step_files(step_dir):
    if rel in _UNRECORDED:
      continue
    path = os.path.join(step_dir, rel)
    record["files"][rel] = [os.path.getsize(path), _crc32(path)]
  files.atomic_write_text(os.path.join(step_dir, INTEGRITY_FILE),
                          json.dumps(record, sort_keys=True, indent=0) + "\n")
  return record


def _json_problem(path: str) -> str | None:
  try:
    with open(path, "rb") as f:
      json.loads(f.read())
  except (OSError, ValueError) as e:
    return f"{os.path.basename(path)} is not valid JSON ({type(e).__name__}: {e})"
  return None


def _uses_ocdbt(metadata_path: str) -> bool:
  with open(metadata_path, "rb") as f:
    meta = json.loads(f.read())
  return isinstance(meta, dict) and bool(meta.get("use_ocdbt"))


def _structure_problem(step_dir: str) -> str | None:
  """Checks that need no record: each item folder has its metadata and it parses."""
  items = sorted(d for d in os.listdir(step_dir) if os.path.isdir(os.path.join(step_dir, d)))
  if not items:
    return "no item folders (state/, data/)"
  for item in items:
    d = os.path.join(step_dir, item)
    meta = [n for n in ("_METADATA", "metadata") if os.path.isfile(os.path.join(d, n))]
    if not meta:
      return f"{item}/ has no _METADATA or metadata file"
    for n in meta:
      if (problem := _json_problem(os.path.join(d, n))):
        return f"{item}/{problem}"
    if meta == ["_METADATA"] and _uses_ocdbt(os.path.join(d, "_METADATA")) and not os.path.isfile(
        os.path.join(d, "manifest.ocdbt")):
      return f"{item}/manifest.ocdbt is missing"
  return None


def verify_step(step_dir: str) -> str | None:
  """None if the step folder passes its integrity record, else the reason (a sentence naming
  the file). Without a record only the structural checks run (see the module docstring)."""
  if not os.path.isdir(step_dir):
    return f"{step_dir} is not a folder"
  record_path = os.path.join(step_dir, INTEGRITY_FILE)
  if not os.path.exists(record_path):
    return _structure_problem(step_dir)
  try:
    with open(record_path) as f:
      record = json.load(f)
    listed = record["files"]
    if record.get("algorithm") != "crc32" or not isinstance(listed, dict):
      raise ValueError(f"algorithm {record.get('algorithm')!r}")
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"{INTEGRITY_FILE} is unreadable ({type(e).__name__}: {e})"
  for rel, (size, crc) in sorted(listed.items()):
    path = os.path.join(step_dir, rel)
    if not os.path.isfile(path):
      return f"{rel} is missing"
    got = os.path.getsize(path)
    if got != size:
      return f"{rel} has {got} bytes, the record says {size} (truncated or overwritten)"
    if _crc32(path) != crc:
      return f"{rel} fails its CRC-32 (content changed since the save)"
  for rel in sorted(listed):
    if rel.endswith(("_METADATA", "/metadata")) and (problem := _json_problem(
        os.path.join(step_dir, rel))):
      return f"{rel}: {problem}"
  return None


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


# -- the checkpointer ---------------------------------------------------------------------------

class Checkpointer:
  """workdir/checkpoints (last `keep` steps) and workdir/best (lowest eval loss).

  Saves always go through orbax's async checkpointer (the integrity record is written by its
  finalisation hook); with `async_save=False` each save waits until it is on disk.
  """

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.async_save = async_save
    self._saving = {}   # manager name -> step being saved (read by the finalisation hook)
    self.latest = ocp.CheckpointManager(
        os.path.join(self.workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=True,
            async_options=ocp.AsyncOptions(
                post_finalization_callback=lambda: self._record("latest"))))
    self.best = ocp.CheckpointManager(
        os.path.join(self.workdir, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=True,
            best_fn=lambda m: m["eval_loss"], best_mode="min",
            keep_checkpoints_without_metrics=False,
            async_options=ocp.AsyncOptions(
                post_finalization_callback=lambda: self._record("best"))))

  def _record(self, which: str) -> None:
    """Finalisation hook (process 0, every process's writes done, before the rename)."""
    manager = getattr(self, which)
    step = self._saving.get(which)
    tmp = os.path.join(str(manager.directory), f"{step}{TMP_SUFFIX}")
    if step is None or not os.path.isdir(tmp):
      logging.warning("checkpoint %s step %s: no folder %s to write %s into; that step will "
                      "get the structural checks only", which, step, tmp, INTEGRITY_FILE)
      return
    write_integrity_record(tmp)

  def _save(self, which: str, step: int, args, **kwargs) -> None:
    manager = getattr(self, which)
    manager.wait_until_finished()    # the hook reads _saving: the previous save must be done
    self._saving[which] = int(step)
    manager.save(step, args=args, **kwargs)
    if not self.async_save:
      manager.wait_until_finished()

  def latest_step(self) -> int | None:
    """Latest finished step in checkpoints/ (not yet checked; `restore` checks it)."""
    return self.latest.latest_step()

  def save(self, step: int, state, data_state: Any, force: bool = False) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state))
    self._save("latest", step, args, force=force)

  def save_best(self, step: int, state, data_state: Any, eval_loss: float) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state))
    self._save("best", step, args, metrics={"eval_loss": float(eval_loss)}, force=True)

  def _orbax_restore(self, manager, step: int, abstract_state):
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

  def restore_latest_good(self, abstract_state):
    """-> (step, state, data_state) of the latest step that passes `verify_step`.

    Bad steps on the way are logged (absl warning naming the step and why), finished bad
    ones moved to `<step>.corrupt`, leftover tmp folders left in place. Raises
    CheckpointIntegrityError naming the checkpoints folder when no step is good.
    """
    self.wait()
    root = str(self.latest.directory)
    names = os.listdir(root) if os.path.isdir(root) else []
    steps = sorted((int(n) for n in names if n.isdigit()), reverse=True)
    unfinished = sorted(int(n[:-len(TMP_SUFFIX)]) for n in names
                        if n.endswith(TMP_SUFFIX) and n[:-len(TMP_SUFFIX)].isdigit())
    reasons, bad, chosen = [], [], None
    for step in unfinished:
      if not steps or step > steps[0]:
        reason = (f"step {step}: unfinished save ({step}{TMP_SUFFIX} has no finished step "
                  "folder; killed during the save?)")
        logging.warning("checkpoint %s: %s; left in place", root, reason)
        reasons.append(reason)
    for step in steps:
      problem = verify_step(os.path.join(root, str(step)))
      if problem is None:
        if not os.path.exists(os.path.join(root, str(step), INTEGRITY_FILE)):
          logging.warning("checkpoint %s step %d has no %s (older format): checked its "
                          "structure only", root, step, INTEGRITY_FILE)
        chosen = step
        break
      reason = f"step {step}: {problem}"
      logging.warning("checkpoint %s: %s; moving it to %d%s and trying the previous step",
                      root, reason, step, CORRUPT_SUFFIX)
      reasons.append(reason)
      bad.append(step)
    _sync("neuript_checkpoint_verified")
    if jax.process_index() == 0:
      for step in bad:
        src = os.path.join(root, str(step))
        dst, k = src + CORRUPT_SUFFIX, 1
        while os.path.exists(dst):
          dst, k = f"{src}{CORRUPT_SUFFIX}.{k}", k + 1
        os.rename(src, dst)
    _sync("neuript_checkpoint_quarantined")
    if bad:
      self.latest.reload()
    if chosen is None:
      raise CheckpointIntegrityError(
          f"no good checkpoint in {root} (workdir {self.workdir}): "
          + ("; ".join(reasons) if reasons else "no finished step"))
    if reasons:
      logging.warning("checkpoint %s: restoring step %d instead of the latest (%s)", root,
                      chosen, "; ".join(reasons))
    state, data_state = self._orbax_restore(self.latest, chosen, abstract_state)
    return chosen, state, data_state

  def restore(self, abstract_state, step: int | None = None):
    """-> (state, data_state) of `step`, checked first; default: the latest good step
    (`restore_latest_good`). A given step that fails the check raises
    CheckpointIntegrityError (no fallback)."""
    if step is None:
      return self.restore_latest_good(abstract_state)[1:]
    self.wait()
    step_dir = os.path.join(str(self.latest.directory), str(step))
    if (problem := verify_step(step_dir)) is not None:
      raise CheckpointIntegrityError(f"checkpoint {step_dir}: {problem}")
    return self._orbax_restore(self.latest, step, abstract_state)

  def restore_best(self, abstract_state, step: int | None = None):
    """-> (state, data_state) of best/ `step` (default: the best), checked first; raises
    CheckpointIntegrityError naming the step folder if it fails."""
    self.wait()
    step = self.best.best_step() if step is None else step
    if step is None:
      raise CheckpointIntegrityError(f"no best checkpoint in {self.best.directory}")
    step_dir = os.path.join(str(self.best.directory), str(step))
    if (problem := verify_step(step_dir)) is not None:
      raise CheckpointIntegrityError(f"checkpoint {step_dir}: {problem}")
    return self._orbax_restore(self.best, step, abstract_state)

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def load_params(path: str):
  """Params only (a tree of arrays), from a workdir, its checkpoints/ or best/ folder (latest
  good step: bad ones are skipped with a warning, not moved), or one step folder (checked;
  CheckpointIntegrityError if bad). Used by `--config.init_from=`; optimizer state is ignored."""
  path = os.path.abspath(path)
  for sub in ("checkpoints", "best"):
    if os.path.isdir(os.path.join(path, sub)):
      path = os.path.join(path, sub)
      break
  if os.path.basename(path).isdigit():
    root, candidates = os.path.dirname(path), [int(os.path.basename(path))]
    if (problem := verify_step(path)) is not None:
      raise CheckpointIntegrityError(f"init_from={path}: {problem}")
  else:
    root = path
    candidates = sorted((int(d) for d in os.listdir(root) if d.isdigit()),
                        reverse=True) if os.path.isdir(root) else []
    if not candidates:
      raise FileNotFoundError(f"init_from={path}: no orbax checkpoint steps there")
  step, reasons = None, []
  for s in candidates:
    problem = verify_step(os.path.join(root, str(s)))
    if problem is None:
      step = s
      break
    reasons.append(f"step {s}: {problem}")
    logging.warning("init_from=%s: skipping step %d: %s", path, s, problem)
  if step is None:
    raise CheckpointIntegrityError(f"init_from={path}: no good checkpoint ({'; '.join(reasons)})")
  with ocp.CheckpointManager(root) as mngr:
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return out["state"]["params"]
