"""Sleep-EDFx (PhysioNet Sleep-EDF Expanded, SC + ST): five sleep stages, 30-s epochs.

Input layout: ``sleep-cassette/SC4<ss><n>E0-PSG.edf`` with ``SC4<ss><n>E<x>-Hypnogram.edf``
and ``sleep-telemetry/ST7<ss><n>J0-PSG.edf`` with ``ST7<ss><n>J<x>-Hypnogram.edf``. Only
``*-PSG.edf`` files are converted; each is paired with the hypnogram in the same folder whose
name shares the first 7 characters (the scorer letter varies, so names are never derived by
substitution). A PSG without exactly one such hypnogram is rejected.

Labels (``read_hypnogram_epochs``): hypnogram annotations (EDF+, onsets relative to the PSG's
first sample) are cut into 30-s epochs from each annotation's onset; ``STAGE_MAP``: W → 0,
1 → 1, 2 → 2, 3 and 4 → 3 (AASM N3), R → 4; ``Sleep stage ?``, ``Movement time`` and any other
text are dropped. Epochs that do not lie wholly inside the PSG are dropped (hypnograms run
past the PSG end). ``params.crop_wake_min`` (default None = no trimming, which matches
NeurIPT's 457,652 epochs) keeps only epochs from that many minutes before the first to that
many after the last sleep epoch (braindecode/EEGPT use 30).

Signal: the recording's own ``EEG Fpz-Cz`` and ``EEG Pz-Oz`` derivations (read directly;
positions = electrode midpoints from ``standard_1005``), 64 Hz, no band-pass or notch
(NeurIPT lists "units, 64 Hz, CAR"). "CAR" is not applied: an average over two bipolar
derivations would make them mirror images (``reference`` stays ``none``). 30 s → 1,920 samples.

Split: random by subject (subject = study + id, e.g. ``SC400``, ``ST701``: SC and ST subject
numbers are different people; both nights go together). NeurIPT's "ratio of 60 ..." is cut
off; the default is 60/20/20 (``params.split_fractions``): subjects ordered by a SHA-256 hash
salted with ``params.split_seed``, the first ``round(0.6 n)`` → train, the next
``round(0.2 n)`` → val, the rest → test.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.recipes import base
from neuript_jax import geometry

LABELS = ("W", "N1", "N2", "N3", "REM")
STAGE_MAP = {"Sleep stage W": 0, "Sleep stage 1": 1, "Sleep stage 2": 2, "Sleep stage 3": 3,
             "Sleep stage 4": 3, "Sleep stage R": 4}
EPOCH_S = 30.0

CONFIG = base.RecipeConfig(
    name="sleepedfx", dataset="Sleep-EDFx",
    channels=geometry.SLEEP2, montage="standard_1005",
    target_rate_hz=64.0, bandpass_hz=None, notch_hz=None,
    window_s=EPOCH_S, label_names=LABELS,
    params={"crop_wake_min": None, "split_fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
            "split_seed": 0})


def find_hypnogram(psg: Path) -> Path:
  """The hypnogram beside ``psg`` sharing its first 7 characters; Rejected if not exactly one."""
  key = psg.name[:7]
  found = sorted(p for p in psg.parent.glob(f"{key}*-Hypnogram.edf") if p.name[:7] == key)
  if len(found) != 1:
    what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
    raise base.Rejected(f"{what} hypnogram named {key}?-Hypnogram.edf beside the PSG")
  return found[0]


def read_hypnogram_epochs(hypnogram: Path, psg_duration_s: float,
                          crop_wake_min: float | None = None) -> list[tuple[float, int]]:
  """(epoch start s, stage id 0–4) for every whole 30-s labelled epoch inside the PSG."""
  import mne

  ann = mne.read_annotations(hypnogram)
  epochs = []
  for onset, duration, desc in zip(ann.onset, ann.duration, ann.description):
    stage = STAGE_MAP.get(str(desc).strip())
    if stage is None:
      continue
    n = int(round(float(duration) / EPOCH_S))
    for k in range(n):
      start = float(onset) + k * EPOCH_S
      if start + EPOCH_S <= psg_duration_s + 1e-6:
        epochs.append((start, stage))
  epochs.sort()
  if crop_wake_min is not None:
    sleep = [t for t, s in epochs if s != 0]
    if sleep:
      lo = sleep[0] - 60.0 * crop_wake_min
      hi = sleep[-1] + EPOCH_S + 60.0 * crop_wake_min
      epochs = [(t, s) for t, s in epochs if t >= lo and t + EPOCH_S <= hi]
  return epochs


def hashed_subject_split(subjects, fractions, seed) -> dict[str, str]:
  """Subject → split: subjects ordered by a seeded SHA-256 hash, cut by rounded fractions."""
  unique = sorted(set(subjects), key=lambda s: (base.hash_fraction(s, f"seed{seed}"), s))
  total = float(sum(fractions.values()))
  names = list(fractions)
  out, start = {}, 0
  for i, name in enumerate(names):
    end = (len(unique) if i == len(names) - 1
           else min(len(unique), start + int(round(len(unique) * fractions[name] / total))))
    for s in unique[start:end]:
      out[s] = name
    start = end
  return out


def assign_hashed_splits(infos, params):
  """Set each RecordingInfo's split by `hashed_subject_split` with the recipe's
  params["split_fractions"] and params["split_seed"]; returns infos."""
  table = hashed_subject_split([i.subject for i in infos], params["split_fractions"],
                               params["split_seed"])
  for info in infos:
    info.split = table[info.subject]
  return infos


class SleepEdfx(base.Recipe):
  """Sleep-EDFx: PSG + hypnogram pairs → 30-s staged epochs; seeded subject split."""

  def accepts(self, path: Path) -> bool:
    return path.name.endswith("-PSG.edf")

  def describe(self, path: Path, root: Path) -> base.RecordingInfo:
    if path.name[:2] not in ("SC", "ST") or len(path.name) < 8:
      raise base.Rejected(f"file name {path.name!r} is not SC4<ss><n>E0-PSG.edf or "
                          "ST7<ss><n>J0-PSG.edf")
    hyp = find_hypnogram(path)
    return base.RecordingInfo(dataset=self.config.dataset, subject=path.name[:5],
                              session=path.name[5], recording=base.recording_id(path, root),
                              extra={"hypnogram": str(hyp)})

  def assign_splits(self, infos):
    return assign_hashed_splits(infos, self.config.params)

  def windows(self, ctx: base.RecordingContext):
    epochs = read_hypnogram_epochs(Path(ctx.info.extra["hypnogram"]), ctx.duration_s,
                                   self.config.params["crop_wake_min"])
    return [base.WindowSpec(start_s=t, label=s, label_name=LABELS[s]) for t, s in epochs]


def build(**overrides) -> SleepEdfx:
  return SleepEdfx(base.override(CONFIG, **overrides))
