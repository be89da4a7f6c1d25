"""The per-recording function: one input file -> its window records, or a rejection.

``process_recording(path, info, recipe)`` is the whole signal path, shared by the local runner
(``data_prep.convert``) and the Beam runner (``data_prep.beam_pipeline``). Order of operations
(chosen so the cost stays near the bare MNE read + filter + notch + resample):

1. open the file header (``readers.open_raw``, or the recipe's ``open`` hook); reject zero
   length, too short (``min_duration_s``) and too slow (``min_source_rate_hz``) recordings;
2. normalise channel names, plan the derivation (CAR + bipolar as one matrix), reject missing
   channels by name;
3. ask the recipe for labelled windows (or use sliding windows between the edge trims);
4. read only the picked channels and only the span the windows need (plus a filter margin),
   in microvolts; reject NaN/inf samples;
5. band-pass, then notch at the line frequency (skipped when it is at or above Nyquist), then
   resample to the target rate (MNE FFT method) -- all on the picked electrodes only;
6. apply the derivation matrix, cut windows, drop windows outside the recording, with
   |x| > ``max_abs_uv`` (``"amplitude"``) or with a flat channel (``"flat_channel"``: every
   |x| < ``flat_uv`` in that channel -- our reading of the paper's garbled "consistently below
   3 µV or above 3 µV");
7. attach positions: the template montage's (bipolar: midpoint), or with
   ``positions="recording"`` the recording's own digitised positions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from data_prep import channels as chans
from data_prep import montages
from data_prep import readers
from data_prep.recipes.base import (Recipe, RecordingContext, RecordingInfo, Rejected,
                                    WindowSpec)
from neuript_jax import geometry
from neuript_jax.data.record import Record

# Version of the signal path. Bump it whenever a code change alters the windows written for
# an unchanged recipe config: an output directory made by another engine version is then
# refused on resume instead of silently mixing two processings.
ENGINE_VERSION = 1

# Extra seconds read around the needed span so the FIR filters' edge transients fall outside
# the windows (MNE's 0.1 Hz high-pass has a ~33 s kernel, i.e. ~16.5 s each side).
FILTER_MARGIN_S = 20.0


@dataclasses.dataclass
class RecordingResult:
  """What one recording produced: records (in window order) and statistics."""

  records: list[Record]
  duration_s: float
  source_rate_hz: float
  rejected_windows: dict[str, int]
  channels: tuple[str, ...]
  positions: np.ndarray  # float32 [C, 3] metres


@functools.lru_cache(maxsize=64)
def template_positions(names: tuple[str, ...], montage: str) -> np.ndarray:
  """Template positions [C, 3] float32 metres for output channel names (cached)."""
  return geometry.electrode_positions(names, montage).astype(np.float32)


def recording_positions(raw, derivation: montages.Derivation) -> np.ndarray:
  """The recording's own digitised positions [C, 3] (bipolar: midpoint); Rejected if absent."""
  locs = np.array([ch["loc"][:3] for ch in raw.info["chs"]], dtype=np.float64)
  out, missing = [], []
  for name, idx in zip(derivation.outputs, derivation.electrodes):
    pts = locs[list(idx)]
    if not np.all(np.isfinite(pts)) or np.any(np.all(pts == 0, axis=1)):
      missing.append(name)
    else:
      out.append(pts.mean(axis=0))
  if missing:
    raise Rejected(f"no digitised position in the recording for channel(s) "
                   f"{', '.join(missing)} (use --positions=template)")
  return np.stack(out).astype(np.float32)


def output_channels(recipe: Recipe, names: Sequence[str],
                    raw_names: Sequence[str]) -> tuple[str, ...]:
  """The recipe's channels, or (empty list) every 10-05 electrode of the recording.

  names: normalised labels; raw_names: the recording's labels (for the rejection message).
  """
  if recipe.config.channels:
    return recipe.config.channels
  found = tuple(n for n in names if chans.is_electrode(n))
  if not found:
    shown = ", ".join(list(raw_names)[:8]) + (" ..." if len(raw_names) > 8 else "")
    raise Rejected(f"no channel has a standard 10-05 electrode name (channels: {shown}); "
                   "rename them or choose channels explicitly")
  return found


