"""SEED-V: five-class emotion, 1-s windows inside the fixed per-session trial times.

Input layout: ``EEG_raw/<subject>_<session>_<yyyymmdd>.cnt`` (Neuroscan CNT, 62 EEG channels
in upper case plus M1, M2, VEO, HEO, 1000 Hz). Other folders (features, eye movements) and
non-CNT files are ignored. Subject and session are parsed as integers from the name.

Labels: trial boundaries and labels are not in the file; they are fixed per session (same for
every subject) in ``TRIALS`` (CBraMod/torcheeg tables; seconds from the recording start;
classes 0 disgust, 1 fear, 2 sad, 3 neutral, 4 happy). ``params.trial_table`` replaces the
table (tests inject a short one). Windows: non-overlapping 1 s (64 samples at 64 Hz) from each
trial start up to its end. A recording shorter than its session's last trial end is rejected
(``params.short_recording = "reject"``, default), or, with ``"keep_complete"``, keeps every
whole 1-s window that fits.

Signal: 17 monopolar channels (``neuript_jax.geometry.SEEDV17``; Fp1 … O2, the reference code's
best setting; ``channels=tcp20`` switches to the 20 TCP pairs), 0.1–30 Hz band-pass, 50 Hz
notch, 64 Hz. ``params.data_format`` is passed to MNE's CNT reader (``auto``/``int16``/
``int32``) when not ``auto``.

Split (``params.subject_splits``): NeurIPT's text puts subjects 1–10 in train and 11–15 in
test and names neither a validation set nor subject 16. Default: train 1–10, val 16 (the
unmentioned subject, so NeurIPT's train and test sets stay exactly as stated), test 11–15.
Subjects in no list are rejected with a reason. CBraMod's per-trial protocol (trials 0–4 /
5–9 / 10–14 of every session) needs per-window splits, which the engine does not support.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.recipes import base
from neuript_jax import geometry

LABELS = ("disgust", "fear", "sad", "neutral", "happy")

_S23_LABELS = [2, 1, 3, 0, 4, 4, 0, 3, 2, 1, 3, 4, 1, 2, 0]
TRIALS = {
    "1": {"starts": [30, 132, 287, 555, 773, 982, 1271, 1628, 1730, 2025, 2227, 2435, 2667,
                     2932, 3204],
          "ends": [102, 228, 524, 742, 920, 1240, 1568, 1697, 1994, 2166, 2401, 2607, 2901,
                   3172, 3359],
          "labels": [4, 1, 3, 2, 0, 4, 1, 3, 2, 0, 4, 1, 3, 2, 0]},
    "2": {"starts": [30, 299, 548, 646, 836, 1000, 1091, 1392, 1657, 1809, 1966, 2186, 2333,
                     2490, 2741],
          "ends": [267, 488, 614, 773, 967, 1059, 1331, 1622, 1777, 1908, 2153, 2302, 2428,
                   2709, 2817],
          "labels": _S23_LABELS},
    "3": {"starts": [30, 353, 478, 674, 825, 908, 1200, 1346, 1451, 1711, 2055, 2307, 2457,
                     2726, 2888],
          "ends": [321, 418, 643, 764, 877, 1147, 1284, 1418, 1679, 1996, 2275, 2425, 2664,
                   2857, 3066],
          "labels": _S23_LABELS},
}
"""Session → trial starts/ends (s) and labels (0–4), as DATASETS_DOWNSTREAM.md §4.3 lists them."""

_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)$")

CONFIG = base.RecipeConfig(
    name="seedv", dataset="SEED-V",
    channels=geometry.SEEDV17, montage="standard_1020",
    target_rate_hz=64.0, bandpass_hz=(0.1, 30.0), notch_hz=50.0,
    window_s=1.0, label_names=LABELS,
    params={"trial_table": TRIALS, "short_recording": "reject", "data_format": "auto",
            "subject_splits": {"train": list(range(1, 11)), "val": [16],
                               "test": list(range(11, 16))}})


class SeedV(base.Recipe):
  """SEED-V: hard-coded trial table → 1-s windows; split by subject lists."""

  def accepts(self, path: Path) -> bool:
    return path.suffix.lower() == ".cnt"

  def describe(self, path: Path, root: Path) -> base.RecordingInfo:
    m = _NAME.match(path.stem)
    if not m:
      raise base.Rejected(f"file name {path.name!r} is not <subject>_<session>_<date>.cnt")
    subject, session = int(m.group(1)), str(int(m.group(2)))
    if session not in self.config.params["trial_table"]:
      raise base.Rejected(f"session {session} has no entry in the trial table "
                          f"(sessions: {', '.join(self.config.params['trial_table'])})")
    lists = {k: [str(s) for s in v] for k, v in self.config.params["subject_splits"].items()}
    split = base.split_by_lists(str(subject), lists)
    return base.RecordingInfo(dataset=self.config.dataset, subject=str(subject),
                              session=session, recording=base.recording_id(path, root),
                              split=split)

  def open(self, path: Path, info: base.RecordingInfo):
    fmt = self.config.params["data_format"]
    if fmt == "auto":
      return None  # the generic reader
    import mne
    try:
      return mne.io.read_raw_cnt(path, data_format=fmt, preload=False, verbose="error")
    except Exception as e:  # MNE raises several types for bad CNT files
      raise base.Rejected(f"unreadable CNT file ({type(e).__name__}: {e})") from e

  def windows(self, ctx: base.RecordingContext):
    table = self.config.params["trial_table"][ctx.info.session]
    mode = self.config.params["short_recording"]
    if mode not in ("reject", "keep_complete"):
      raise ValueError(f"seedv: unknown params.short_recording {mode!r} "
                       "(reject | keep_complete)")
    last_end = max(table["ends"])
    if mode == "reject" and ctx.duration_s + 1e-9 < last_end:
      raise base.Rejected(f"recording is {ctx.duration_s:.1f} s long but session "
                          f"{ctx.info.session}'s trial table ends at {last_end} s")
    w = self.config.window_s
    out = []
    for start, end, label in zip(table["starts"], table["ends"], table["labels"]):
      t = float(start)
      while t + w <= min(float(end), ctx.duration_s) + 1e-9:
        out.append(base.WindowSpec(start_s=t, label=int(label), label_name=LABELS[label]))
        t += w
    return out


def build(**overrides) -> SeedV:
  return SeedV(base.override(CONFIG, **overrides))
