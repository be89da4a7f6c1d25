"""Miniature copies of the eight downstream datasets' real on-disk layouts, for tests.

Each ``build_<dataset>(root)`` writes a few tiny recordings (seconds to minutes) whose folder
structure, file names, channel labels, sampling rates, units (µV in the file) and label sources
follow ``shared/docs/DATASETS_DOWNSTREAM.md`` (§10 "Miniature copies"), and returns the dataset
root to pass to ``python -m data_prep.convert --input=ROOT``. Signals are pink noise plus a
10 Hz rhythm at ~10–30 µV, so unit handling is visible; they carry no class information.

Builders and what they write (details in each docstring):

* ``build_tuab``: ``tuh_eeg_abnormal/v3.0.1/edf/{train,eval}/{normal,abnormal}/01_tcp_ar/``
  (or the v2.0.0 nested layout), TUH ``EEG FP1-REF`` labels in shuffled order plus extras, one
  file at 256 Hz, one file missing ``EEG O2-REF``.
* ``build_tuev``: ``tuh_eeg_events/v2.0.1/edf/{train/<subject>, eval/<NNN>}/`` EDF + ``.rec``
  (+ one ``_ch000.lab``).
* ``build_bcic2a``: BNCI Horizon ``.mat`` files (``A0<s>{T,E}.mat`` with ``data`` run
  structs); ``build_bcic2a_gdf``: the competition layout, ``A0<s>{T,E}.gdf`` written by
  ``write_gdf`` (a minimal GDF 1.25 writer that MNE's ``read_raw_gdf`` reads; MNE cannot
  write GDF) plus ``classlabel`` ``.mat`` label files.
* ``build_seedv``: ``EEG_raw/<subject>_<session>_<date>.cnt`` Neuroscan CNT files written by
  ``write_cnt`` (a minimal CNT 3.x writer that MNE's ``read_raw_cnt`` reads), 66 channels at
  1000 Hz; the trial table is short and must be injected into the recipe (``SEEDV_TEST_TRIALS``).
* ``build_sleepedfx``: ``sleep-cassette/SC4<ss><n>E0-PSG.edf`` + ``SC4<ss><n>E<x>-Hypnogram.edf``
  and a ``sleep-telemetry`` ST pair; PSG with 30-s data records, hypnograms EDF+ annotations only.
* ``build_mental_arithmetic``: ``eeg-during-mental-arithmetic-tasks-1.0.0/SubjectNN_{1,2}.edf``
  + README/RECORDS/SHA256SUMS/subject-info.csv.
* ``build_mumtaz``: a flat folder of ``H S1 EC.edf``-style names (spaces, prefixed duplicates,
  TASK files, 20- and 22-channel files).
* ``build_physionet_p300``: ``erp-based-brain-computer-interface-recordings-1.0.0/files/sNN/
  rcNN.edf`` EDF+ with the flash annotations (``#`` for ``_`` from s06, a date string in s03).

``write_psg_for_hypnogram`` writes a synthetic Sleep-EDF PSG matching a real hypnogram's length.
"""

from __future__ import annotations

import datetime
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from data_prep.synthetic import pink_noise

# ---------------------------------------------------------------------------------------------
# Shared helpers.


def _signals_uv(seed: Sequence[int], n_channels: int, n_samples: int, sfreq: float
                ) -> np.ndarray:
  """[n_channels, n_samples] float64 µV: pink noise (~10 µV RMS) plus a 10 Hz rhythm."""
  rng = np.random.default_rng(list(seed))
  x = 10.0 * pink_noise(rng, n_channels, max(n_samples, 2), sfreq)[:, :n_samples]
  t = np.arange(n_samples) / sfreq
  amp = rng.uniform(5.0, 15.0, n_channels)[:, None]
  return x + amp * np.sin(2 * np.pi * 10.0 * t + rng.uniform(0, 6.3))[None, :]