def sliding_windows(cfg, duration_s: float, label: int, label_name) -> list[WindowSpec]:
  """Default windows: every ``stride`` from trim_start while the window ends before the trim."""
  last_end = duration_s - cfg.trim_end_s
  out, k = [], 0
  while True:
    start = cfg.trim_start_s + k * cfg.stride
    if start + cfg.window_s > last_end + 1e-9:
      return out
    out.append(WindowSpec(start_s=start, label=label, label_name=label_name))
    k += 1


def process_recording(path: str | Path, info: RecordingInfo, recipe: Recipe) -> RecordingResult:
  """One recording -> RecordingResult; raises Rejected for an unusable recording."""
  cfg = recipe.config
  path = Path(path)
  raw = recipe.open(path, info)
  if raw is None:
    raw = readers.open_raw(path)
  if not raw.ch_names:
    raise Rejected("no signal channels (an annotations-only file, such as a hypnogram)")
  sfreq = float(raw.info["sfreq"])
  n_times = int(raw.n_times)
  if n_times == 0:
    raise Rejected("zero-length recording (no samples)")
  duration = n_times / sfreq
  if duration < cfg.min_duration_s:
    raise Rejected(f"too short: {duration:.1f} s is under the recipe's minimum "
                   f"{cfg.min_duration_s:.0f} s")
  min_rate = cfg.min_source_rate_hz if cfg.min_source_rate_hz is not None else cfg.target_rate_hz
  if sfreq < min_rate:
    raise Rejected(f"sampling rate {sfreq:g} Hz is below the recipe's minimum {min_rate:g} Hz")
  if cfg.bandpass_hz and cfg.bandpass_hz[1] is not None and cfg.bandpass_hz[1] >= sfreq / 2:
    raise Rejected(f"sampling rate {sfreq:g} Hz is too low for a {cfg.bandpass_hz[1]:g} Hz "
                   "low-pass (Nyquist)")

  names = chans.normalize_names(raw.ch_names)
  outputs = output_channels(recipe, names, raw.ch_names)
  try:
    plan = montages.plan_derivation(outputs, names, cfg.reference, cfg.car_channels)
  except chans.MissingChannelsError as e:
    # Show the recording's own labels, which is what a person can look up.
    raise Rejected(str(chans.MissingChannelsError(e.names, raw.ch_names))) from e

  ctx = RecordingContext(path=path, info=info, raw=raw, sfreq=sfreq, duration_s=duration,
                         channel_names=tuple(names))
  specs = recipe.windows(ctx)
  if specs is None:
    specs = sliding_windows(cfg, duration, info.label, info.label_name)
  specs = list(specs)
  rejected: dict[str, int] = {}
  inside = [s for s in specs if s.start_s >= 0 and s.start_s + cfg.window_s <= duration + 1e-9]
  if len(inside) < len(specs):
    rejected["outside_recording"] = len(specs) - len(inside)

  if cfg.positions == "recording":
    positions = recording_positions(raw, plan)
  else:
    try:
      positions = template_positions(tuple(outputs), cfg.montage)
    except geometry.UnknownChannelError as e:
      raise Rejected(f"no position in the {cfg.montage} template for channel(s) "
                     f"{', '.join(e.names)} (use --positions=recording or another "
                     "--montage)") from e

  records: list[Record] = []
  if inside:
    span_start = max(0.0, min(s.start_s for s in inside) - FILTER_MARGIN_S)
    span_stop = min(duration, max(s.start_s for s in inside) + cfg.window_s + FILTER_MARGIN_S)
    start, stop = int(math.floor(span_start * sfreq)), int(math.ceil(span_stop * sfreq))
    stop = min(stop, n_times)
    data = _read_microvolts(raw, plan.pick, start, stop)
    bad = ~np.isfinite(data)
    if bad.any():
      rows = sorted({names[plan.pick[i]] for i in np.nonzero(bad.any(axis=1))[0]})
      raise Rejected(f"{int(bad.sum())} NaN/inf samples in channel(s) {', '.join(rows)}")
    data = filter_and_resample(data, sfreq, cfg)
    signal = plan.apply(data).astype(np.float32)
    t0 = start / sfreq
    records = _cut_windows(signal, t0, inside, cfg, outputs, positions, info, recipe, rejected)
  return RecordingResult(records=records, duration_s=duration, source_rate_hz=sfreq,
                         rejected_windows=rejected, channels=tuple(outputs),
                         positions=positions)


