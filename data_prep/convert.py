r"""Convert EEG recordings into ArrayRecord window shards with a manifest.

Usage::

  python -m data_prep.convert --input=PATH_OR_GLOB --recipe=NAME --output=DIR \
      [--workers=N] [--runner=local|beam] [--strict] [--positions=template|recording] \
      [--set=field=value ...]

``--input`` is a folder (searched recursively), a glob (``**`` allowed), a file, or a comma
list of those. Every input becomes one unit (see ``data_prep.job``): converted into
``DIR/<split>/<unit>.array_record`` or listed in the manifest's ``rejected`` with a reason.
Rerunning the same command resumes an interrupted run and leaves a finished one unchanged.
Exit status: 0 if at least one input converted (and, with ``--strict``, none was rejected);
1 otherwise; 2 for a usage error such as a recipe mismatch; 130 when interrupted.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

from data_prep import job
from data_prep import manifest as manifest_lib
from data_prep import montages
from data_prep.progress import Progress
from data_prep.recipes import get_recipe, recipe_names
from data_prep.recipes.base import Recipe
from neuript_jax import geometry

FLAGS = flags.FLAGS

_INPUT = flags.DEFINE_string(
    "input", None, "Input: a folder (recursive), a glob such as 'data/**/*.edf', a file, or a "
    "comma-separated list of these.")
_RECIPE = flags.DEFINE_string(
    "recipe", None, f"Recipe name, one of: {', '.join(recipe_names())}.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Output directory: shards in DIR/<split>/, DIR/manifest.json, and the "
    "resume journal in DIR/.state/.")
_WORKERS = flags.DEFINE_integer(
    "workers", 0, "Parallel worker processes (one recording each); 0 means all CPU cores.")
_RUNNER = flags.DEFINE_enum(
    "runner", "local", ["local", "beam"], "'local': a process pool on this machine; 'beam': "
    "an Apache Beam pipeline (DirectRunner unless --beam_options choose another runner).")
_STRICT = flags.DEFINE_bool(
    "strict", False, "Treat any rejected input as an error (exit status 1).")
_POSITIONS = flags.DEFINE_enum(
    "positions", None, ["template", "recording"], "Channel positions: 'template' (the "
    "recipe's MNE montage, bipolar midpoints) or 'recording' (the file's own digitised "
    "positions). Default: the recipe's setting.")
_NOTCH = flags.DEFINE_float(
    "notch_hz", None, "Override the line-noise notch frequency in Hz (e.g. 50 or 60).")
_MIN_DURATION = flags.DEFINE_float(
    "min_duration_s", None, "Override the minimum recording duration in seconds.")
_CHANNELS = flags.DEFINE_string(
    "channels", None, "Override the output channels: a named set "
    f"({', '.join(montages.MONTAGES)}) or a comma list of names 'Cz' and pairs 'Fp1-F7'.")
_WINDOW = flags.DEFINE_float("window_s", None, "Override the window length in seconds.")
_STRIDE = flags.DEFINE_float(
    "stride_s", None, "Override the stride of sliding windows in seconds.")
_MONTAGE = flags.DEFINE_string(
    "montage", None, "Override the template montage (standard_1020, standard_1005).")
_LABEL_SOURCE = flags.DEFINE_enum(
    "label_source", None, ["none", "annotations", "folder"], "generic recipe: where labels "
    "come from (none; annotations mapped by --label_map; the parent folder name).")
_LABEL_MAP = flags.DEFINE_string(
    "label_map", None, "generic recipe: 'annotation=class,...' (annotations) or "
    "'folder=class,...' (folder); classes are numbered in order of first appearance.")
_SPLIT_RULE = flags.DEFINE_enum(
    "split_rule", None, ["hash", "lists"], "generic recipe: split subjects by a hash fraction "
    "(--split_fractions) or by explicit lists (--split_lists).")
_SPLIT_FRACTIONS = flags.DEFINE_string(
    "split_fractions", None, "generic recipe: e.g. 'train=0.8,val=0.1,test=0.1'.")
_SPLIT_LISTS = flags.DEFINE_string(
    "split_lists", None, "generic recipe: e.g. 'train=s1;s2,val=s3,test=s4' (subjects "
    "separated by ';'); subjects in no list go to train.")
_SUBJECT_PATTERN = flags.DEFINE_string(
    "subject_pattern", None, "generic recipe: regular expression with one group that "
    "extracts the subject id from the path relative to the input folder.")
_SET = flags.DEFINE_multi_string(
    "set", [], "Override any recipe setting: 'field=value' (value parsed as JSON, else a "
    "string); 'params.name=value' sets a recipe-specific parameter. Repeatable.")
_BEAM_OPTIONS = flags.DEFINE_multi_string(
    "beam_options", [], "Extra Apache Beam pipeline options for --runner=beam, e.g. "
    "'--runner=DataflowRunner' '--project=P' (see data_prep/README.md).")


def _parse_value(text: str):
  try:
    return json.loads(text)
  except ValueError:
    return text


def recipe_overrides_from_flags() -> dict:
  """Recipe config overrides given on the command line."""
  out = {}
  simple = {"positions": _POSITIONS, "notch_hz": _NOTCH, "min_duration_s": _MIN_DURATION,
            "window_s": _WINDOW, "stride_s": _STRIDE, "montage": _MONTAGE}
  for key, flag in simple.items():
    if flag.value is not None:
      out[key] = flag.value
  if _CHANNELS.value is not None:
    out["channels"] = montages.resolve_channel_set(_CHANNELS.value)
  params = {"label_source": _LABEL_SOURCE, "label_map": _LABEL_MAP,
            "split_rule": _SPLIT_RULE, "split_fractions": _SPLIT_FRACTIONS,
            "split_lists": _SPLIT_LISTS, "subject_pattern": _SUBJECT_PATTERN}
  for key, flag in params.items():
    if flag.value is not None:
      out[f"params.{key}"] = flag.value
  for item in _SET.value:
    if "=" not in item:
      raise app.UsageError(f"--set expects field=value, got {item!r}")
    key, value = item.split("=", 1)
    out[key.strip()] = _parse_value(value)
  return out


# ---------------------------------------------------------------------------------------------
# Local runner: a process pool, one recording per task; a dead worker is survived.

_WORKER_STATE: dict = {}


class WorkerStartupError(RuntimeError):
  """Worker processes die before converting anything (an environment problem, not a file's)."""

  def __init__(self):
    super().__init__(
        "worker processes die before converting any file. If you call "
        "data_prep.convert.convert() from a script, put the call under "
        "`if __name__ == \"__main__\":` (workers are started with multiprocessing's "
        "forkserver and import the main module); otherwise check memory limits.")


def _exit_on_interrupt(signum, frame):
  del frame
  os._exit(128 + signum)


def _init_worker(out_dir: str, recipe: Recipe) -> None:
  # Ctrl-C reaches every process of the terminal's group. A worker then ends at once and
  # commits nothing more: the interrupt can land inside a half-done import (scipy.signal is
  # imported lazily), and a file converted by that broken interpreter would be committed as an
  # "internal error" rejection that every rerun keeps. Its in-flight file has no state yet, so
  # the rerun converts it; the parent gets its own KeyboardInterrupt and stops.
  signal.signal(signal.SIGINT, _exit_on_interrupt)
  _WORKER_STATE["out_dir"] = out_dir
  _WORKER_STATE["recipe"] = recipe


def _work(task: job.Task) -> dict:
  return job.convert_task(task, _WORKER_STATE["out_dir"], _WORKER_STATE["recipe"])


def run_local(tasks: Sequence[job.Task], out_dir: Path, recipe: Recipe, workers: int,
              progress: Progress) -> list[dict]:
  """Convert ``tasks`` with ``workers`` processes; returns their committed states.

  If a worker process dies (SIGKILL, out of memory, a segfault in a reader), the pool is
  rebuilt: tasks that were in flight (their ``.started`` marker is left) are retried one at a
  time in a pool of their own, so the culprit is identified; a task that kills its worker
  when run alone is rejected with a reason naming the crash. The others are unaffected.
  """
  states: list[dict] = []
  queue = list(tasks)
  # forkserver, not fork: forking a process that already runs threads (ArrayRecord, grain,
  # a test runner) can deadlock or crash the child. The server preloads the heavy imports
  # once, so starting a worker stays cheap.
  ctx = multiprocessing.get_context("forkserver")
  ctx.set_forkserver_preload(["data_prep.pipeline", "data_prep.job", "mne.filter"])

  def run_pool(batch, n):
    """Run a batch; returns the tasks left unfinished if a worker died, else []."""
    pool = cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                                  initargs=(str(out_dir), recipe))
    left = {t.unit: t for t in batch}
    try:
      futures = {pool.submit(_work, t): t.unit for t in batch}
      for fut in cf.as_completed(futures):
        try:
          state = fut.result()
        except cf.process.BrokenProcessPool:
          break
        left.pop(futures[fut])
        states.append(state)
        progress.update(state)
    except KeyboardInterrupt:
      pool.shutdown(wait=False, cancel_futures=True)
      raise
    pool.shutdown(wait=True, cancel_futures=True)
    return [left[u] for u in sorted(left)]

  stalls = 0
  while queue:
    n_before = len(states)
    left = run_pool(queue, max(1, min(workers, len(queue))))
    queue, suspects = [], []
    for t in left:
      done = job.load_state(out_dir, t, recipe.config_hash)
      marker = job.state_path(out_dir, t.unit, ".started")
      if done is not None:
        states.append(done)
        progress.update(done)
      elif marker.exists():
        marker.unlink()
        suspects.append(t)
      else:
        queue.append(t)
    if left and not suspects and len(states) == n_before:
      stalls += 1  # Workers died before starting any task.
      if stalls >= 2:
        raise WorkerStartupError()
    else:
      stalls = 0
    for t in suspects:
      logging.warning("a worker died while %s was in flight; retrying it alone", t.path)
      if run_pool([t], 1):
        marker = job.state_path(out_dir, t.unit, ".started")
        if not marker.exists():
          raise WorkerStartupError()
        marker.unlink()
        state = job.reject_crashed(t, out_dir, recipe)
        states.append(state)
        progress.update(state)
  return states