def write_edf(path: Path, labels: Sequence[str], data_uv: np.ndarray, sfreq, *,
              annotations: Sequence[tuple[float, float | None, str]] = (),
              patient_additional: Sequence[str] = (), data_record_duration: float | None = None,
              dimensions: Sequence[str] | None = None) -> Path:
  """Write an EDF (EDF+ when ``annotations`` are given) with edfio; signals in µV.

  ``sfreq`` is one rate or one per signal (then ``data_uv`` is a list of 1-D arrays).
  """
  import edfio

  path.parent.mkdir(parents=True, exist_ok=True)
  rates = list(sfreq) if isinstance(sfreq, (list, tuple)) else [sfreq] * len(labels)
  dims = list(dimensions) if dimensions is not None else ["uV"] * len(labels)
  signals = []
  for label, x, fs, dim in zip(labels, data_uv, rates, dims):
    x = np.asarray(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-6:  # a constant signal still needs a non-empty physical range
      lo, hi = lo - 1.0, hi + 1.0
    signals.append(edfio.EdfSignal(x, sampling_frequency=float(fs), label=label,
                                   physical_dimension=dim, physical_range=(lo, hi)))
  patient = edfio.Patient(additional=tuple(patient_additional)) if patient_additional else None
  edf = edfio.Edf(signals, patient=patient, data_record_duration=data_record_duration,
                  annotations=[edfio.EdfAnnotation(o, d, t) for o, d, t in annotations] or None,
                  starttime=datetime.time(10, 0, 0))
  edf.write(path)
  return path


def _touch(path: Path, text: str = "") -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


# ---------------------------------------------------------------------------------------------
# TUAB.

TUH_ELECTRODES = ("FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8",
                  "T3", "T4", "T5", "T6", "A1", "A2", "FZ", "CZ", "PZ", "T1", "T2")
TUH_EXTRAS = ("PHOTIC-REF", "EEG EKG1-REF", "EEG 26-REF")


def _tuh_labels(seed: int, drop: Sequence[str] = (), suffix: str = "REF") -> list[str]:
  """Shuffled ``EEG <EL>-REF`` labels (minus ``drop``) plus TUH's non-EEG extras."""
  labels = [f"EEG {e}-{suffix}" for e in TUH_ELECTRODES if e not in drop] + list(TUH_EXTRAS)
  order = np.random.default_rng([seed, 17]).permutation(len(labels))
  return [labels[i] for i in order]


def _write_tuh_edf(path: Path, seed: int, duration_s: float, sfreq: float,
                   drop: Sequence[str] = (), age: int = 50) -> Path:
  labels = _tuh_labels(seed, drop)
  n = int(round(duration_s * sfreq))
  data = _signals_uv([seed, 1], len(labels), n, sfreq)
  return write_edf(path, labels, data, sfreq, patient_additional=(f"Age:{age}",))


TUAB_FILES = {
    # (split, class, subject, session, token, sfreq, dropped electrodes)
    "train/normal": [("aaaaaaaa", "s001", "t000", 250.0, ()),
                     ("aaaaaaab", "s001", "t000", 250.0, ()),
                     ("aaaaaaab", "s002", "t001", 250.0, ()),
                     ("aaaaaaac", "s001", "t000", 250.0, ())],
    "train/abnormal": [("aaaaaaad", "s001", "t000", 250.0, ()),
                       ("aaaaaaae", "s001", "t000", 250.0, ()),
                       ("aaaaaaaf", "s001", "t000", 250.0, ("O2",))],
    "eval/normal": [("aaaaaaag", "s001", "t000", 250.0, ())],
    "eval/abnormal": [("aaaaaaah", "s001", "t000", 256.0, ())],
}
"""The TUAB miniature: 9 files of 25 s (2 ten-second windows each); ``aaaaaaaf`` lacks O2."""


def build_tuab(root, *, duration_s: float = 25.0, layout: str = "v3") -> Path:
  """TUAB miniature (``TUAB_FILES``); ``layout`` "v3" (flat) or "v2" (nested, numeric ids).

  Returns ``root/tuh_eeg_abnormal/v3.0.1`` (or ``.../v2.0.0``).
  """
  base = Path(root) / "tuh_eeg_abnormal" / ("v3.0.1" if layout == "v3" else "v2.0.0")
  k = 0
  for folder, files in TUAB_FILES.items():
    for subject, session, token, sfreq, drop in files:
      k += 1
      if layout == "v3":
        path = base / "edf" / folder / "01_tcp_ar" / f"{subject}_{session}_{token}.edf"
      elif layout == "v2":
        sid = f"{7871 + 10 * (ord(subject[-1]) - ord('a')):08d}"
        path = (base / "edf" / folder / "01_tcp_ar" / sid[:3] / sid /
                f"{session}_2011_07_05" / f"{sid}_{session}_{token}.edf")
      else:
        raise ValueError(f"layout must be 'v3' or 'v2', got {layout!r}")
      _write_tuh_edf(path, k, duration_s, sfreq, drop, age=30 + k)
  _touch(base / "AAREADME.txt", "TUAB miniature for tests.\n")
  return base


# ---------------------------------------------------------------------------------------------
# TUEV.

TUEV_FILES = {
    # relative path (under edf/) -> .rec rows (channel, start_s, stop_s, code)
    "train/aaaaaaar/aaaaaaar_00000001.edf": [
        (0, 0.5, 1.5, 6),      # near the start: the reference wraps around
        (13, 5.0, 6.0, 1),
        (14, 5.0, 6.0, 1),     # the same event on a second channel
        (2, 10.0, 11.0, 4),
        (5, 14.0, 15.0, 5)],
    "train/aaaaaaas/aaaaaaas_00000001.edf": [
        (1, 3.0, 4.0, 2),
        (7, 9.0, 10.0, 3)],
    "train/aaaaaaat/aaaaaaat_00000001.edf": [
        (3, 8.0, 9.0, 6)],     # a one-line .rec
    "eval/000/bckg_000_a_.edf": [
        (0, 4.0, 5.0, 6),
        (1, 12.0, 13.0, 6)],
    "eval/001/pled_001_a_2.edf": [
        (9, 6.0, 7.0, 3),
        (10, 6.0, 7.0, 3),
        (4, 18.0, 19.0, 6)],   # ends within 2 s of the end: wraps around
}
"""The TUEV miniature: 5 EDFs of 20 s at 250 Hz and their ``.rec`` rows."""


def build_tuev(root, *, duration_s: float = 20.0, sfreq: float = 250.0) -> Path:
  """TUEV miniature (``TUEV_FILES``): EDF + ``.rec`` pairs, one ``_ch000.lab``.

  Returns ``root/tuh_eeg_events/v2.0.1``.
  """
  base = Path(root) / "tuh_eeg_events" / "v2.0.1"
  for k, (rel, rows) in enumerate(TUEV_FILES.items()):
    path = base / "edf" / rel
    _write_tuh_edf(path, 100 + k, duration_s, sfreq)
    text = "".join(f"{c},{s:.1f},{e:.1f},{code}\n" for c, s, e, code in rows)
    _touch(path.with_suffix(".rec"), text)
    if k == 0:
      names = {1: "spsw", 2: "gped", 3: "pled", 4: "eyem", 5: "artf", 6: "bckg"}
      lab = "".join(f"{int(s * 1e5)} {int(e * 1e5)} {names[code]}\n"
                    for c, s, e, code in rows if c == 0)
      _touch(path.with_name(path.stem + "_ch000.lab"), lab)
  return base


# ---------------------------------------------------------------------------------------------
# BCIC-IV-2a (BNCI Horizon MAT distribution).

BCIC2A_EEG = ("Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6",
              "CP3", "CP1", "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz")
"""The 22 EEG columns of the BNCI ``X`` matrices (then 3 EOG columns), MOABB's order."""

BCIC2A_FILES = {
    # file stem -> (number of EOG structs, labels per MI run)
    "A01T": (3, [[1, 2, 3, 4], [4, 3, 2, 1]]),
    "A01E": (3, [[2, 2, 1, 3], [4, 1, 3, 4]]),
    "A04T": (1, [[1, 1, 2, 2], [3, 3, 4, 4]]),
    "A06T": (3, [[1, 2, 3, 4], [1, 2, 3, 4]]),
    "A08E": (3, [[4, 4, 4, 1], [2, 3, 1, 2]]),
}
"""The BCIC-IV-2a miniature: per file, EOG structs then MI runs of 4 trials (labels 1–4)."""

BCIC2A_TRIAL_S = 8.0   # trial spacing in the miniature runs (s)
BCIC2A_RUN_LEAD_S = 3.0  # samples before the first trial of a run (s)


def build_bcic2a(root, *, sfreq: float = 250.0) -> Path:
  """BCIC-IV-2a miniature in the BNCI MAT layout (``BCIC2A_FILES``); returns ``root/001-2014``.

  Each ``.mat`` holds ``data``: a 1×N cell of run structs with ``X`` (samples × 25, µV),
  ``trial`` (1-based trial-start samples), ``y`` (1–4), ``fs``, ``classes``, ``artifacts``,
  ``gender``, ``age``; EOG structs have empty ``trial``/``y``.
  """
  import scipy.io

  base = Path(root) / "001-2014"
  base.mkdir(parents=True, exist_ok=True)
  classes = np.array(["left hand", "right hand", "feet", "tongue"], dtype=object)
  for k, (stem, (n_eog, runs)) in enumerate(BCIC2A_FILES.items()):
    structs = []
    for r in range(n_eog):
      n = int(10 * sfreq)
      x = _signals_uv([200 + k, r], 25, n, sfreq).T
      structs.append({"X": x, "trial": np.zeros((0, 1)), "y": np.zeros((0, 1)), "fs": sfreq,
                      "classes": classes, "artifacts": np.zeros((0, 1)), "gender": "M",
                      "age": 25.0})
    for r, labels in enumerate(runs):
      n = int((BCIC2A_RUN_LEAD_S + BCIC2A_TRIAL_S * len(labels) + 1.0) * sfreq)
      x = _signals_uv([300 + k, r], 25, n, sfreq).T
      starts = (BCIC2A_RUN_LEAD_S + BCIC2A_TRIAL_S * np.arange(len(labels))) * sfreq + 1
      structs.append({"X": x, "trial": starts.astype(np.float64)[:, None],
                      "y": np.asarray(labels, dtype=np.float64)[:, None], "fs": sfreq,
                      "classes": classes,
                      "artifacts": np.zeros((len(labels), 1)), "gender": "M", "age": 25.0})
    cell = np.empty((1, len(structs)), dtype=object)
    for i, s in enumerate(structs):
      cell[0, i] = s
    scipy.io.savemat(base / f"{stem}.mat", {"data": cell})
  return base


# BCIC-IV-2a, competition GDF distribution.

BCIC2A_GDF_LABELS = (("EEG-Fz", "EEG-0", "EEG-1", "EEG-2", "EEG-3", "EEG-4", "EEG-5", "EEG-C3",
                      "EEG-6", "EEG-Cz", "EEG-7", "EEG-C4", "EEG-8", "EEG-9", "EEG-10",
                      "EEG-11", "EEG-12", "EEG-13", "EEG-14", "EEG-Pz", "EEG-15", "EEG-16")
                     + ("EOG-left", "EOG-central", "EOG-right"))
"""The GDF channel labels of the competition files, in file order."""

BCIC2A_GDF_FILES = {
    # file stem -> labels (1-4) of the trials in each of two runs
    "A01T": [[1, 2, 3, 4], [4, 3, 2, 1]],
    "A01E": [[3, 3, 1, 2], [4, 1, 2, 4]],
    "A07T": [[2, 2, 1, 1], [3, 4, 3, 4]],
}
"""The GDF miniature: 8 trials per file; A0xT also gets a ``classlabel`` file, A0xE needs one.
A01T marks its second trial rejected (1023); A07T's third trial holds a run of samples at the
physical minimum (how MNE returns GDF samples that BioSig reads as NaN)."""


def write_gdf(path: Path, labels: Sequence[str], data_uv: np.ndarray, sfreq: int,
              events: Sequence[tuple[int, int, int]]) -> Path:
  """A GDF 1.25 file: int16 samples in 1-s records, physical range ±100 µV, event table mode 3.

  ``events``: (0-based sample, type code, duration in samples). Layout as MNE's GDF 1.x
  reader expects it: 256-byte fixed header, 256 bytes per channel header, data records
  (each channel's samples of one second in turn), then the event table (mode 3: 1-based
  uint32 positions, uint16 types, uint16 channels, uint32 durations).
  """
  n_ch, n = data_uv.shape
  n_rec = n // sfreq
  phys = 100.0
  dig = 32767
  fixed = bytearray(256)
  fixed[0:8] = b"GDF 1.25"
  fixed[8:88] = b"X X".ljust(80)
  fixed[88:168] = b"BCI Competition IV 2a miniature".ljust(80)
  fixed[168:184] = b"2005010112000000"
  struct.pack_into("<q", fixed, 184, 256 * (n_ch + 1))
  struct.pack_into("<q", fixed, 236, n_rec)
  struct.pack_into("<II", fixed, 244, 1, 1)
  struct.pack_into("<I", fixed, 252, n_ch)
  channels = b"".join(
      [lab.encode().ljust(16)[:16] for lab in labels] + [b" " * 80] * n_ch
      + [b"uV".ljust(8)] * n_ch
      + [struct.pack("<d", -phys)] * n_ch + [struct.pack("<d", phys)] * n_ch
      + [struct.pack("<q", -dig)] * n_ch + [struct.pack("<q", dig)] * n_ch
      + [b"HP:0.5Hz LP:100Hz N:50Hz".ljust(80)] * n_ch
      + [struct.pack("<i", sfreq)] * n_ch + [struct.pack("<i", 3)] * n_ch  # int16
      + [b"\0" * 32] * n_ch)
  digital = np.clip(np.round(data_uv[:, :n_rec * sfreq] * dig / phys), -dig, dig)
  records = digital.astype("<i2").reshape(n_ch, n_rec, sfreq).transpose(1, 0, 2)
  pos = np.array([e[0] + 1 for e in events], dtype="<u4")
  typ = np.array([e[1] for e in events], dtype="<u2")
  chn = np.zeros(len(events), dtype="<u2")
  dur = np.array([e[2] for e in events], dtype="<u4")
  table = (struct.pack("<B", 3) + int(sfreq).to_bytes(3, "little")
           + struct.pack("<I", len(events)) + pos.tobytes() + typ.tobytes() + chn.tobytes()
           + dur.tobytes())
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "wb") as f:
    f.write(bytes(fixed))
    f.write(channels)
    f.write(records.tobytes())
    f.write(table)
  return path


