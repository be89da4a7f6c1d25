"""PhysioNet P300 (erpbci 1.0.0): target vs non-target flashes, 2-s windows from −0.7 s.

Input layout: ``…/files/s<NN>/rc<NN>.edf`` (12 subjects, one EDF+ per spelled character; any
folder above ``s<NN>/`` works). Subject = ``sNN``, run = ``rcNN``. Subjects in
``params.exclude_subjects`` (default s08, s10, s12, as EEGPT and NeurIPT) are skipped by
``accepts`` (a protocol exclusion, not a rejection).

Labels from the EDF+ annotations: the target character is the 5th character of the
``#Tgt<C>_…`` annotation; every annotation whose text is one of the 12 row/column strings of
the 6×6 speller (``FLASHES``; ``_`` may be written ``#``, as from s06) is a flash, labelled 1
(target) if it contains the target character, else 0. Other annotations (``#start``, the date
string that replaces it from s03, ``#counted…``, ``#end``) are never flashes. A run without a
``#Tgt`` annotation is rejected. Windows: ``params.pre_s`` = 0.7 s before each flash onset,
2 s long (128 samples at 64 Hz); they overlap (SOA 150 ms).

Signal: 64 BioSemi EEG channels (``EEG_CHANNELS``; EARL/EARR and the EOG channels are not
used), CAR over the 64, then the 20 TCP pairs (T3/T4/T5/T6 = T7/T8/P7/P8; CAR cancels in
bipolar pairs). Notch 60 Hz as the paper states (``notch_hz=50`` for the UK mains these
recordings had), 64 Hz, no band-pass (none stated).

Split: NeurIPT's "random subject split into train/test" gives no ratio; the default is
60/20/20 train/val/test by subject (``params.split_fractions``; a validation set for model
selection), subjects ordered by a SHA-256 hash salted with ``params.split_seed``
(``sleepedfx.hashed_subject_split``).
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.recipes import base
from data_prep.recipes.sleepedfx import assign_hashed_splits
from neuript_jax import geometry

LABELS = ("non_target", "target")
EEG_CHANNELS = ("Fp1", "AF7", "AF3", "F1", "F3", "F5", "F7", "FT7", "FC5", "FC3", "FC1", "C1",
                "C3", "C5", "T7", "TP7", "CP5", "CP3", "CP1", "P1", "P3", "P5", "P7", "P9",
                "PO7", "PO3", "O1", "Iz", "Oz", "POz", "Pz", "CPz", "Fpz", "Fp2", "AF8", "AF4",
                "AFz", "Fz", "F2", "F4", "F6", "F8", "FT8", "FC6", "FC4", "FC2", "FCz", "Cz",
                "C2", "C4", "C6", "T8", "TP8", "CP6", "CP4", "CP2", "P2", "P4", "P6", "P8",
                "P10", "PO8", "PO4", "O2")
"""The 64 EEG channels in BioSemi file order (then EARL, EARR, VEOGL, VEOGR, HEOGL, HEOGR)."""
ROWS = ("ABCDEF", "GHIJKL", "MNOPQR", "STUVWX", "YZ1234", "56789_")
COLUMNS = ("AGMSY5", "BHNTZ6", "CIOU17", "DJPV28", "EKQW39", "FLRX4_")
FLASHES = frozenset(ROWS + COLUMNS)

_SUBJECT = re.compile(r"^s(\d+)$", re.IGNORECASE)
_RUN = re.compile(r"^rc(\d+)$", re.IGNORECASE)

CONFIG = base.RecipeConfig(
    name="physionet_p300", dataset="PhysioNetP300",
    channels=geometry.TCP20, montage="standard_1020",
    target_rate_hz=64.0, bandpass_hz=None, notch_hz=60.0,
    reference="car", car_channels=EEG_CHANNELS,
    window_s=2.0, label_names=LABELS,
    params={"pre_s": 0.7, "exclude_subjects": ["s08", "s10", "s12"],
            "split_fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "split_seed": 0})


def flash_windows(annotations, pre_s: float) -> list[tuple[float, int]]:
  """(window start s, label) per flash from (onset, duration, text) annotations.

  Raises base.Rejected when no ``#Tgt`` annotation names the target.
  """
  target = None
  for _, _, text in annotations:
    if text.startswith("#Tgt") and len(text) >= 5:
      target = text[4].replace("#", "_")
      break
  if target is None:
    raise base.Rejected("no '#Tgt<C>' annotation: the run's target character is unknown")
  out = []
  for onset, _, text in annotations:
    flash = text.strip().replace("#", "_")
    if flash in FLASHES:
      out.append((onset - pre_s, int(target in flash)))
  return out


class PhysioNetP300(base.Recipe):
  """erpbci: flashes → 2-s windows labelled target/non-target; seeded subject split."""

  def _subject(self, path: Path) -> str | None:
    m = _SUBJECT.match(path.parent.name)
    return f"s{int(m.group(1)):02d}" if m else None

  def accepts(self, path: Path) -> bool:
    if path.suffix.lower() != ".edf" or not _RUN.match(path.stem):
      return False
    subject = self._subject(path)
    excluded = {s.lower() for s in self.config.params["exclude_subjects"]}
    return subject is None or subject not in excluded  # no subject folder: rejected later

  def describe(self, path: Path, root: Path) -> base.RecordingInfo:
    subject = self._subject(path)
    if subject is None:
      raise base.Rejected(f"{path.name} is not inside a subject folder s<NN>/")
    return base.RecordingInfo(dataset=self.config.dataset, subject=subject,
                              session=path.stem.lower(), recording=base.recording_id(path, root))

  def assign_splits(self, infos):
    return assign_hashed_splits(infos, self.config.params)

  def windows(self, ctx: base.RecordingContext):
    pairs = flash_windows(ctx.annotations(), float(self.config.params["pre_s"]))
    return [base.WindowSpec(start_s=t, label=y, label_name=LABELS[y]) for t, y in pairs]


def build(**overrides) -> PhysioNetP300:
  return PhysioNetP300(base.override(CONFIG, **overrides))
