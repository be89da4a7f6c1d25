"""Mumtaz2016 (MDD patients and healthy controls, figshare 4244171): 5-s windows, EO/EC only.

Input layout: one flat folder of EDF files named ``<group> S<n> <cond>.edf`` with spaces
(``H S1 EC.edf``, ``MDD S12 TASK.edf``; double spaces occur and are accepted: the name is
split on whitespace), group ``H`` or ``MDD``, condition ``EC``, ``EO`` or ``TASK``, sometimes
with a numeric prefix (``6921143_H S15 EO.edf``). Only the conditions in
``params.conditions`` (default EC and EO, as NeurIPT) are converted; TASK files are skipped
by ``accepts`` (a protocol exclusion, not a rejection). Names that do not parse are rejected.

Duplicates (``params.duplicates``): ``H S15 EO`` exists only as two prefixed copies.
``"keep_all"`` (default, as CBraMod: both copies land in the same split) or ``"keep_last"``
(only the copy whose file name sorts last is converted; the others are rejected as
duplicates, like the public pipeline that deletes ``6921143_``).

Labels: group, ``H`` → 0 healthy, ``MDD`` → 1. Windows: non-overlapping 5 s from the start.

Signal: ``EEG <X>-LE`` (linked ears) for the 19 10-20 electrodes, plus ``EEG A2-A1`` and in
some files ``EEG 23A-23R``/``EEG 24A-24R`` (ignored; channels are selected by name). NeurIPT:
units, 50 Hz notch, 64 Hz, CAR over the 19 electrodes, then the 20 TCP pairs (as for
MentalArithmetic; CAR cancels in bipolar pairs). No band-pass (``bandpass_hz`` switches it).

Split (``params.split_counts``): per group, subjects sorted by number, the first ``n_train`` →
train, the next ``n_val`` → val, all others → test. Default NeurIPT's MDD 24/5/5 and H 19/4/5
(the H counts sum to 28 while the data has 30 healthy subjects; the two extra go to test).
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.recipes import base
from neuript_jax import geometry

LABELS = ("healthy", "mdd")
GROUPS = {"H": 0, "MDD": 1}
ELECTRODES = ("Fp1", "F3", "C3", "P3", "O1", "F7", "T3", "T5", "Fz", "Fp2", "F4", "C4", "P4",
              "O2", "F8", "T4", "T6", "Cz", "Pz")
"""The 19 ``EEG <X>-LE`` electrodes in the files' order."""

_PREFIX = re.compile(r"^\d+_")

CONFIG = base.RecipeConfig(
    name="mumtaz", dataset="Mumtaz2016",
    channels=geometry.TCP20, montage="standard_1020",
    target_rate_hz=64.0, bandpass_hz=None, notch_hz=50.0,
    reference="car", car_channels=ELECTRODES,
    window_s=5.0, label_names=LABELS,
    params={"conditions": ["EC", "EO"], "duplicates": "keep_all",
            "split_counts": {"MDD": [24, 5, 5], "H": [19, 4, 5]}})


def parse_name(path: Path) -> tuple[str, int, str] | None:
  """(group, subject number, condition) from a Mumtaz file name, or None if it does not parse."""
  tokens = _PREFIX.sub("", path.stem).split()
  if len(tokens) != 3 or tokens[0].upper() not in GROUPS:
    return None
  m = re.fullmatch(r"S(\d+)", tokens[1], re.IGNORECASE)
  if not m:
    return None
  return tokens[0].upper(), int(m.group(1)), tokens[2].upper()


class Mumtaz(base.Recipe):
  """Mumtaz2016: group from the name, EO/EC only, per-group sorted subject counts."""

  def accepts(self, path: Path) -> bool:
    if path.suffix.lower() != ".edf":
      return False
    parsed = parse_name(path)
    conditions = {c.upper() for c in self.config.params["conditions"]}
    return parsed is None or parsed[2] in conditions  # unparsable names get a rejection

  def describe(self, path: Path, root: Path) -> base.RecordingInfo:
    parsed = parse_name(path)
    if parsed is None:
      raise base.Rejected(f"file name {path.name!r} is not '<H|MDD> S<n> <EC|EO|TASK>.edf'")
    group, number, cond = parsed
    mode = self.config.params["duplicates"]
    if mode == "keep_last":
      twins = sorted(p.name for p in path.parent.glob("*.edf")
                     if p.name != path.name and parse_name(p) == parsed)
      later = [n for n in twins if n > path.name]
      if later:
        raise base.Rejected(f"duplicate of {later[-1]!r} (params.duplicates=keep_last)")
    elif mode != "keep_all":
      raise ValueError(f"mumtaz: unknown params.duplicates {mode!r} (keep_all | keep_last)")
    return base.RecordingInfo(dataset=self.config.dataset, subject=f"{group}-S{number}",
                              session=cond, recording=base.recording_id(path, root),
                              label=GROUPS[group], label_name=LABELS[GROUPS[group]],
                              extra={"group": group, "number": number})

  def assign_splits(self, infos):
    counts = self.config.params["split_counts"]
    table = {}
    for group in GROUPS:
      n_train, n_val = (int(c) for c in counts[group][:2])
      numbers = sorted({i.extra["number"] for i in infos if i.extra["group"] == group})
      for k, number in enumerate(numbers):
        table[(group, number)] = ("train" if k < n_train else
                                  "val" if k < n_train + n_val else "test")
    for info in infos:
      info.split = table[(info.extra["group"], info.extra["number"])]
    return infos


def build(**overrides) -> Mumtaz:
  return Mumtaz(base.override(CONFIG, **overrides))