def build_bcic2a_gdf(root, *, sfreq: int = 250) -> Path:
  """BCIC-IV-2a miniature in the competition GDF layout (``BCIC2A_GDF_FILES``).

  Each run: event 32766 (new run) at its first sample, then per trial 768 (trial start,
  every ``BCIC2A_TRIAL_S`` from ``BCIC2A_RUN_LEAD_S``) and at +2 s the cue 769–772 (T files)
  or 783 (E files). Label files ``A0<s><T|E>.mat`` hold ``classlabel`` (n × 1, 1–4).
  Returns ``root/BCICIV_2a_gdf``.
  """
  import scipy.io

  base = Path(root) / "BCICIV_2a_gdf"
  run_s = BCIC2A_RUN_LEAD_S + BCIC2A_TRIAL_S * 4 + 1.0
  for k, (stem, runs) in enumerate(BCIC2A_GDF_FILES.items()):
    evaluation = stem.endswith("E")
    n_run = int(run_s * sfreq)
    data = _signals_uv([900 + k], len(BCIC2A_GDF_LABELS), n_run * len(runs), sfreq) * 0.5
    events = []
    flat = [y for run in runs for y in run]
    for r, run in enumerate(runs):
      events.append((r * n_run, 32766, 0))
      for j, y in enumerate(run):
        start = r * n_run + int((BCIC2A_RUN_LEAD_S + BCIC2A_TRIAL_S * j) * sfreq)
        events.append((start, 768, int(6 * sfreq)))
        events.append((start + 2 * sfreq, 783 if evaluation else 768 + y, int(1.25 * sfreq)))
        if stem == "A01T" and r == 0 and j == 1:
          events.append((start, 1023, int(6 * sfreq)))
        if stem == "A07T" and r == 0 and j == 2:
          gap = start + 3 * sfreq
          data[:, gap:gap + 10] = -100.0  # a run at the physical minimum
    write_gdf(base / f"{stem}.gdf", BCIC2A_GDF_LABELS, data, sfreq, sorted(events))
    scipy.io.savemat(base / f"{stem}.mat",
                     {"classlabel": np.asarray(flat, dtype=np.uint8)[:, None]})
  return base


