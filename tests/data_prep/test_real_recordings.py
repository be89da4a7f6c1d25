"""data_prep on real recordings nobody here wrote (../shared/data/real, see its README)."""

from pathlib import Path

import mne
import numpy as np
import pytest

from data_prep import channels as chans
from data_prep import convert as convert_lib
from data_prep import montages
from data_prep.recipes import get_recipe
from neuript_jax import geometry
from neuript_jax.data import record as rec

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
pytestmark = pytest.mark.skipif(
    not (REAL / "chtypes_edf.edf").exists(),
    reason=f"real recordings not found in {REAL} (see shared/data/real/README.md)")

EEGMMIDB = REAL / "test_edf_overlapping_annotations.edf"
CLINICAL = REAL / "chtypes_edf.edf"
CHANLOC = REAL / "test_raw_chanloc.set"
NO_NAMES = REAL / "test_raw.set"
HYPNOGRAM = REAL / "SC4001EC-Hypnogram.edf"
TCP = montages.MONTAGES["tcp20"]


def _records(out):
  m = convert_lib.manifest_lib.read(out)
  return [r for split in m["shards"] for r in rec.read_split(out, split)]


def test_eegmmidb_names_normalise_to_10_10_with_positions():
  raw = mne.io.read_raw_edf(EEGMMIDB, verbose="error")
  names = chans.normalize_names(raw.ch_names)
  assert names[:8] == ["FC5", "FC3", "FC1", "FCz", "FC2", "FC4", "FC6", "C5"]
  assert "Cz" in names and "Iz" in names and "AF7" in names and "POz" in names
  assert all(chans.is_electrode(n) for n in names)
  pos = geometry.electrode_positions(names, "standard_1005")
  assert pos.shape == (64, 3) and np.all(np.isfinite(pos))
  assert len({tuple(p) for p in pos}) == 64


def test_clinical_names_pick_eeg_among_non_eeg():
  raw = mne.io.read_raw_edf(CLINICAL, verbose="error")
  names = chans.normalize_names(raw.ch_names)
  eeg = [n for n in names if chans.is_electrode(n)]
  assert eeg == ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T7",
                 "T8", "P7", "P8", "Fz", "Cz", "Pz", "A1", "A2", "F9", "T9", "P9", "F10", "T10",
                 "P10"]
  for non_eeg in ("POL E", "ECG ECG1", "SaO2 X9", "POL T1", "POL $A1", "POL DC01"):
    assert non_eeg in names and not chans.is_electrode(non_eeg)


def test_tcp20_derivation_from_real_signals(tmp_path):
  recipe = get_recipe("generic", channels=TCP)
  m = convert_lib.convert(f"{EEGMMIDB},{CLINICAL}", recipe, tmp_path, workers=2)
  assert m["rejected"] == [] and m["channels"] == list(TCP)
  windows = {Path(f["path"]).name: f["windows"] for f in m["files"]}
  assert windows == {EEGMMIDB.name: 31, CLINICAL.name: 1}  # 124 s and 5 s, 4-s windows
  records = _records(tmp_path)
  r = next(r for r in records if r.recording == EEGMMIDB.stem and r.window_start_s == 60.0)
  assert r.signal.shape == (20, 256)
  # Fp1-F7 is Fp1 minus F7 (T7 found for T3 etc.) after the recipe's own processing.
  raw = mne.io.read_raw_edf(EEGMMIDB, preload=True, verbose="error")
  raw.pick(["Fp1.", "F7..", "T7..", "P7.."]).filter(0.1, 30.0, verbose="error")
  data = raw.resample(64, verbose="error").get_data() * 1e6
  seg = slice(r.window_start, r.window_start + 256)
  for row, (a, b) in ((0, (0, 1)), (1, (1, 2)), (2, (2, 3))):
    ref = data[a, seg] - data[b, seg]
    assert np.sqrt(np.mean((r.signal[row] - ref) ** 2)) < 0.02 * np.std(ref)
  med = np.median(np.abs(np.stack([x.signal for x in records])))
  assert 1.0 < med < 200.0  # microvolts


