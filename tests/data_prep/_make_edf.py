"""Tiny synthetic recordings for data_prep tests (EDF via edfio, FIF via MNE).

Signals are smooth random EEG-like noise of ~10-20 µV (band-limited, so it survives the
0.1-30 Hz band-pass and the 100 µV rule), deterministic from ``seed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tests.data_prep import miniature

# The 21 common TUH electrodes (miniature's list without T1/T2), as one list for all tests.
TUH_ELECTRODES = tuple(e for e in miniature.TUH_ELECTRODES if e not in ("T1", "T2"))
TUH_NAMES = tuple(f"EEG {e}-REF" for e in TUH_ELECTRODES) + ("EEG EKG1-REF", "PHOTIC-REF")


def eeg_like(n_channels: int, n_samples: int, sfreq: float, seed: int,
             amplitude_uv: float = 15.0) -> np.ndarray:
  """[C, T] µV: white noise low-passed (moving average) plus a 10 Hz rhythm."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n_channels, n_samples))
  k = max(1, int(sfreq / 25))
  kernel = np.ones(k) / k
  x = np.stack([np.convolve(row, kernel, mode="same") for row in x])
  x /= x.std(axis=1, keepdims=True) + 1e-12
  t = np.arange(n_samples) / sfreq
  x += 0.5 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6.28, (n_channels, 1)))
  return amplitude_uv * x / 1.2


def make_raw(names: Sequence[str] = TUH_NAMES, duration_s: float = 30.0, sfreq: float = 256.0,
             seed: int = 0, amplitude_uv: float = 15.0, annotations=None):
  """An MNE RawArray (volts) with the given channel names; annotations: [(onset, dur, desc)]."""
  import mne
  n = int(round(duration_s * sfreq))
  data = eeg_like(len(names), n, sfreq, seed, amplitude_uv) * 1e-6
  info = mne.create_info(list(names), sfreq, ch_types="eeg")
  raw = mne.io.RawArray(data, info, verbose="error")
  if annotations:
    on, du, de = zip(*annotations)
    raw.set_annotations(mne.Annotations(on, du, de))
  return raw


def write_edf(path: str | Path, **kwargs) -> Path:
  """Write ``make_raw(**kwargs)`` as EDF with miniature.write_edf (the tests' one EDF
  writer); returns the path."""
  raw = make_raw(**kwargs)
  ann = [(a["onset"], a["duration"], a["description"]) for a in raw.annotations]
  return miniature.write_edf(Path(path), raw.ch_names, raw.get_data() * 1e6, raw.info["sfreq"],
                             annotations=ann)


def write_fif(path: str | Path, **kwargs) -> Path:
  """Write ``make_raw(**kwargs)`` as FIF; returns the path."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  make_raw(**kwargs).save(str(path), overwrite=True, verbose="error")
  return path


def truncate(src: str | Path, dst: str | Path, keep_fraction: float = 0.6) -> Path:
  """Copy the first ``keep_fraction`` of a file's bytes to ``dst`` (a truncated recording)."""
  data = Path(src).read_bytes()
  Path(dst).write_bytes(data[: int(len(data) * keep_fraction)])
  return Path(dst)