# ---------------------------------------------------------------------------------------------
# SEED-V (Neuroscan CNT).

SEEDV_EEG = ("FP1", "FPZ", "FP2", "AF3", "AF4", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6",
             "F8", "FT7", "FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "T7", "C5",
             "C3", "C1", "CZ", "C2", "C4", "C6", "T8", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2",
             "CP4", "CP6", "TP8", "P7", "P5", "P3", "P1", "PZ", "P2", "P4", "P6", "P8", "PO7",
             "PO5", "PO3", "POZ", "PO4", "PO6", "PO8", "CB1", "O1", "OZ", "O2", "CB2")
SEEDV_CHANNELS = SEEDV_EEG + ("M1", "M2", "VEO", "HEO")

SEEDV_TEST_TRIALS = {
    "1": {"starts": [1, 5, 9], "ends": [4, 7, 12], "labels": [4, 1, 3]},
    "2": {"starts": [2, 6], "ends": [5, 10], "labels": [2, 0]},
    "3": {"starts": [1, 4], "ends": [3, 8], "labels": [1, 4]},
}
"""A short per-session trial table (seconds, labels 0–4) for the miniature CNT files."""

SEEDV_FILES = {
    # file name -> duration (s); 3_1 is shorter than the table's last trial end (12 s).
    "1_1_20180804.cnt": 13.0,
    "1_2_20180810.cnt": 11.0,
    "2_3_20180721.cnt": 9.0,
    "11_1_20180507.cnt": 13.0,
    "16_2_20180601.cnt": 11.0,
    "3_1_20180730.cnt": 10.0,
}


