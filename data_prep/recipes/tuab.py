"""TUAB (TUH Abnormal EEG Corpus v3.0.1 / v2.0.0): normal vs abnormal, 10-s windows.

Input layout (``--input`` = the corpus root or any folder above ``edf/``):

* v3: ``edf/{train,eval}/{normal,abnormal}/01_tcp_ar/<subject>_<session>_<token>.edf``
* v2: ``edf/{train,eval}/{normal,abnormal}/01_tcp_ar/<grp>/<subject>/<session>_<date>/
  <subject>_<session>_<token>.edf``

Both are parsed from path tokens: split folder (``train``/``eval``), class folder, and the file
stem (``subject_session_token``). Label: ``normal`` → 0, ``abnormal`` → 1.

Signal: 20 TCP bipolar channels (``neuript_jax.geometry.TCP20``) from the ``EEG <X>-REF``
electrodes (extra and non-EEG channels ignored; a file missing an electrode is rejected with
the missing names), 0.1–30 Hz band-pass, 60 Hz notch, 64 Hz, non-overlapping 10-s windows
(640 samples) from the first sample of each file, remainder dropped. No artefact rejection.

Split: test = every ``eval/`` file. ``train/`` subjects are cut into train/val by
``params.val_rule``:

* ``"per_class_sorted"`` (default, CBraMod's deterministic rule): for each class folder,
  sort its subject ids as strings, the first ``int((1 - val_fraction) * n)`` → train, the
  rest → val. A subject that this puts in train for one class and val for the other is
  moved to val entirely, so no subject is in two splits (TUAB gotcha §1.6).
* ``"pooled_sorted"``: the same over the union of both classes' subjects.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.recipes import base
from neuript_jax import geometry

LABELS = ("normal", "abnormal")

CONFIG = base.RecipeConfig(
    name="tuab", dataset="TUAB",
    channels=geometry.TCP20, montage="standard_1020",
    target_rate_hz=64.0, bandpass_hz=(0.1, 30.0), notch_hz=60.0,
    window_s=10.0, label_names=LABELS,
    params={"val_fraction": 0.2, "val_rule": "per_class_sorted"})


def parse_path(path: Path) -> dict[str, str]:
  """{"split_folder", "class", "subject", "session", "token"} from a TUAB file path.

  Raises base.Rejected when the path has no train/eval or normal/abnormal folder.
  """
  parts = [p.lower() for p in path.parts[:-1]]
  split_folder = next((p for p in reversed(parts) if p in ("train", "eval")), None)
  cls = next((p for p in reversed(parts) if p in LABELS), None)
  if split_folder is None or cls is None:
    raise base.Rejected("not in a TUAB layout: the path needs a train/ or eval/ folder and a "
                        "normal/ or abnormal/ folder (edf/{train,eval}/{normal,abnormal}/...)")
  tokens = path.stem.split("_")
  if len(tokens) < 3:
    raise base.Rejected(f"TUAB file name {path.name!r} is not <subject>_<session>_<token>.edf")
  return {"split_folder": split_folder, "class": cls, "subject": tokens[0],
          "session": tokens[1], "token": tokens[2]}


class Tuab(base.Recipe):
  """TUAB: label from the class folder, test from eval/, train/val by sorted subjects."""

  def accepts(self, path: Path) -> bool:
    return path.suffix.lower() == ".edf"

  def describe(self, path: Path, root: Path) -> base.RecordingInfo:
    p = parse_path(path)
    return base.RecordingInfo(
        dataset=self.config.dataset, subject=p["subject"], session=p["session"],
        recording=base.recording_id(path, root),
        split="test" if p["split_folder"] == "eval" else "train",
        label=LABELS.index(p["class"]), label_name=p["class"],
        extra={"class": p["class"]})

  def assign_splits(self, infos):
    params = self.config.params
    keep = 1.0 - float(params["val_fraction"])
    rule = params["val_rule"]
    train = [i for i in infos if i.split != "test"]
    if rule == "per_class_sorted":
      groups = [[i for i in train if i.extra["class"] == c] for c in LABELS]
    elif rule == "pooled_sorted":
      groups = [train]
    else:
      raise ValueError(f"tuab: unknown params.val_rule {rule!r} "
                       "(per_class_sorted | pooled_sorted)")
    to_val: set[str] = set()
    for group in groups:
      subjects = sorted({i.subject for i in group})
      to_val.update(subjects[int(keep * len(subjects)):])
    for info in train:
      info.split = "val" if info.subject in to_val else "train"
    return infos


def build(**overrides) -> Tuab:
  return Tuab(base.override(CONFIG, **overrides))
