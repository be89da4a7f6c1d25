"""BCIC-IV-2a (BNCI 2014-001): four-class motor imagery, 4-s windows, 16 bipolar pairs.

Input layout: the BNCI Horizon MAT distribution, ``A0<s>T.mat`` (training session) and
``A0<s>E.mat`` (evaluation session), s = 1–9, in one folder (``001-2014/`` from BNCI or
MOABB). Each file holds ``data``, a 1×N cell of run structs with ``X`` (samples × 25, µV:
22 EEG then 3 EOG), ``trial`` (1-based trial-start samples), ``y`` (labels 1–4), ``fs``.
Structs with an empty ``y`` are the EOG calibration runs (3 per file, 1 in A04T) and are
skipped by that property, never by position. ``.mat`` files without ``data`` (the
competition's ``classlabel`` label files) are ignored. The competition's GDF files are
rejected with a reason: this recipe reads the MAT distribution only.

Labels: ``y − 1`` → 0 left hand, 1 right hand, 2 feet, 3 tongue. All 288 trials per session
are kept (as every reference does; NeurIPT's 5,184 = 9 × 2 × 288).

Window: 4 s (256 samples at 64 Hz). ``params.window_reference`` chooses the reference point:
``"trial"`` (default: ``window_offset_s`` = 2 s after trial start = cue onset + 0 s, i.e.
the imagery period t = 2–6 s, as CBraMod and MOABB) or ``"cue"`` (``window_offset_s`` after
the cue, which the protocol puts ``cue_s`` = 2 s after trial start; NeurIPT's literal "2–6 s
after cue").

Signal: the 22 EEG columns named as MOABB does (Fz, FC3, …, POz), 16 bipolar pairs
(``neuript_jax.geometry.BCIC2A16``, positions from ``standard_1005``), 0.1–30 Hz band-pass,
no notch (the amplifier already applied a 50 Hz notch; NeurIPT lists none), 64 Hz.
The runs of one file are concatenated in order (EOG runs dropped) into one recording.

Split: by subject, both sessions together: subjects 1–5 train, 6–7 val, 8–9 test
(``params.subject_splits``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from data_prep.recipes import base
from neuript_jax import geometry

LABELS = ("left_hand", "right_hand", "feet", "tongue")
EEG_CHANNELS = ("Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4",
                "C6", "CP3", "CP1", "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz")
"""The 22 EEG columns of ``X`` in order (MOABB's names for the GDF's EEG-Fz, EEG-0, ...)."""
EOG_CHANNELS = ("EOG-left", "EOG-central", "EOG-right")

_NAME = re.compile(r"^A0?(\d)([TE])$", re.IGNORECASE)

CONFIG = base.RecipeConfig(
    name="bcic2a", dataset="BCIC-IV-2a",
    channels=geometry.BCIC2A16, montage="standard_1005",
    target_rate_hz=64.0, bandpass_hz=(0.1, 30.0), notch_hz=None,
    window_s=4.0, label_names=LABELS,
    params={"window_reference": "trial", "window_offset_s": 2.0, "cue_s": 2.0,
            "subject_splits": {"train": [1, 2, 3, 4, 5], "val": [6, 7], "test": [8, 9]}})


def _field(run, name):
  """A run struct's field as an array (mat_struct or structured-array element)."""
  value = getattr(run, name) if hasattr(run, name) else run[name]
  return np.asarray(value)