def write_cnt(path: Path, ch_names: Sequence[str], data_uv: np.ndarray, sfreq: int,
              session_date: str = "08/04/18", session_time: str = "10:00:00") -> Path:
  """A minimal Neuroscan CNT 3.x file (int16, interleaved samples, empty type-1 event table).

  Layout (as MNE's reader expects it): 900-byte SETUP header (channel count @370, rate @376,
  sample count @864, event-table offset @886, continuous seconds @890, channel offset @894),
  75 bytes per electrode (name @0, baseline @47, sensitivity @59, calibration @71), then
  int16 samples [n_samples, n_channels], then the TEEG event table. One LSB = 0.1 µV.
  """
  n_ch, n = data_uv.shape
  lsb_uv = 0.1
  header = bytearray(900)
  header[21:41] = b"1".ljust(20, b"\0")
  header[205:225] = b"session".ljust(20, b"\0")
  header[225:235] = session_date.encode().ljust(10, b"\0")
  header[235:247] = session_time.encode().ljust(12, b"\0")
  struct.pack_into("<H", header, 370, n_ch)
  struct.pack_into("<H", header, 376, int(sfreq))
  struct.pack_into("<i", header, 864, n)
  data_offset = 900 + 75 * n_ch
  event_offset = data_offset + 2 * n_ch * n
  struct.pack_into("<i", header, 886, event_offset)
  struct.pack_into("<f", header, 890, n / float(sfreq))
  struct.pack_into("<i", header, 894, 0)
  electrodes = bytearray(75 * n_ch)
  for i, name in enumerate(ch_names):
    o = 75 * i
    electrodes[o:o + 10] = name.encode()[:9].ljust(10, b"\0")
    angle = 2 * np.pi * i / max(n_ch, 1)                   # x, y layout position (@19, @23)
    struct.pack_into("<ff", electrodes, o + 19, float(np.cos(angle)), float(np.sin(angle)))
    struct.pack_into("<h", electrodes, o + 47, 0)          # baseline
    struct.pack_into("<f", electrodes, o + 59, 204.8)      # sensitivity
    struct.pack_into("<f", electrodes, o + 71, lsb_uv)     # calibration
  samples = np.clip(np.round(data_uv / lsb_uv), -32768, 32767).astype("<i2").T
  teeg = struct.pack("<Bll", 1, 0, 0)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "wb") as f:
    f.write(bytes(header))
    f.write(bytes(electrodes))
    f.write(samples.tobytes())
    f.write(teeg)
  return path


