"""MentalArithmetic (PhysioNet eegmat 1.0.0): rest vs serial subtraction, 5-s windows.

Input layout: one flat folder (``eeg-during-mental-arithmetic-tasks-1.0.0/``) of
``SubjectNN_1.edf`` (rest before the task) and ``SubjectNN_2.edf`` (during the task),
NN = 00–35, beside ``README.txt``, ``RECORDS``, ``SHA256SUMS.txt`` and ``subject-info.csv``;
only ``Subject<NN>_<1|2>.edf`` files are converted, so those never shift anything.

Labels: the suffix, ``_1`` → 0 rest, ``_2`` → 1 task (CBraMod). Windows: non-overlapping 5 s
(320 samples at 64 Hz) from the start of each file, remainder dropped.

Signal: 21 signals ``EEG Fp1`` … ``EEG Pz``, ``EEG A2-A1``, ``ECG ECG`` at 500 Hz. NeurIPT:
unit conversion, 50 Hz notch, 64 Hz, CAR. CAR is the mean of the 19 scalp electrodes
(``CAR_ELECTRODES``; ``A2-A1`` and ``ECG`` excluded), then the 20 TCP bipolar pairs (the
likely chain, REFERENCE §1.4: the reference code builds TCP positions for this set). A
bipolar difference of CAR signals equals the plain difference, so CAR only matters for
monopolar outputs (``channels=...``) and is kept for fidelity. No band-pass (none is stated;
the files are already filtered by the authors); ``bandpass_hz=(0.1, 30)`` switches one on.

Split (``params.subject_ranges``, 0-based subject numbers as in the file names): 0–27 train,
28–31 val, 32–35 test (NeurIPT's 1–28 / 29–32 / 33–36).
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.recipes import base
from neuript_jax import geometry

LABELS = ("rest", "task")
CAR_ELECTRODES = ("Fp1", "Fp2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6",
                  "P3", "P4", "O1", "O2", "Fz", "Cz", "Pz")
CHANNEL_LABELS = tuple(f"EEG {e}" for e in CAR_ELECTRODES) + ("EEG A2-A1", "ECG ECG")
"""The 21 signal labels of the eegmat EDF files, in file order."""

_NAME = re.compile(r"^Subject(\d+)_([12])$")

CONFIG = base.RecipeConfig(
    name="mental_arithmetic", dataset="MentalArithmetic",
    channels=geometry.TCP20, montage="standard_1020",
    target_rate_hz=64.0, bandpass_hz=None, notch_hz=50.0,
    reference="car", car_channels=CAR_ELECTRODES,
    window_s=5.0, label_names=LABELS,
    params={"subject_ranges": {"train": [0, 27], "val": [28, 31], "test": [32, 35]}})


class MentalArithmetic(base.Recipe):
  """eegmat: label from the ``_1``/``_2`` suffix; split by subject number ranges."""

  def accepts(self, path: Path) -> bool:
    return path.suffix.lower() == ".edf" and bool(_NAME.match(path.stem))

  def describe(self, path: Path, root: Path) -> base.RecordingInfo:
    m = _NAME.match(path.stem)
    number, part = int(m.group(1)), int(m.group(2))
    split = None
    for name, (lo, hi) in self.config.params["subject_ranges"].items():
      if int(lo) <= number <= int(hi):
        split = name
    if split is None:
      raise base.Rejected(f"subject {number} is outside every split range "
                          f"{dict(self.config.params['subject_ranges'])}")
    return base.RecordingInfo(dataset=self.config.dataset, subject=f"Subject{number:02d}",
                              session="", recording=base.recording_id(path, root),
                              split=split, label=part - 1, label_name=LABELS[part - 1])


def build(**overrides) -> MentalArithmetic:
  return MentalArithmetic(base.override(CONFIG, **overrides))