def _read_microvolts(raw, pick: Sequence[int], start: int, stop: int) -> np.ndarray:
  """Samples [len(pick), stop-start] in µV (float64)."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      data = raw.get_data(picks=list(pick), start=start, stop=stop)
  except Exception as e:  # A corrupt data block surfaces only when read.
    raise Rejected(f"unreadable samples ({type(e).__name__}: {e})") from e
  data *= readers.MICROVOLTS_PER_VOLT
  return data


def filter_and_resample(data: np.ndarray, sfreq: float, cfg) -> np.ndarray:
  """Band-pass, notch (if below Nyquist), resample to ``cfg.target_rate_hz``. [C,T] -> [C,T']."""
  import mne  # Lazy import.
  if cfg.bandpass_hz is not None:
    low, high = cfg.bandpass_hz
    data = mne.filter.filter_data(data, sfreq, low, high, copy=False, verbose="error")
  if cfg.notch_hz is not None and cfg.notch_hz < sfreq / 2:
    # The line frequency itself (as the paper says); its harmonics lie far inside the
    # band-pass stop band already.
    data = mne.filter.notch_filter(data, sfreq, [cfg.notch_hz], copy=False, verbose="error")
  if abs(sfreq - cfg.target_rate_hz) > 1e-9:
    data = mne.filter.resample(data, up=cfg.target_rate_hz, down=sfreq,
                               method=cfg.resample_method, verbose="error")
  return data


def _cut_windows(signal: np.ndarray, t0: float, specs: Sequence[WindowSpec], cfg,
                 outputs, positions, info: RecordingInfo, recipe: Recipe,
                 rejected: dict[str, int]) -> list[Record]:
  """Windows of ``signal`` (starting at time t0 s) that pass the artefact rules, as Records."""
  rate = cfg.target_rate_hz
  width = cfg.window_samples
  recipe_hash = recipe.config_hash
  out = []
  for spec in specs:
    i = int(round((spec.start_s - t0) * rate))
    i = min(max(i, 0), signal.shape[1] - width)
    if i < 0:
      rejected["outside_recording"] = rejected.get("outside_recording", 0) + 1
      continue
    win = signal[:, i:i + width]
    peak = np.abs(win).max(axis=1)
    if cfg.max_abs_uv is not None and peak.max() > cfg.max_abs_uv:
      rejected["amplitude"] = rejected.get("amplitude", 0) + 1
      continue
    if cfg.flat_uv is not None and (peak < cfg.flat_uv).any():
      rejected["flat_channel"] = rejected.get("flat_channel", 0) + 1
      continue
    out.append(Record(
        signal=np.ascontiguousarray(win), channel_names=outputs, positions=positions,
        sampling_rate=rate, dataset=info.dataset, subject=info.subject,
        session=info.session, recording=info.recording,
        window_start=int(round(spec.start_s * rate)), window_start_s=float(spec.start_s),
        label=int(spec.label), label_name=spec.label_name, split=info.split,
        recipe_hash=recipe_hash))
  return out