def build_seedv(root, *, sfreq: int = 1000) -> Path:
  """SEED-V miniature (``SEEDV_FILES``, 66 channels, 1000 Hz CNT); returns ``root/SEED-V``.

  Convert it with the recipe override ``params.trial_table=SEEDV_TEST_TRIALS``.
  """
  base = Path(root) / "SEED-V"
  for k, (name, duration) in enumerate(SEEDV_FILES.items()):
    n = int(duration * sfreq)
    write_cnt(base / "EEG_raw" / name, SEEDV_CHANNELS,
              _signals_uv([400 + k], len(SEEDV_CHANNELS), n, sfreq), sfreq)
  (base / "EEG_DE_features").mkdir(parents=True, exist_ok=True)
  return base


# ---------------------------------------------------------------------------------------------
# Sleep-EDFx.

SLEEP_HYPNOGRAM = [
    # (onset s, duration s, description) for a 600-s PSG; the last runs past the end.
    (0.0, 90.0, "Sleep stage W"),
    (90.0, 60.0, "Sleep stage 1"),
    (150.0, 120.0, "Sleep stage 2"),
    (270.0, 60.0, "Sleep stage 3"),
    (330.0, 60.0, "Sleep stage 4"),
    (390.0, 90.0, "Sleep stage R"),
    (480.0, 30.0, "Sleep stage ?"),
    (510.0, 30.0, "Movement time"),
    (540.0, 160.0, "Sleep stage W"),
]
"""Per 600-s miniature PSG: W 3+2, N1 2, N2 4, N3 2+2 (stage 4 → 3), R 3 epochs; 2 dropped."""

SLEEP_PAIRS = {
    "sleep-cassette": [("SC4001E0", "SC4001EC"), ("SC4002E0", "SC4002EC"),
                       ("SC4011E0", "SC4011EH"), ("SC4021E0", "SC4021EH")],
    "sleep-telemetry": [("ST7011J0", "ST7011JP"), ("ST7022J0", "ST7022JM")],
}


def write_sleep_psg(path: Path, duration_s: float, *, study: str = "SC", seed: int = 0,
                    sfreq: float = 100.0) -> Path:
  """A Sleep-EDF-like PSG (30-s data records): EEG Fpz-Cz, EEG Pz-Oz, EOG horizontal at
  ``sfreq``, then the SC 1-Hz channels or the ST ``EMG submental`` (100 Hz) + ``Marker`` (1 Hz)."""
  n = int(round(duration_s * sfreq))
  # At most 10 min of distinct signal, tiled: keeps day-long PSGs cheap to write.
  eeg = _signals_uv([500 + seed], 3, min(n, int(600 * sfreq)), sfreq)
  eeg = np.stack([np.resize(row, n) for row in eeg])
  labels = ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"]
  data, rates, dims = list(eeg), [sfreq] * 3, ["uV"] * 3
  n1 = int(round(duration_s))
  if study == "SC":
    for label, dim in (("Resp oro-nasal", ""), ("EMG submental", "uV"),
                       ("Temp rectal", "DegC"), ("Event marker", "")):
      labels.append(label)
      data.append(np.random.default_rng([seed, len(labels)]).normal(0, 1, n1))
      rates.append(1.0)
      dims.append(dim)
  else:
    labels += ["EMG submental", "Marker"]
    data += [np.random.default_rng([seed, 9]).normal(0, 5, n), np.zeros(n1)]
    rates += [sfreq, 1.0]
    dims += ["uV", ""]
  return write_edf(path, labels, data, rates, data_record_duration=30.0, dimensions=dims)


def write_hypnogram(path: Path, stages: Sequence[tuple[float, float, str]]) -> Path:
  """An annotations-only EDF+ hypnogram (one zero-length data record)."""
  return write_edf(path, [], [], [], annotations=stages)


def build_sleepedfx(root, *, duration_s: float = 600.0) -> Path:
  """Sleep-EDFx miniature (``SLEEP_PAIRS``, each PSG ``duration_s`` with ``SLEEP_HYPNOGRAM``).

  Returns ``root/sleep-edf-database-expanded-1.0.0``.
  """
  base = Path(root) / "sleep-edf-database-expanded-1.0.0"
  k = 0
  for folder, pairs in SLEEP_PAIRS.items():
    for psg, hyp in pairs:
      k += 1
      write_sleep_psg(base / folder / f"{psg}-PSG.edf", duration_s, study=psg[:2], seed=k)
      write_hypnogram(base / folder / f"{hyp}-Hypnogram.edf", SLEEP_HYPNOGRAM)
  _touch(base / "RECORDS", "".join(f"{f}/{p}-PSG.edf\n" for f, ps in SLEEP_PAIRS.items()
                                   for p, _ in ps))
  return base