# ---------------------------------------------------------------------------------------------

def convert(inputs: str | Sequence[str], recipe: Recipe, out_dir: str | Path, workers: int = 0,
            runner: str = "local", beam_options: Sequence[str] = (),
            progress_interval_s: float = 1.0, run_stats: dict | None = None) -> dict:
  """Convert ``inputs`` with ``recipe`` into ``out_dir``; returns the manifest written.

  Resumes from ``out_dir``'s journal; raises job.RecipeMismatchError if ``out_dir`` was made
  with another recipe configuration. If ``run_stats`` is a dict it receives this run's
  ``converted_now`` (units converted by this run), ``task_cpu_s`` and ``task_wall_s`` (their
  CPU and wall seconds, summed over worker processes; local runner only).
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  lock = job.lock_output(out_dir)
  try:
    return _convert_locked(inputs, recipe, out_dir, workers, runner, beam_options,
                           progress_interval_s, run_stats)
  finally:
    lock.close()


def _convert_locked(inputs, recipe, out_dir, workers, runner, beam_options,
                    progress_interval_s, run_stats) -> dict:
  cfg = recipe.config
  if cfg.channels and cfg.positions == "template":
    # A channel the template cannot place is a setting error: fail before any work.
    geometry.electrode_positions(cfg.channels, cfg.montage)
  job.check_recipe(out_dir, recipe)
  job.clean_temporaries(out_dir)
  files = job.discover(inputs, recipe)
  tasks = job.make_tasks(files, recipe)
  done, todo = [], []
  for t in tasks:
    state = job.load_state(out_dir, t, recipe.config_hash)
    (done if state is not None else todo).append(state if state is not None else t)
  logging.info("%d input files: %d already done, %d to convert", len(tasks), len(done),
               len(todo))
  progress = Progress(len(tasks), skipped=len(done), interval_s=progress_interval_s)
  workers = workers or os.cpu_count() or 1
  if runner == "beam":
    from data_prep import beam_pipeline  # pylint: disable=g-import-not-at-top
    new = beam_pipeline.run_beam(todo, out_dir, recipe, beam_options)
    for s in new:
      progress.update(s)
  else:
    new = run_local(todo, out_dir, recipe, workers, progress)
  progress.close()
  if run_stats is not None:
    run_stats["converted_now"] = len(new)
    run_stats["task_cpu_s"] = sum(s.get("cpu_seconds", 0.0) for s in new)
    run_stats["task_wall_s"] = sum(s.get("seconds", 0.0) for s in new)
  job.clean_temporaries(out_dir)  # what crashed workers left behind
  states = [{k: v for k, v in s.items() if k not in ("seconds", "cpu_seconds")}
            for s in done + new]
  manifest = manifest_lib.build(recipe, states)
  manifest_lib.write(out_dir, manifest)
  return manifest


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  for flag in (_INPUT, _RECIPE, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required")
  try:
    recipe = get_recipe(_RECIPE.value, **recipe_overrides_from_flags())
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  try:
    manifest = convert(_INPUT.value, recipe, _OUTPUT.value, workers=_WORKERS.value,
                       runner=_RUNNER.value, beam_options=_BEAM_OPTIONS.value)
  except (job.RecipeMismatchError, job.OutputBusyError, geometry.UnknownChannelError,
          WorkerStartupError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    return 2
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("\ninterrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  n_ok, n_bad = len(manifest["files"]), len(manifest["rejected"])
  print(f"converted {n_ok} file(s) into {manifest['windows']} windows "
        f"({manifest['hours']:.2f} h); rejected {n_bad} file(s); manifest: "
        f"{Path(_OUTPUT.value) / manifest_lib.MANIFEST}")
  for r in manifest["rejected"]:
    print(f"  rejected {r['path']}: {r['reason']}")
  if n_ok == 0 or (_STRICT.value and n_bad):
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