def load_bnci_runs(path: Path) -> tuple[float, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
  """(fs, [(X µV [samples, 25], trial starts 0-based [n], labels 1–4 [n]) per MI run]).

  EOG runs (empty labels) are skipped. Raises base.Rejected for a file without ``data``.
  """
  import scipy.io

  try:
    mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
  except Exception as e:  # scipy raises several types for a non-MAT or corrupt file
    raise base.Rejected(f"unreadable MAT file ({type(e).__name__}: {e})") from e
  if "data" not in mat:
    keys = ", ".join(k for k in mat if not k.startswith("__"))
    raise base.Rejected(f"not a BNCI 2014-001 recording: no 'data' variable (has: {keys}); "
                        "a file with 'classlabel' is a label file of the GDF distribution")
  runs_in = np.atleast_1d(mat["data"])
  fs, runs = None, []
  for run in runs_in:
    y = np.atleast_1d(_field(run, "y")).astype(np.int64).ravel()
    if y.size == 0:
      continue
    x = np.atleast_2d(_field(run, "X")).astype(np.float64)
    trial = np.atleast_1d(_field(run, "trial")).astype(np.int64).ravel() - 1
    fs = float(_field(run, "fs"))
    if x.shape[1] != len(EEG_CHANNELS) + len(EOG_CHANNELS):
      raise base.Rejected(f"run X has {x.shape[1]} columns, expected 25 (22 EEG + 3 EOG)")
    if trial.size != y.size:
      raise base.Rejected(f"run has {trial.size} trial starts but {y.size} labels")
    runs.append((x, trial, y))
  if not runs:
    raise base.Rejected("no motor-imagery run (every struct has empty labels)")
  return fs, runs


class Bcic2a(base.Recipe):
  """BCIC-IV-2a from the BNCI MAT files: trials → 4-s windows; subjects 1–5/6–7/8–9."""

  def accepts(self, path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".gdf":
      return True
    if suffix != ".mat" or not _NAME.match(path.stem):
      return False
    import scipy.io
    try:
      return any(name == "data" for name, _, _ in scipy.io.whosmat(path))
    except Exception:  # not a MAT file: describe/open will never see it
      return False

  def describe(self, path: Path, root: Path) -> base.RecordingInfo:
    if path.suffix.lower() == ".gdf":
      raise base.Rejected("GDF files are not read by the bcic2a recipe: use the BNCI Horizon "
                          "MAT files (001-2014/A0<s>{T,E}.mat), which include all labels")
    m = _NAME.match(path.stem)
    if not m:
      raise base.Rejected(f"file name {path.name!r} is not A0<subject><T|E>.mat")
    number, session = int(m.group(1)), m.group(2).upper()
    lists = self.config.params["subject_splits"]
    split = base.split_by_lists(str(number), {k: [str(s) for s in v] for k, v in lists.items()})
    return base.RecordingInfo(dataset=self.config.dataset, subject=f"A{number:02d}",
                              session=session, recording=base.recording_id(path, root),
                              split=split)

  def open(self, path: Path, info: base.RecordingInfo):
    """The file's MI runs concatenated into one RawArray; one annotation per trial start."""
    import mne

    fs, runs = load_bnci_runs(path)
    onsets, labels, offset = [], [], 0
    for x, trial, y in runs:
      bad = (y < 1) | (y > len(LABELS))
      if bad.any():
        raise base.Rejected(f"labels outside 1-4: {sorted(set(y[bad].tolist()))}")
      onsets += ((offset + trial) / fs).tolist()
      labels += [LABELS[v - 1] for v in y]
      offset += x.shape[0]
    data = np.concatenate([x for x, _, _ in runs], axis=0).T * 1e-6  # µV -> V
    names = list(EEG_CHANNELS) + list(EOG_CHANNELS)
    ch_types = ["eeg"] * len(EEG_CHANNELS) + ["eog"] * len(EOG_CHANNELS)
    raw = mne.io.RawArray(data, mne.create_info(names, fs, ch_types), verbose="error")
    raw.set_annotations(mne.Annotations(onsets, [0.0] * len(onsets), labels))
    return raw

  def windows(self, ctx: base.RecordingContext):
    params = self.config.params
    ref = params["window_reference"]
    if ref == "trial":
      offset = float(params["window_offset_s"])
    elif ref == "cue":
      offset = float(params["cue_s"]) + float(params["window_offset_s"])
    else:
      raise ValueError(f"bcic2a: unknown params.window_reference {ref!r} (trial | cue)")
    return base.windows_from_annotations(ctx, {n: n for n in LABELS}, LABELS, offset_s=offset)


def build(**overrides) -> Bcic2a:
  return Bcic2a(base.override(CONFIG, **overrides))
