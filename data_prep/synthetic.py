"""Synthetic EEG: the project's embedded default corpus (no real EEG can be downloaded here).

``make_recording`` builds one multi-channel recording (an ``mne.io.RawArray``, volts as MNE
stores them, values in the tens of µV) from these components, all deterministic for a seed:

* background: spatially correlated 1/f^1.6 noise (flattening below 1 Hz), ~12 µV RMS per
  channel;
* posterior alpha rhythm (per-subject frequency in 8.5–11.5 Hz), waxing and waning, strongest
  at O1/O2 and falling off over P3/P4/Pz, weak frontally;
* eye blinks at Fp1/Fp2 (decaying backwards), 60–110 µV monophasic, ~300 ms;
* muscle bursts over the temporal chain (broadband 20–100 Hz, 30–60 µV,
  0.5–2 s, every 8–25 s);
* occasional focal spike-and-slow-wave complexes;
* line noise at ``line_freq`` (50 or 60 Hz);
* labelled events (annotations named by class, ``CLASSES``) with class-specific patterns:
  ``frontal_theta`` (6 Hz burst at Fz/F3/F4), ``left_central_beta`` (~20 Hz burst at C3),
  ``right_central_beta`` (~20 Hz burst at C4), ``parietal_erp`` (N1/P3 evoked response at
  Pz/P3/P4, repeated each second of the event). Each event lasts ``event_s`` seconds.

Subjects differ in alpha frequency and amplitude, background level, blink rate and class
pattern gains, so a subject-level split is meaningful.

``write_corpus`` writes the default corpus layout::

    DIR/corpus.json                       classes, subjects, files, generator settings
    DIR/sub-01/sub-01_rec-01.edf          TUH-style names "EEG FP1-REF", legacy T3/T4/T5/T6
    DIR/sub-01/sub-01_rec-02.edf          plain 10-20 names (Fp1, T7, P7, ...)
    DIR/sub-01/sub-01_rec-03.fif          plain names, FIF (or BrainVision with formats=)
    ...

Every file carries the class annotations, so the same corpus serves pretraining (annotations
ignored) and fine-tuning: the ``generic`` recipe with ``--label_source=annotations
--label_map=<GENERIC_LABEL_MAP>`` labels one window per event, and its default subject id (the
file stem up to the first ``_``) is ``sub-XX``, so its splits are subject-level.
BrainVision files read back with descriptions prefixed ``Comment/`` (MNE's convention).

CLI: ``python -m data_prep.synthetic --output=DIR [--n_subjects=6] [--recordings=3]
[--minutes=6] [--sfreq=256] [--line_freq=60] [--seed=0] [--formats=edf,edf,fif]``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

# Standard 10-20 electrodes written by the generator, in file order (modern names).
ELECTRODES_1020 = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8",
                   "P7", "P3", "Pz", "P4", "P8", "O1", "O2", "A1", "A2")

# Modern -> legacy names used by TUH-style files.
_LEGACY = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}

BACKGROUND_EXPONENT = 1.6
"""Aperiodic exponent of the background PSD, ∝ 1/(f + 1 Hz)^exponent (scalp EEG: ~1–2)."""

CLASSES = ("frontal_theta", "left_central_beta", "right_central_beta", "parietal_erp")
"""Event classes, in label-id order; annotation descriptions are these strings."""

GENERIC_LABEL_MAP = ",".join(f"{c}={c}" for c in CLASSES)
"""``--label_map`` for ``python -m data_prep.convert --recipe=generic
--label_source=annotations`` on a synthetic corpus (each annotation is its own class)."""

# Centre electrode(s) of each class pattern and the spatial spread (metres).
_CLASS_CENTRES = {
    "frontal_theta": ("Fz",),
    "left_central_beta": ("C3",),
    "right_central_beta": ("C4",),
    "parietal_erp": ("Pz",),
}


def channel_label(electrode: str, naming: str) -> str:
  """File label for a modern 10-20 electrode name: ``naming`` is "plain" or "tuh".

  "tuh" gives TUH's ``EEG FP1-REF`` style (upper case, legacy T3/T4/T5/T6).
  """
  if naming == "plain":
    return electrode
  if naming == "tuh":
    return f"EEG {_LEGACY.get(electrode, electrode).upper()}-REF"
  raise ValueError(f"naming must be 'plain' or 'tuh', got {naming!r}")


@dataclasses.dataclass(frozen=True)
class SubjectParams:
  """Per-subject variation (drawn from the corpus seed and the subject index)."""
  alpha_hz: float         # posterior alpha frequency
  alpha_uv: float         # alpha amplitude at O1/O2 (peak of the sinusoid, µV)
  background_uv: float    # background RMS per channel (µV)
  blink_every_s: float    # mean blink interval (s)
  class_gain: float       # gain of the class-specific patterns
  beta_hz: float          # frequency of the central beta bursts
  line_uv: float          # line-noise amplitude (µV)

  @staticmethod
  def draw(seed: int, subject: int) -> "SubjectParams":
    rng = np.random.default_rng([seed, subject, 7919])
    return SubjectParams(
        alpha_hz=float(rng.uniform(8.5, 11.5)),
        alpha_uv=float(rng.uniform(12.0, 22.0)),
        background_uv=float(rng.uniform(9.0, 14.0)),
        blink_every_s=float(rng.uniform(6.0, 14.0)),
        class_gain=float(rng.uniform(0.8, 1.2)),
        beta_hz=float(rng.uniform(18.0, 22.0)),
        line_uv=float(rng.uniform(3.0, 10.0)),
    )


def _positions(electrodes: Sequence[str]) -> np.ndarray:
  """[N, 3] template positions in metres (via the project's geometry module)."""
  from neuript_jax.geometry import electrode_positions
  return electrode_positions(list(electrodes), "standard_1020")


def _spatial_weights(pos: np.ndarray, centre: np.ndarray, sigma_m: float) -> np.ndarray:
  """Gaussian fall-off [N] of a source at ``centre`` (metres) over channel positions."""
  d2 = np.sum((pos - centre) ** 2, axis=1)
  return np.exp(-d2 / (2.0 * sigma_m ** 2))


def pink_noise(rng: np.random.Generator, n_channels: int, n_samples: int, sfreq: float,
               knee_hz: float = 1.0, exponent: float = 1.0) -> np.ndarray:
  """[n_channels, n_samples] unit-RMS noise with PSD ∝ 1/(f + knee_hz)^exponent."""
  spec = rng.standard_normal((n_channels, n_samples // 2 + 1)) + 1j * rng.standard_normal(
      (n_channels, n_samples // 2 + 1))
  f = np.fft.rfftfreq(n_samples, 1.0 / sfreq)
  spec *= (f + knee_hz) ** (-exponent / 2.0)
  spec[:, 0] = 0.0
  x = np.fft.irfft(spec, n=n_samples, axis=1)
  return x / x.std(axis=1, keepdims=True)


def _band_noise(rng: np.random.Generator, n: int, sfreq: float, lo: float, hi: float
                ) -> np.ndarray:
  """[n] unit-RMS noise band-limited to [lo, hi] Hz (FFT masking)."""
  spec = np.fft.rfft(rng.standard_normal(n))
  f = np.fft.rfftfreq(n, 1.0 / sfreq)
  spec[(f < lo) | (f > hi)] = 0.0
  x = np.fft.irfft(spec, n=n)
  return x / max(x.std(), 1e-12)


def _bump(n: int) -> np.ndarray:
  """[n] smooth non-negative bump with peak 1 (Hann window)."""
  return np.hanning(n + 2)[1:-1] if n > 0 else np.zeros(0)


def _event_schedule(rng: np.random.Generator, duration_s: float, event_s: float
                    ) -> list[tuple[float, str]]:
  """(onset s, class) pairs: events of ``event_s`` separated by 1.5–4 s gaps, classes balanced."""
  onsets, t = [], 2.0
  while t + event_s + 1.0 <= duration_s:
    onsets.append(t)
    t += event_s + rng.uniform(1.5, 4.0)
  # Balanced classes in a shuffled order.
  labels = [CLASSES[i % len(CLASSES)] for i in range(len(onsets))]
  rng.shuffle(labels)
  return list(zip(onsets, labels))


def make_recording(subject: int = 0, recording: int = 0, *, seed: int = 0,
                   duration_s: float = 360.0, sfreq: float = 256.0, line_freq: float = 60.0,
                   naming: str = "plain", electrodes: Sequence[str] = ELECTRODES_1020,
                   event_s: float = 4.0, with_events: bool = True):
  """One synthetic recording as an ``mne.io.RawArray`` (EEG channels, volts).

  Signals are [len(electrodes), round(duration_s * sfreq)]; annotations hold the class events
  (description = class name from ``CLASSES``, duration ``event_s``). Deterministic for
  (seed, subject, recording). ``naming`` picks the channel labels (``channel_label``).
  """
  import mne

  params = SubjectParams.draw(seed, subject)
  rng = np.random.default_rng([seed, subject, recording, 104729])
  n = int(round(duration_s * sfreq))
  t = np.arange(n) / sfreq
  electrodes = list(electrodes)
  pos = _positions(electrodes)
  n_ch = len(electrodes)
  idx = {e: i for i, e in enumerate(electrodes)}

  # 1/f background: a spatially smooth part (kernel square root) plus a local part.
  d2 = np.sum((pos[:, None, :] - pos[None, :, :]) ** 2, axis=-1)
  kernel = np.exp(-d2 / (2.0 * 0.045 ** 2))
  w, v = np.linalg.eigh(kernel)
  mix = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
  smooth = mix @ pink_noise(rng, n_ch, n, sfreq, exponent=BACKGROUND_EXPONENT)
  smooth /= smooth.std(axis=1, keepdims=True)
  local = pink_noise(rng, n_ch, n, sfreq, exponent=BACKGROUND_EXPONENT)
  x = params.background_uv * (0.8 * smooth + 0.6 * local)

  # Posterior alpha: one waxing/waning generator, weighted towards O1/O2.
  occ = pos[[idx["O1"], idx["O2"]]].mean(axis=0) if {"O1", "O2"} <= idx.keys() else pos.mean(0)
  w_alpha = _spatial_weights(pos, occ, 0.05)
  envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 0.07 * t + rng.uniform(0, 2 * np.pi))
  phase_jitter = np.cumsum(rng.normal(0.0, 0.02, n))
  alpha = np.sin(2 * np.pi * params.alpha_hz * t + phase_jitter) * envelope
  x += params.alpha_uv * w_alpha[:, None] * alpha[None, :]

  # Eye blinks at Fp1/Fp2.
  if {"Fp1", "Fp2"} <= idx.keys():
    fp = pos[[idx["Fp1"], idx["Fp2"]]].mean(axis=0)
    w_blink = _spatial_weights(pos, fp, 0.04)
    bt = rng.uniform(0.5, params.blink_every_s)
    blink_len = int(0.3 * sfreq)
    while bt < duration_s - 0.5:
      s = int(bt * sfreq)
      e = min(s + blink_len, n)
      x[:, s:e] += rng.uniform(60.0, 110.0) * w_blink[:, None] * _bump(blink_len)[None, :e - s]
      bt += rng.exponential(params.blink_every_s) + 0.5

  # Muscle bursts over the temporal chain (broadband, mostly above 20 Hz).
  temporal = [e for e in ("F7", "T7", "P7", "F8", "T8", "P8") if e in idx]
  mt = rng.uniform(5.0, 30.0)
  while temporal and mt < duration_s - 2.0:
    side = temporal[:3] if rng.random() < 0.5 else temporal[3:]
    length = int(rng.uniform(0.5, 2.0) * sfreq)
    s = int(mt * sfreq)
    env = _bump(length)
    for e in side:
      burst = _band_noise(rng, length, sfreq, 20.0, min(100.0, sfreq / 2 - 1))
      x[idx[e], s:s + length] += rng.uniform(30.0, 60.0) * env * burst
    mt += rng.uniform(8.0, 25.0)

  # Occasional focal spike-and-slow-wave complexes.
  st = rng.uniform(20.0, 60.0)
  spike_t = np.arange(int(0.07 * sfreq)) / sfreq
  slow_t = np.arange(int(0.25 * sfreq)) / sfreq
  while st < duration_s - 1.0:
    focus = pos[rng.integers(n_ch)]
    w_spk = _spatial_weights(pos, focus, 0.035)
    spike = -np.sin(np.pi * spike_t / spike_t[-1]) ** 2 * rng.uniform(50.0, 80.0)
    slow = np.sin(np.pi * slow_t / slow_t[-1]) * 25.0
    shape = np.concatenate([spike, slow])
    s = int(st * sfreq)
    x[:, s:s + len(shape)] += w_spk[:, None] * shape[None, :min(len(shape), n - s)]
    st += rng.uniform(40.0, 90.0)

  # Line noise (slightly different amplitude per channel).
  x += (params.line_uv * rng.uniform(0.7, 1.3, n_ch))[:, None] * np.sin(
      2 * np.pi * line_freq * t + rng.uniform(0, 2 * np.pi))[None, :]

  # Labelled events.
  onsets, labels = [], []
  if with_events:
    for onset, label in _event_schedule(rng, duration_s, event_s):
      s, length = int(onset * sfreq), int(event_s * sfreq)
      x[:, s:s + length] += params.class_gain * _class_pattern(
          label, rng, pos, idx, length, sfreq, params)
      onsets.append(onset)
      labels.append(label)

  ch_names = [channel_label(e, naming) for e in electrodes]
  info = mne.create_info(ch_names, sfreq, "eeg")
  raw = mne.io.RawArray(x * 1e-6, info, verbose=False)
  raw.info["line_freq"] = line_freq
  raw.set_annotations(mne.Annotations(onsets, [event_s] * len(onsets), labels))
  return raw


def _class_pattern(label: str, rng: np.random.Generator, pos: np.ndarray, idx: dict,
                   length: int, sfreq: float, params: SubjectParams) -> np.ndarray:
  """[N, length] µV pattern added during one event of class ``label``."""
  centres = [idx[c] for c in _CLASS_CENTRES[label] if c in idx]
  centre = pos[centres].mean(axis=0) if centres else pos.mean(axis=0)
  tt = np.arange(length) / sfreq
  env = _bump(length) ** 0.5
  if label == "frontal_theta":
    w = _spatial_weights(pos, centre, 0.04)
    sig = 18.0 * env * np.sin(2 * np.pi * rng.uniform(5.5, 6.5) * tt + rng.uniform(0, 6.3))
  elif label in ("left_central_beta", "right_central_beta"):
    w = _spatial_weights(pos, centre, 0.03)
    sig = 14.0 * env * np.sin(2 * np.pi * (params.beta_hz + rng.normal(0, 0.3)) * tt
                              + rng.uniform(0, 6.3))
  elif label == "parietal_erp":
    w = _spatial_weights(pos, centre, 0.045)
    period = int(sfreq)  # one evoked response per second of the event
    local = np.arange(period) / sfreq
    erp = (-8.0 * np.exp(-((local - 0.10) / 0.03) ** 2)
           + 22.0 * np.exp(-((local - 0.35) / 0.08) ** 2))
    sig = np.resize(erp, length)
  else:
    raise ValueError(f"unknown class {label!r}; known: {CLASSES}")
  return w[:, None] * sig[None, :]


# ---------------------------------------------------------------------------------------------
# Writing files.

_EXT = {"edf": ".edf", "fif": "_raw.fif", "brainvision": ".vhdr"}


def write_recording(raw, path: Path, fmt: str) -> Path:
  """Write ``raw`` as ``fmt`` ("edf", "fif" or "brainvision") to ``path``; returns the path."""
  import mne

  path.parent.mkdir(parents=True, exist_ok=True)
  if fmt == "fif":
    raw.save(path, overwrite=True, verbose=False)
  elif fmt in ("edf", "brainvision"):
    mne.export.export_raw(path, raw, fmt=fmt, overwrite=True, verbose=False)
  else:
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(_EXT)}")
  return path


def write_corpus(out_dir, *, n_subjects: int = 6, recordings: int = 3, minutes: float = 6.0,
                 sfreq: float = 256.0, line_freq: float = 60.0, seed: int = 0,
                 formats: Sequence[str] = ("edf", "edf", "fif"),
                 namings: Sequence[str] = ("tuh", "plain", "plain"),
                 event_s: float = 4.0) -> list[Path]:
  """Write the default synthetic corpus (layout in the module docstring); returns the data files.

  Recording r of each subject uses ``formats[r % len(formats)]`` and
  ``namings[r % len(namings)]``. Same arguments → byte-identical signals and annotations.
  """
  import warnings

  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  files, entries = [], []
  for s in range(n_subjects):
    sub = f"sub-{s + 1:02d}"
    for r in range(recordings):
      fmt = formats[r % len(formats)]
      naming = namings[r % len(namings)]
      raw = make_recording(s, r, seed=seed, duration_s=minutes * 60.0, sfreq=sfreq,
                           line_freq=line_freq, naming=naming, event_s=event_s)
      path = out / sub / f"{sub}_rec-{r + 1:02d}{_EXT[fmt]}"
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float64 -> float32 notes from the exporters
        write_recording(raw, path, fmt)
      files.append(path)
      counts = {c: int(np.sum(raw.annotations.description == c)) for c in CLASSES}
      entries.append({"path": str(path.relative_to(out)), "subject": sub,
                      "recording": f"rec-{r + 1:02d}", "format": fmt, "naming": naming,
                      "events": counts})
  meta = {
      "generator": "data_prep.synthetic",
      "seed": seed, "sfreq": sfreq, "line_freq": line_freq, "minutes": minutes,
      "event_s": event_s, "classes": list(CLASSES),
      "subjects": {f"sub-{s + 1:02d}": dataclasses.asdict(SubjectParams.draw(seed, s))
                   for s in range(n_subjects)},
      "files": entries,
  }
  (out / "corpus.json").write_text(json.dumps(meta, indent=1) + "\n")
  return files


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  files = write_corpus(f.output, n_subjects=f.n_subjects, recordings=f.recordings,
                       minutes=f.minutes, sfreq=f.sfreq, line_freq=f.line_freq, seed=f.seed,
                       formats=f.formats)
  print(f"wrote {len(files)} recordings to {f.output}")


def _define_flags():
  from absl import flags
  flags.DEFINE_string("output", None, "Output folder.", required=True)
  flags.DEFINE_integer("n_subjects", 6, "Number of subjects.")
  flags.DEFINE_integer("recordings", 3, "Recordings per subject.")
  flags.DEFINE_float("minutes", 6.0, "Minutes per recording (>= 5 for pretrain_tcp20).")
  flags.DEFINE_float("sfreq", 256.0, "Sampling rate (Hz).")
  flags.DEFINE_float("line_freq", 60.0, "Power-line frequency (Hz), 50 or 60.")
  flags.DEFINE_integer("seed", 0, "Corpus seed.")
  flags.DEFINE_list("formats", ["edf", "edf", "fif"],
                    "File format per recording index (cycled): edf, fif, brainvision.")


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