def write_psg_for_hypnogram(hypnogram: Path, out_dir: Path, *, psg_name: str | None = None,
                            psg_end_s: float | None = None) -> Path:
  """A synthetic PSG paired with a (real) hypnogram, placed with a copy of it in ``out_dir``.

  The PSG length is ``psg_end_s`` or, by default, the onset of the hypnogram's last
  annotation (for SC4001EC-Hypnogram.edf: 79,500 s, where the real PSG ends), rounded down to
  whole 30-s records. Returns the PSG path (``<first 7 chars>0-PSG.edf`` by default).
  """
  import shutil

  import mne

  hypnogram = Path(hypnogram)
  ann = mne.read_annotations(hypnogram)
  end = float(psg_end_s if psg_end_s is not None else max(ann.onset))
  end = 30.0 * np.floor(end / 30.0)
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(hypnogram, out_dir / hypnogram.name)
  name = psg_name or f"{hypnogram.name[:7]}0-PSG.edf"
  return write_sleep_psg(out_dir / name, end, study=hypnogram.name[:2])


# ---------------------------------------------------------------------------------------------
# MentalArithmetic (PhysioNet eegmat).

MA_CHANNELS = ("EEG Fp1", "EEG Fp2", "EEG F3", "EEG F4", "EEG F7", "EEG F8", "EEG T3",
               "EEG T4", "EEG C3", "EEG C4", "EEG T5", "EEG T6", "EEG P3", "EEG P4", "EEG O1",
               "EEG O2", "EEG Fz", "EEG Cz", "EEG Pz", "EEG A2-A1", "ECG ECG")
MA_SUBJECTS = (0, 1, 2, 28, 32, 35)
"""Subject numbers of the miniature: 00–02 train, 28 val, 32 and 35 test."""


def build_mental_arithmetic(root, *, rest_s: float = 20.0, task_s: float = 10.0,
                            sfreq: float = 500.0) -> Path:
  """MentalArithmetic miniature: ``SubjectNN_1.edf`` (rest, ``rest_s``) and ``_2`` (task).

  Returns ``root/eeg-during-mental-arithmetic-tasks-1.0.0``.
  """
  base = Path(root) / "eeg-during-mental-arithmetic-tasks-1.0.0"
  for s in MA_SUBJECTS:
    for part, dur in ((1, rest_s), (2, task_s)):
      n = int(dur * sfreq)
      write_edf(base / f"Subject{s:02d}_{part}.edf", MA_CHANNELS,
                _signals_uv([600 + s, part], len(MA_CHANNELS), n, sfreq), sfreq)
  _touch(base / "README.txt", "EEG during mental arithmetic tasks (miniature).\n")
  _touch(base / "RECORDS", "".join(f"Subject{s:02d}_{p}.edf\n" for s in MA_SUBJECTS
                                   for p in (1, 2)))
  _touch(base / "SHA256SUMS.txt", "")
  _touch(base / "subject-info.csv", "Subject,Age,Gender,Recording year,Number of subtractions,"
         "Count quality\n" + "".join(f"Subject{s:02d},20,F,2011,10,1\n" for s in MA_SUBJECTS))
  return base


# ---------------------------------------------------------------------------------------------
# Mumtaz2016.

MUMTAZ_ORDER = ("Fp1", "F3", "C3", "P3", "O1", "F7", "T3", "T5", "Fz", "Fp2", "F4", "C4",
                "P4", "O2", "F8", "T4", "T6", "Cz", "Pz")
MUMTAZ_FILES = {
    # file name -> (duration s, 22 channels?)
    "H S1 EC.edf": (12.0, False),
    "H S1 EO.edf": (11.0, True),
    "H S2 EC.edf": (10.0, False),
    "H S3 EO.edf": (10.0, False),
    "6921143_H S15 EO.edf": (10.0, False),
    "6921959_H S15 EO.edf": (10.0, True),
    "MDD S1 EC.edf": (10.0, True),
    "MDD S1 EO.edf": (10.0, False),
    "MDD S1 TASK.edf": (10.0, False),
    "MDD S2 EO.edf": (10.0, False),
    "MDD S11  EC.edf": (15.0, False),
}
"""The Mumtaz miniature (256 Hz): windows are 5 s, so 12 s → 2, 15 s → 3, 10/11 s → 2."""


def build_mumtaz(root, *, sfreq: float = 256.0) -> Path:
  """Mumtaz2016 miniature: one flat folder (``MUMTAZ_FILES``); returns ``root/mumtaz2016``."""
  base = Path(root) / "mumtaz2016"
  for k, (name, (dur, wide)) in enumerate(MUMTAZ_FILES.items()):
    labels = [f"EEG {e}-LE" for e in MUMTAZ_ORDER] + ["EEG A2-A1"]
    if wide:
      labels += ["EEG 23A-23R", "EEG 24A-24R"]
    n = int(dur * sfreq)
    write_edf(base / name, labels, _signals_uv([700 + k], len(labels), n, sfreq), sfreq)
  return base


