r"""Benchmark (not a test): pretrain_tcp20 conversion speed against the bare MNE cost.

  python -m data_prep.bench [--files=6] [--minutes=20] [--sfreq=250] [--workdir=/tmp/x]

Writes ``--files`` synthetic TUH-style EDFs (``data_prep.synthetic`` signals with TUH names,
plus ``--extra_channels`` non-EEG channels, as TUH files have ~33 channels), then measures on
the same files in the same run:

* bare MNE: ``read_raw_edf(preload=True)``, ``filter(0.1, 30)``, ``notch_filter(60)``,
  ``resample(64)`` on every channel (what a naive script does), and on only the 17 electrodes
  TCP-20 needs;
* pretrain_tcp20's unit of work (``data_prep.job.convert_task``: read, normalise, filter,
  notch, resample, derive, window, reject, checksum, shard write, journal), in this process;
* the whole ``convert`` (process pool, manifest) with 1 and with 2 workers (CPU and wall).

CPU time is ``time.process_time()`` (for the pool runs: the workers' CPU per task, summed, plus
the driver's); the wall-clock rows depend on what else runs on the machine. Results: hours of
EEG per CPU-minute (or per wall-minute).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from absl import app
from absl import flags

_FILES = flags.DEFINE_integer("files", 6, "Number of synthetic recordings.")
_MINUTES = flags.DEFINE_float("minutes", 20.0, "Length of each recording in minutes.")
_SFREQ = flags.DEFINE_float("sfreq", 250.0, "Sampling rate of the recordings in Hz.")
_EXTRA = flags.DEFINE_integer("extra_channels", 10, "Non-EEG channels added to each file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for inputs/outputs (default: a "
                               "temporary folder, deleted afterwards).")


def write_inputs(folder: Path, n_files: int, minutes: float, sfreq: float,
                 extra: int) -> list[Path]:
  """Synthetic TUH-style EDFs (``EEG FP1-REF`` ... + extra non-EEG channels)."""
  import mne
  import numpy as np
  from data_prep import synthetic

  paths = []
  for i in range(n_files):
    path = folder / f"aaaaaa{chr(97 + i // 26)}{chr(97 + i % 26)}_s001_t000.edf"
    paths.append(path)
    if path.exists():
      continue
    raw = synthetic.make_recording(subject=i, seed=1, duration_s=minutes * 60, sfreq=sfreq,
                                   naming="tuh", with_events=False)
    if extra:
      rng = np.random.default_rng(i)
      data = rng.standard_normal((extra, raw.n_times)) * 20e-6
      info = mne.create_info([f"EEG {26 + k}-REF" for k in range(extra)], sfreq, "eeg")
      raw.add_channels([mne.io.RawArray(data, info, verbose="error")], force_update_info=True)
    synthetic.write_recording(raw, path, "edf")
  return paths


def bare_mne(paths, picks=None) -> float:
  """CPU seconds of read + filter + notch + resample with MNE's Raw methods."""
  import mne
  t0 = time.process_time()
  for p in paths:
    raw = mne.io.read_raw_edf(p, preload=False, verbose="error")
    if picks is not None:
      raw.pick([n for n in raw.ch_names if any(n == f"EEG {e}-REF" for e in picks)])
    raw.load_data(verbose="error")
    raw.filter(0.1, 30.0, verbose="error")
    raw.notch_filter(60.0, verbose="error")
    raw.resample(64.0, verbose="error")
  return time.process_time() - t0


def main(argv):
  del argv
  from data_prep import convert as convert_lib
  from data_prep import job
  from data_prep.recipes import get_recipe

  tmp = None
  if _WORKDIR.value:
    work = Path(_WORKDIR.value)
  else:
    tmp = tempfile.mkdtemp(prefix="data_prep_bench_")
    work = Path(tmp)
  inputs = work / "inputs"
  inputs.mkdir(parents=True, exist_ok=True)
  paths = write_inputs(inputs, _FILES.value, _MINUTES.value, _SFREQ.value, _EXTRA.value)
  hours = _FILES.value * _MINUTES.value / 60.0
  recipe = get_recipe("pretrain_tcp20")
  needed = ("FP1", "FP2", "F7", "F8", "F3", "F4", "T3", "T4", "T5", "T6", "C3", "C4", "CZ", "P3",
            "P4", "O1", "O2")

  bare_mne(paths[:1])  # warm-up: imports, caches
  rows = []
  cpu_bare = bare_mne(paths)
  rows.append(("bare MNE, all channels (read+filter+notch+resample)", cpu_bare, "CPU"))
  cpu_bare17 = bare_mne(paths, needed)
  rows.append(("bare MNE, the 17 TCP electrodes only", cpu_bare17, "CPU"))

  out = work / "unit"
  shutil.rmtree(out, ignore_errors=True)
  job.check_recipe(out, recipe)
  tasks = job.make_tasks(job.discover(str(inputs), recipe), recipe)
  t0 = time.process_time()
  for t in tasks:
    state = job.convert_task(t, out, recipe)
    assert state["status"] == "converted", state
  cpu_unit = time.process_time() - t0
  rows.append(("pretrain_tcp20 unit of work, in-process", cpu_unit, "CPU"))

  walls, overlap = {}, {}
  for workers in (1, 2):
    out = work / f"convert_w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    stats = {}
    t0, c0 = time.perf_counter(), time.process_time()
    m = convert_lib.convert(str(inputs), recipe, out, workers=workers, progress_interval_s=1e9,
                            run_stats=stats)
    walls[workers] = time.perf_counter() - t0
    cpu = stats["task_cpu_s"] + time.process_time() - c0
    overlap[workers] = (stats["task_wall_s"] / walls[workers],
                        stats["task_cpu_s"] / stats["task_wall_s"])
    rows.append((f"convert --workers={workers}: CPU of workers + driver", cpu, "CPU"))
    rows.append((f"convert --workers={workers}: wall clock", walls[workers], "wall"))

  print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}")
  print(f"input: {_FILES.value} EDF x {_MINUTES.value:g} min at {_SFREQ.value:g} Hz, "
        f"{21 + _EXTRA.value} channels = {hours:.2f} h of EEG; windows written: {m['windows']}")
  print("\n| step | seconds | h of EEG per CPU- (or wall-) minute | vs bare MNE (all channels) |")
  print("|---|---|---|---|")
  for name, sec, kind in rows:
    print(f"| {name} | {sec:.2f} ({kind}) | {hours / (sec / 60):.1f} | {sec / cpu_bare:.2f}x |")
  print(f"\nspeed-up 1 -> 2 workers: {walls[1] / walls[2]:.2f}x")
  for workers, (concurrency, share) in overlap.items():
    print(f"workers={workers}: tasks in flight on average {concurrency:.2f}; CPU share of a core "
          f"each task got {share:.2f}")
  if tmp:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
