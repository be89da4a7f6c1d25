"""``pretrain_tcp20``: the paper's pretraining pipeline (REFERENCE.md §1.1).

* recordings shorter than 5 min are rejected; the first and last minute are trimmed;
* 0.1-30 Hz band-pass, then a notch at the line frequency (``notch_hz``, default 60 Hz as for
  TUH/EEGMMIDB; ``--notch_hz=50`` for 50 Hz corpora);
* resampled to 64 Hz; the 20 TCP "double banana" bipolar channels (index 12 is Fp1-F3; the
  reference's Fp2-F3 typo is a model-side switch in ``neuript_jax.geometry``);
* non-overlapping 4 s windows (256 samples);
* a window is dropped if any |x| > 100 µV (``amplitude``) or if a channel is flat, i.e. every
  |x| < 3 µV in that channel (``flat_channel``). The paper's wording ("consistently below 3 µV
  or above 3 µV") is garbled; we read it as a flat channel. Counts per reason go to the
  manifest.

Ids: TUH names ``<subject>_s<NNN>_t<NNN>.edf`` give subject and session; EEGMMIDB
``S001R01.edf`` gives subject ``S001``; anything else uses the file stem. Every recording is
in ``train`` unless ``params.val_fraction`` > 0 holds out a hash-chosen fraction of subjects.
"""

from __future__ import annotations

import re

from data_prep import montages
from data_prep.recipes import base

CONFIG = base.RecipeConfig(
    name="pretrain_tcp20",
    dataset="pretrain",
    channels=montages.MONTAGES["tcp20"],
    montage="standard_1020",
    target_rate_hz=64.0,
    bandpass_hz=(0.1, 30.0),
    notch_hz=60.0,
    window_s=4.0,
    min_duration_s=300.0,
    trim_start_s=60.0,
    trim_end_s=60.0,
    max_abs_uv=100.0,
    flat_uv=3.0,
    params={"val_fraction": 0.0},
)

_TUH = re.compile(r"^(?P<subject>[a-z]{8}|\d{8})_s(?P<session>\d+)_t(?P<token>\d+)$")
_EEGMMIDB = re.compile(r"^(?P<subject>S\d{3})R(?P<session>\d+)$")


def subject_session(stem: str) -> tuple[str, str]:
  """(subject, session) from a TUH or EEGMMIDB file stem; (stem, "") otherwise."""
  for pattern in (_TUH, _EEGMMIDB):
    m = pattern.match(stem)
    if m:
      return m.group("subject"), m.group("session")
  return stem, ""


class PretrainTCP20(base.Recipe):
  """Sliding 4 s windows over the trimmed recording; ids from TUH/EEGMMIDB file names."""

  def describe(self, path, root):
    subject, session = subject_session(path.stem)
    val = float(self.config.params.get("val_fraction", 0.0))
    split = base.split_by_fraction(subject, {"train": 1.0 - val, "val": val}) if val else "train"
    return base.RecordingInfo(dataset=self.config.dataset, subject=subject, session=session,
                              recording=base.recording_id(path, root), split=split)


def build(**overrides) -> PretrainTCP20:
  return PretrainTCP20(base.override(CONFIG, **overrides))
