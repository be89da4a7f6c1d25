"""BCIC-IV-2a (BNCI 2014-001): four-class motor imagery, 4-s windows, 16 bipolar pairs.

Two distributions circulate under the same file names; both are read (one folder holds one):

* BNCI Horizon MAT: ``A0<s>T.mat`` (training session) and ``A0<s>E.mat`` (evaluation
  session), s = 1–9 (``001-2014/`` from BNCI or MOABB). Each holds ``data``, a 1×N cell of
  run structs with ``X`` (samples × 25, µV: 22 EEG then 3 EOG), ``trial`` (1-based
  trial-start samples), ``y`` (labels 1–4), ``fs``. Structs with an empty ``y`` are the EOG
  calibration runs (3 per file, 1 in A04T), skipped by that property, never by position. The
  MI runs of a file are concatenated in order into one recording.
* Competition GDF: ``A0<s>{T,E}.gdf`` with the ``EEG-Fz``, ``EEG-0`` … ``EOG-right`` labels
  (renamed to MOABB's 10-10 names, ``GDF_TO_1010``), events as annotation strings: 768 trial
  start, 769–772 cue (T files), 783 cue unknown (E files). E-session labels come from the
  label file ``A0<s>E.mat`` (``classlabel``, in cue order); a missing label file rejects the
  E recording with a reason. Events are mapped by their code string, never by MNE's
  automatic integer ids.

A ``.mat`` file is classified by its variables: ``data`` → a recording (an input),
``classlabel`` → a label file (not an input).

Labels: class 1–4 − 1 → 0 left hand, 1 right hand, 2 feet, 3 tongue. All trials are kept,
including those marked rejected (1023), as every reference does (NeurIPT's 5,184 = 9 × 2 × 288).

Window: 4 s (256 samples at 64 Hz). ``params.window_reference`` chooses the reference point:
``"trial"`` (default: ``window_offset_s`` = 2 s after trial start = cue onset + 0 s, i.e.
the imagery period t = 2–6 s, as CBraMod and MOABB) or ``"cue"`` (``window_offset_s`` after
the cue, which the protocol puts ``cue_s`` = 2 s after trial start; NeurIPT's literal "2–6 s
after cue"). In GDF files the trial start is the last 768 event before the cue.

Missing samples (GDF): MNE returns the samples BioSig reads as NaN as the channel's physical
minimum. ``find_missing_runs`` flags runs of ≥ 3 identical samples at a channel's minimum;
``params.missing_samples = "keep"`` (default, as the references) keeps windows that overlap
them and logs a warning, ``"drop"`` drops those windows (counted in the log).

Signal: the 22 EEG channels named as MOABB does (Fz, FC3, …, POz), 16 bipolar pairs
(``neuript_jax.geometry.BCIC2A16``, positions from ``standard_1005``), 0.1–30 Hz band-pass,
no notch (the amplifier already applied a 50 Hz notch; NeurIPT lists none), 64 Hz.

Split: by subject, both sessions together: subjects 1–5 train, 6–7 val, 8–9 test
(``params.subject_splits``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from absl import logging

from data_prep.recipes import base
from neuript_jax import geometry

LABELS = ("left_hand", "right_hand", "feet", "tongue")
EEG_CHANNELS = ("Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4",
                "C6", "CP3", "CP1", "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz")
"""The 22 EEG columns of ``X`` in order (MOABB's names for the GDF's EEG-Fz, EEG-0, ...)."""
EOG_CHANNELS = ("EOG-left", "EOG-central", "EOG-right")
GDF_TO_1010 = dict(zip(
    ("EEG-Fz", "EEG-0", "EEG-1", "EEG-2", "EEG-3", "EEG-4", "EEG-5", "EEG-C3", "EEG-6",
     "EEG-Cz", "EEG-7", "EEG-C4", "EEG-8", "EEG-9", "EEG-10", "EEG-11", "EEG-12", "EEG-13",
     "EEG-14", "EEG-Pz", "EEG-15", "EEG-16"), EEG_CHANNELS))
"""GDF channel label -> 10-10 name (MOABB's list for BNCI 2014-001)."""
CUE_CODES = {"769": 1, "770": 2, "771": 3, "772": 4}
UNKNOWN_CUE = "783"
TRIAL_START = "768"

_NAME = re.compile(r"^A0?(\d)([TE])$", re.IGNORECASE)

CONFIG = base.RecipeConfig(
    name="bcic2a", dataset="BCIC-IV-2a",
    channels=geometry.BCIC2A16, montage="standard_1005",
    target_rate_hz=64.0, bandpass_hz=(0.1, 30.0), notch_hz=None,
    window_s=4.0, label_names=LABELS,
    params={"window_reference": "trial", "window_offset_s": 2.0, "cue_s": 2.0,
            "missing_samples": "keep",
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


def read_classlabel(path: Path) -> np.ndarray:
  """Labels 1–4 [n] from a competition label file (``classlabel``); Rejected if unusable."""
  import scipy.io

  try:
    mat = scipy.io.loadmat(path)
  except Exception as e:  # scipy raises several types for a non-MAT or corrupt file
    raise base.Rejected(f"unreadable label file {path.name} ({type(e).__name__}: {e})") from e
  if "classlabel" not in mat:
    raise base.Rejected(f"{path.name} has no 'classlabel' variable (a BNCI 'data' file is "
                        "not a label file)")
  return np.asarray(mat["classlabel"]).astype(np.int64).ravel()


def find_missing_runs(x: np.ndarray, min_run: int = 3) -> np.ndarray:
  """Bool [T]: samples where some channel of x [C, T] sits at its minimum for ≥ min_run samples.

  This is how MNE's GDF reader returns the samples BioSig reads as NaN (the physical minimum).
  """
  mask = np.zeros(x.shape[1], dtype=bool)
  for row in x:
    at_min = row == row.min()
    if at_min.sum() < min_run:
      continue
    edges = np.diff(np.concatenate([[0], at_min.astype(np.int8), [0]]))
    for start, stop in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]):
      if stop - start >= min_run:
        mask[start:stop] = True
  return mask


class Bcic2a(base.Recipe):
  """BCIC-IV-2a from the BNCI MAT files: trials → 4-s windows; subjects 1–5/6–7/8–9."""

  def accepts(self, path: Path) -> bool:
    suffix = path.suffix.lower()
    if not _NAME.match(path.stem):
      return False
    if suffix == ".gdf":
      return True
    if suffix != ".mat":
      return False
    import scipy.io
    try:
      return any(name == "data" for name, _, _ in scipy.io.whosmat(path))
    except Exception:  # not a MAT file: describe/open will never see it
      return False

  def describe(self, path: Path, root: Path) -> base.RecordingInfo:
    m = _NAME.match(path.stem)
    if not m:
      raise base.Rejected(f"file name {path.name!r} is not A0<subject><T|E>.mat/.gdf")
    number, session = int(m.group(1)), m.group(2).upper()
    extra = {}
    if path.suffix.lower() == ".gdf":
      labels = path.with_suffix(".mat")
      if session == "E" and not labels.exists():
        raise base.Rejected(f"the evaluation-session labels are not in the GDF; the label "
                            f"file {labels.name} (classlabel) is missing beside it")
      extra = {"format": "gdf", "classlabel": str(labels) if labels.exists() else None}
    lists = self.config.params["subject_splits"]
    split = base.split_by_lists(str(number), {k: [str(s) for s in v] for k, v in lists.items()})
    return base.RecordingInfo(dataset=self.config.dataset, subject=f"A{number:02d}",
                              session=session, recording=base.recording_id(path, root),
                              split=split, extra=extra)

  def open(self, path: Path, info: base.RecordingInfo):
    """MAT: the MI runs concatenated into a RawArray, one annotation per trial start.
    GDF: MNE's reader with channels renamed to 10-10 names."""
    import mne

    if info.extra.get("format") == "gdf":
      from data_prep import readers
      raw = readers.open_raw(path)
      rename = {k: v for k, v in GDF_TO_1010.items() if k in raw.ch_names}
      if len(rename) != len(GDF_TO_1010):
        missing = sorted(set(GDF_TO_1010) - set(rename))
        raise base.Rejected(f"GDF lacks the BCIC-IV-2a channel label(s) {', '.join(missing)}")
      raw.rename_channels(rename)
      raw.set_channel_types({n: "eog" for n in EOG_CHANNELS if n in raw.ch_names},
                            on_unit_change="ignore")
      return raw
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

  def _offsets(self) -> tuple[float, float]:
    """(window offset after trial start, cue time after trial start) in seconds."""
    params = self.config.params
    ref, cue = params["window_reference"], float(params["cue_s"])
    if ref == "trial":
      return float(params["window_offset_s"]), cue
    if ref == "cue":
      return cue + float(params["window_offset_s"]), cue
    raise ValueError(f"bcic2a: unknown params.window_reference {ref!r} (trial | cue)")

  def windows(self, ctx: base.RecordingContext):
    offset, cue_s = self._offsets()
    if ctx.info.extra.get("format") != "gdf":
      return base.windows_from_annotations(ctx, {n: n for n in LABELS}, LABELS, offset_s=offset)
    return self._gdf_windows(ctx, offset, cue_s)

  def _gdf_windows(self, ctx: base.RecordingContext, offset: float, cue_s: float):
    ann = ctx.annotations()
    starts = [o for o, _, d in ann if d.strip() == TRIAL_START]
    cue_codes = set(CUE_CODES) | {UNKNOWN_CUE}
    cues = [(o, d.strip()) for o, _, d in ann if d.strip() in cue_codes]
    if not cues:
      raise base.Rejected("no cue events (769-772 or 783) in the GDF annotations")
    label_file = ctx.info.extra.get("classlabel")
    if ctx.info.session == "E" or any(d == UNKNOWN_CUE for _, d in cues):
      if not label_file:
        raise base.Rejected("cues of unknown class (783) and no classlabel file")
      classes = read_classlabel(Path(label_file))
      if len(classes) != len(cues):
        raise base.Rejected(f"{Path(label_file).name} has {len(classes)} labels for "
                            f"{len(cues)} cue events")
    else:
      classes = np.array([CUE_CODES[d] for _, d in cues])
    out = []
    for (cue_t, _), y in zip(cues, classes):
      if not 1 <= y <= len(LABELS):
        raise base.Rejected(f"class label {y} outside 1-4")
      before = [t for t in starts if t <= cue_t]
      trial_t = before[-1] if before else cue_t - cue_s
      out.append(base.WindowSpec(start_s=trial_t + offset, label=int(y) - 1,
                                 label_name=LABELS[int(y) - 1]))
    return self._handle_missing(ctx, out)

  def _handle_missing(self, ctx: base.RecordingContext, specs):
    """Keep or drop (``params.missing_samples``) windows overlapping missing-value runs."""
    mode = self.config.params["missing_samples"]
    if mode not in ("keep", "drop"):
      raise ValueError(f"bcic2a: unknown params.missing_samples {mode!r} (keep | drop)")
    picks = [i for i, n in enumerate(ctx.raw.ch_names) if n in EEG_CHANNELS]
    missing = find_missing_runs(ctx.raw.get_data(picks=picks))
    if not missing.any():
      return specs
    w = int(round(self.config.window_s * ctx.sfreq))
    hit = [missing[max(0, int(round(s.start_s * ctx.sfreq))):
                   max(0, int(round(s.start_s * ctx.sfreq))) + w].any() for s in specs]
    logging.warning("%s: %d missing-value samples (GDF NaN codes); %d of %d windows overlap "
                    "them (%s)", ctx.path.name, int(missing.sum()), sum(hit), len(specs),
                    "dropped" if mode == "drop" else "kept")
    if mode == "drop":
      return [s for s, h in zip(specs, hit) if not h]
    return specs


def build(**overrides) -> Bcic2a:
  return Bcic2a(base.override(CONFIG, **overrides))
