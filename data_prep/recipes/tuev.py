"""TUEV (TUH EEG Events Corpus v2.0.x): six event classes, 5-s windows around 1-s events.

Input layout (``--input`` = the corpus root or any folder above ``edf/``):

* train: ``edf/train/<subject>/<subject>_<nnnnnnnn>.edf`` + ``.rec`` (+ ``_chNNN.lab``)
* eval:  ``edf/eval/<NNN>/<event>_<NNN>_a_<k>.edf`` + ``.rec``

Labels: the ``.rec`` file beside each EDF, CSV rows ``channel,start_s,stop_s,code`` with
code 1 spsw, 2 gped, 3 pled, 4 eyem, 5 artf, 6 bckg; class id = code − 1. ``.lab`` files are
ignored (as by every reference pipeline). An EDF without a ``.rec`` is rejected.

Windows (CBraMod/LaBraM/BIOT ``BuildEvents``): the first source sample at or after the event
start, from ``params.pre_s`` = 2 s before it, 5 s long (320 samples at 64 Hz), so the 1-s event
sits in the middle. One window per ``.rec`` row by default (an event marked on several
channels gives several identical windows, as in the references); ``params.duplicates =
"collapse"`` keeps one window per (start, stop, code).

Edges (``params.edge``): the references index a copy of the signal concatenated with itself
three times, so windows near either end wrap around. ``"wrap"`` (default) reproduces this by
padding the recording with its last/first ``window_s`` seconds before filtering (the seams are
filtered together with the data, a small difference from the references, which filter first);
``"clamp"`` shifts such windows inside the recording; ``"drop"`` drops them (counted as
``outside_recording`` in the manifest).

Signal: 20 TCP bipolar channels, 0.1–30 Hz, 60 Hz notch, 64 Hz (as TUAB).

Split: test = every ``eval/`` file (subject id ``eval-<NNN>``; eval indices cannot be linked to
train subjects). ``train/`` subjects (the token before the first ``_``): sorted, the first
``int((1 - val_fraction) * n)`` → train, the rest → val (CBraMod's deterministic rule).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from data_prep.recipes import base
from neuript_jax import geometry

LABELS = ("spsw", "gped", "pled", "eyem", "artf", "bckg")

CONFIG = base.RecipeConfig(
    name="tuev", dataset="TUEV",
    channels=geometry.TCP20, montage="standard_1020",
    target_rate_hz=64.0, bandpass_hz=(0.1, 30.0), notch_hz=60.0,
    window_s=5.0, label_names=LABELS,
    params={"pre_s": 2.0, "duplicates": "keep", "edge": "wrap", "val_fraction": 0.2})


def read_rec(path: Path) -> list[tuple[int, float, float, int]]:
  """Rows (channel, start_s, stop_s, code) of a ``.rec`` file (a one-line file is one row).

  Raises base.Rejected for a malformed row or a code outside 1–6.
  """
  rows = []
  for n, line in enumerate(Path(path).read_text().splitlines(), 1):
    line = line.strip()
    if not line:
      continue
    try:
      ch, start, stop, code = line.split(",")[:4]
      row = (int(float(ch)), float(start), float(stop), int(float(code)))
    except ValueError as e:
      raise base.Rejected(f"malformed .rec line {n} in {Path(path).name}: {line!r}") from e
    if not 1 <= row[3] <= len(LABELS):
      raise base.Rejected(f".rec line {n} in {Path(path).name} has event code {row[3]} "
                          "(expected 1-6)")
    rows.append(row)
  return rows


class Tuev(base.Recipe):
  """TUEV: ``.rec`` events → 5-s windows; eval/ is test; train subjects sorted 80/20."""

  def accepts(self, path: Path) -> bool:
    return path.suffix.lower() == ".edf"

  def describe(self, path: Path, root: Path) -> base.RecordingInfo:
    parts = [p.lower() for p in path.parts[:-1]]
    split_folder = next((p for p in reversed(parts) if p in ("train", "eval")), None)
    if split_folder is None:
      raise base.Rejected("not in a TUEV layout: the path needs an edf/train/ or edf/eval/ "
                          "folder")
    rec = path.with_suffix(".rec")
    if not rec.exists():
      raise base.Rejected(f"no label file: {rec.name} is missing beside the EDF")
    if split_folder == "eval":
      subject, split = f"eval-{path.parent.name}", "test"
    else:
      subject, split = path.stem.split("_")[0], "train"
    return base.RecordingInfo(
        dataset=self.config.dataset, subject=subject, session="",
        recording=base.recording_id(path, root), split=split, extra={"rec": str(rec)})

  def assign_splits(self, infos):
    keep = 1.0 - float(self.config.params["val_fraction"])
    subjects = sorted({i.subject for i in infos if i.split != "test"})
    to_val = set(subjects[int(keep * len(subjects)):])
    for info in infos:
      if info.split != "test":
        info.split = "val" if info.subject in to_val else "train"
    return infos

  def _pad_s(self) -> float:
    return self.config.window_s

  def open(self, path: Path, info: base.RecordingInfo):
    """With ``edge="wrap"``: the recording padded circularly by ``window_s`` on each side."""
    if self.config.params["edge"] != "wrap":
      return None
    import mne

    from data_prep import readers

    raw = readers.open_raw(path)
    raw.load_data(verbose="error")
    data = raw.get_data()
    pad = min(int(round(self._pad_s() * raw.info["sfreq"])), data.shape[1])
    padded = np.concatenate([data[:, data.shape[1] - pad:], data, data[:, :pad]], axis=1)
    return mne.io.RawArray(padded, raw.info, verbose="error")

  def windows(self, ctx: base.RecordingContext):
    params = self.config.params
    edge = params["edge"]
    if edge not in ("wrap", "clamp", "drop"):
      raise ValueError(f"tuev: unknown params.edge {edge!r} (wrap | clamp | drop)")
    if params["duplicates"] not in ("keep", "collapse"):
      raise ValueError(f"tuev: unknown params.duplicates {params['duplicates']!r} "
                       "(keep | collapse)")
    rows = read_rec(Path(ctx.info.extra["rec"]))
    if params["duplicates"] == "collapse":
      seen, unique = set(), []
      for row in rows:
        if row[1:] not in seen:
          seen.add(row[1:])
          unique.append(row)
      rows = unique
    fs = ctx.sfreq
    if edge == "wrap":
      pad = min(int(round(self._pad_s() * fs)), int(round(ctx.duration_s * fs)) // 3)
      offset, duration = pad / fs, ctx.duration_s - 2 * pad / fs
    else:
      offset, duration = 0.0, ctx.duration_s
    out = []
    for _, start, _, code in rows:
      first = math.ceil(start * fs - 1e-9) / fs  # first sample at or after the event start
      s = first - float(params["pre_s"])
      if edge == "clamp":
        s = min(max(s, 0.0), duration - self.config.window_s)
      out.append(base.WindowSpec(start_s=s + offset, label=code - 1, label_name=LABELS[code - 1]))
    return out


def build(**overrides) -> Tuev:
  return Tuev(base.override(CONFIG, **overrides))