def test_eegmmidb_annotation_labels(tmp_path):
  raw = mne.io.read_raw_edf(EEGMMIDB, verbose="error")
  duration = raw.n_times / raw.info["sfreq"]
  expected = {"left": 0, "right": 0}
  for onset, desc in zip(raw.annotations.onset, raw.annotations.description):
    if desc in ("T1", "T2") and onset + 4.0 <= duration:
      expected["left" if desc == "T1" else "right"] += 1
  recipe = get_recipe("generic", channels=["C3", "Cz", "C4"], **{
      "params.label_source": "annotations", "params.label_map": "T1=left,T2=right"})
  m = convert_lib.convert(str(EEGMMIDB), recipe, tmp_path, workers=1)
  labels = {k: v for per in m["counts"]["label"].values() for k, v in per.items()}
  assert labels == expected and sum(expected.values()) >= 15


def test_recording_digitised_positions(tmp_path):
  recipe = get_recipe("generic", channels=["Fp1-F7", "Cz", "O2"], window_s=2.0,
                      positions="recording")
  m = convert_lib.convert(str(CHANLOC), recipe, tmp_path, workers=1)
  assert m["rejected"] == [] and m["windows"] == 1 and m["positions_source"] == "recording"
  raw = mne.io.read_raw_eeglab(CHANLOC, verbose="error")
  loc = {ch["ch_name"]: ch["loc"][:3] for ch in raw.info["chs"]}
  expected = np.stack([(loc["Fp1"] + loc["F7"]) / 2, loc["Cz"], loc["O2"]]).astype(np.float32)
  r = _records(tmp_path)[0]
  np.testing.assert_allclose(r.positions, expected, rtol=1e-6)
  template = geometry.electrode_positions(["Fp1-F7", "Cz", "O2"], "standard_1005")
  assert not np.allclose(r.positions, template, atol=1e-3)  # really the recording's own


def test_recording_without_positions_is_rejected_in_recording_mode(tmp_path):
  recipe = get_recipe("generic", channels=["Cz"], positions="recording")
  m = convert_lib.convert(str(CLINICAL), recipe, tmp_path, workers=1)
  assert "no digitised position in the recording for channel(s) Cz" in m["rejected"][0]["reason"]


def test_channels_without_standard_names_are_rejected_by_name(tmp_path):
  m = convert_lib.convert(str(NO_NAMES), get_recipe("generic"), tmp_path / "a", workers=1)
  reason = m["rejected"][0]["reason"]
  assert "no channel has a standard 10-05 electrode name" in reason and "EEG 000" in reason
  m = convert_lib.convert(str(NO_NAMES), get_recipe("generic", channels=TCP), tmp_path / "b", 1)
  reason = m["rejected"][0]["reason"]
  assert reason.startswith("missing channel(s) Fp1, F7, T3/T7") and "EEG 000" in reason


def test_everything_is_too_short_for_pretraining_and_generic_converts_the_usable(tmp_path):
  m = convert_lib.convert(str(REAL), get_recipe("pretrain_tcp20"), tmp_path / "p", workers=2)
  assert m["files"] == []
  reasons = {Path(r["path"]).name: r["reason"] for r in m["rejected"]}
  assert set(reasons) == {EEGMMIDB.name, CLINICAL.name, CHANLOC.name, NO_NAMES.name,
                          HYPNOGRAM.name}
  for name in (EEGMMIDB.name, CLINICAL.name, CHANLOC.name, NO_NAMES.name):
    assert reasons[name].startswith("too short"), reasons[name]
  assert "no signal channels" in reasons[HYPNOGRAM.name]

  m = convert_lib.convert(str(REAL), get_recipe("generic", window_s=2.0), tmp_path / "g", 2)
  converted = {Path(f["path"]).name: f["windows"] for f in m["files"]}
  assert converted == {EEGMMIDB.name: 62, CLINICAL.name: 2, CHANLOC.name: 1}
  assert {Path(r["path"]).name for r in m["rejected"]} == {NO_NAMES.name, HYPNOGRAM.name}
  assert m["channels"] is None  # channel sets differ per file: listed per file
  chanloc = next(f for f in m["files"] if f["path"].endswith(CHANLOC.name))
  assert len(chanloc["channels"]) == 61 and np.array(chanloc["positions"]).shape == (61, 3)