# ---------------------------------------------------------------------------------------------
# PhysioNet P300 (erpbci).

P300_EEG = ("Fp1", "AF7", "AF3", "F1", "F3", "F5", "F7", "FT7", "FC5", "FC3", "FC1", "C1", "C3",
            "C5", "T7", "TP7", "CP5", "CP3", "CP1", "P1", "P3", "P5", "P7", "P9", "PO7", "PO3",
            "O1", "Iz", "Oz", "POz", "Pz", "CPz", "Fpz", "Fp2", "AF8", "AF4", "AFz", "Fz", "F2",
            "F4", "F6", "F8", "FT8", "FC6", "FC4", "FC2", "FCz", "Cz", "C2", "C4", "C6", "T8",
            "TP8", "CP6", "CP4", "CP2", "P2", "P4", "P6", "P8", "P10", "PO8", "PO4", "O2")
P300_EXTRA = ("EARL", "EARR", "VEOGL", "VEOGR", "HEOGL", "HEOGR")
P300_ROWS = ("ABCDEF", "GHIJKL", "MNOPQR", "STUVWX", "YZ1234", "56789_")
P300_COLS = ("AGMSY5", "BHNTZ6", "CIOU17", "DJPV28", "EKQW39", "FLRX4_")

P300_RUNS = {
    # "sNN/rcNN" -> (target character, repetitions of the 12 flashes)
    "s01/rc01": ("A", 2),
    "s01/rc02": ("P", 1),
    "s03/rc01": ("Z", 1),
    "s06/rc01": ("_", 1),
    "s08/rc01": ("B", 1),   # an excluded subject
}
P300_FIRST_FLASH_S = 2.0
P300_SOA_S = 0.15


def p300_flashes(target: str, repetitions: int, hash_for_underscore: bool
                 ) -> list[tuple[float, str, int]]:
  """(onset s, flash string, label) of a miniature run: the 12 rows/columns in a fixed
  per-repetition order, one every ``P300_SOA_S`` from ``P300_FIRST_FLASH_S``."""
  out = []
  order = P300_ROWS + P300_COLS
  for r in range(repetitions):
    perm = np.random.default_rng([r, 31]).permutation(12)
    for j, i in enumerate(perm):
      text = order[i]
      label = int(target in text)
      if hash_for_underscore:
        text = text.replace("_", "#")
      out.append((P300_FIRST_FLASH_S + (12 * r + j) * P300_SOA_S, text, label))
  return out


def build_physionet_p300(root, *, sfreq: float = 256.0) -> Path:
  """PhysioNet P300 miniature (``P300_RUNS``): EDF+ with 70 channels at ``sfreq``.

  Annotations: ``#Tgt<C>_<run>`` then ``#start`` (s01, s02) or a date string (s03 on),
  ``#counted<k>of<n>`` (s03 on), the flash strings (``#`` for ``_`` from s06), ``#end``.
  Returns ``root/erp-based-brain-computer-interface-recordings-1.0.0`` (files under files/).
  """
  base = Path(root) / "erp-based-brain-computer-interface-recordings-1.0.0"
  for k, (key, (target, reps)) in enumerate(P300_RUNS.items()):
    subject, run = key.split("/")
    sub_no = int(subject[1:])
    flashes = p300_flashes(target, reps, hash_for_underscore=sub_no >= 6)
    last = flashes[-1][0]
    duration = float(np.ceil(last + 3.0))  # EDF data records are whole seconds
    ann = [(0.1, 0.0, f"#Tgt{target.replace('_', '#') if sub_no >= 6 else target}_{run}")]
    if sub_no <= 2:
      ann.append((0.2, 0.0, "#start"))
    else:
      ann.append((0.2, 0.0, "2009-05-14 10:21:07"))
    ann += [(o, 0.1, text) for o, text, _ in flashes]
    ann.append((last + 1.5, 0.0, "#end"))
    if sub_no >= 3:
      ann.append((last + 1.6, 0.0, f"#counted{reps}of{reps}"))
    labels = list(P300_EEG) + list(P300_EXTRA)
    n = int(duration * sfreq)
    write_edf(base / "files" / subject / f"{run}.edf", labels,
              _signals_uv([800 + k], len(labels), n, sfreq), sfreq, annotations=ann)
  return base


BUILDERS = {
    "tuab": build_tuab,
    "tuev": build_tuev,
    "bcic2a": build_bcic2a,
    "seedv": build_seedv,
    "sleepedfx": build_sleepedfx,
    "mental_arithmetic": build_mental_arithmetic,
    "mumtaz": build_mumtaz,
    "physionet_p300": build_physionet_p300,
}
"""Recipe name -> miniature builder."""
