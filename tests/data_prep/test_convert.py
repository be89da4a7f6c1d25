"""End-to-end conversion: the CLI, pretrain_tcp20, generic, formats, determinism, manifest."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pytest

from data_prep import convert as convert_lib
from data_prep import job
from data_prep import manifest as manifest_lib
from data_prep import montages
from data_prep.recipes import get_recipe
from neuript_jax import geometry
from neuript_jax.data import record as rec
from tests.data_prep import _make_edf as mk

REPO = Path(__file__).resolve().parents[2]


def tree_digest(directory: Path) -> dict[str, str]:
  """Relative path -> SHA-256 of every file under ``directory`` (hidden ones included)."""
  return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def run_cli(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", "data_prep.convert", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
  """Two good 400-s TUH-style EDFs, a truncated EDF and a text file renamed .edf."""
  d = tmp_path_factory.mktemp("mixed")
  good = [mk.write_edf(d / "tuh" / f"aaaaaaa{c}_s001_t000.edf", duration_s=400, seed=i)
          for i, c in enumerate("ab")]
  mk.truncate(good[0], d / "tuh" / "aaaaaaac_s001_t000.edf")
  (d / "notes.edf").write_text("these are clinician notes, not EEG\n" * 20)
  (d / "README.txt").write_text("ignored: not an EEG extension")
  return d


def test_done_when_mixed_folder_converts_good_rejects_bad_and_rerun_changes_nothing(
    mixed_folder, tmp_path):
  out = tmp_path / "out"
  args = (f"--input={mixed_folder}", "--recipe=pretrain_tcp20", f"--output={out}",
          "--workers=2")
  first = run_cli(*args)
  assert first.returncode == 0, first.stderr
  m = manifest_lib.read(out)
  assert [Path(f["path"]).name for f in m["files"]] == [
      "aaaaaaaa_s001_t000.edf", "aaaaaaab_s001_t000.edf"]
  rejected = {Path(r["path"]).name: r["reason"] for r in m["rejected"]}
  assert set(rejected) == {"aaaaaaac_s001_t000.edf", "notes.edf"}
  assert "truncated" in rejected["aaaaaaac_s001_t000.edf"]
  assert "not an EDF file" in rejected["notes.edf"]
  assert "rejected" in first.stderr and "notes.edf" in first.stderr  # log lines
  assert m["windows"] == 2 * 70  # (400 s - 2 x 60 s trim) / 4 s
  for f in m["files"]:
    data = Path(f["path"]).read_bytes()
    assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
  before = tree_digest(out)
  second = run_cli(*args)
  assert second.returncode == 0, second.stderr
  assert tree_digest(out) == before


def test_pretrain_records_shape_positions_and_manifest(mixed_folder, tmp_path):
  recipe = get_recipe("pretrain_tcp20")
  m = convert_lib.convert(str(mixed_folder / "tuh"), recipe, tmp_path, workers=1)
  tcp = montages.MONTAGES["tcp20"]
  expected_pos = geometry.electrode_positions(tcp, "standard_1020").astype(np.float32)
  assert m["channels"] == list(tcp) and m["sampling_rate"] == 64.0
  np.testing.assert_allclose(np.array(m["positions"]), expected_pos, rtol=1e-6)
  assert m["recipe"]["hash"] == recipe.config_hash and m["recipe"]["name"] == "pretrain_tcp20"
  assert m["counts"]["split"] == {"train": 140}
  assert m["counts"]["subject"]["train"] == {"aaaaaaaa": 70, "aaaaaaab": 70}
  reader = rec.read_split(tmp_path, "train")
  assert len(reader) == 140
  first = reader[0]
  assert first.signal.shape == (20, 256) and first.signal.dtype == np.float32
  assert first.channel_names == tcp and first.sampling_rate == 64.0
  np.testing.assert_array_equal(first.positions, expected_pos)
  assert first.window_start_s == 60.0 and first.window_start == 60 * 64
  assert reader[69].window_start_s == 60.0 + 69 * 4
  assert first.subject == "aaaaaaaa" and first.session == "001" and first.split == "train"
  assert first.recipe_hash == recipe.config_hash and first.label == -1
  assert 2.0 < float(np.abs(first.signal).mean()) < 100.0  # microvolts, not volts


def test_pretrain_signal_matches_plain_mne_processing(mixed_folder, tmp_path):
  """Our Fp1-F7 equals MNE's filter + notch + resample of Fp1 minus F7, away from the edges."""
  path = mixed_folder / "tuh" / "aaaaaaaa_s001_t000.edf"
  convert_lib.convert(str(path), get_recipe("pretrain_tcp20"), tmp_path, workers=1)
  reader = rec.read_split(tmp_path, "train")
  raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
  raw.pick(["EEG FP1-REF", "EEG F7-REF"]).filter(0.1, 30.0, verbose="error")
  raw.notch_filter(60.0, verbose="error").resample(64, verbose="error")
  data = raw.get_data() * 1e6
  mne_fp1_f7 = data[0] - data[1]
  for k in (20, 35, 50):
    r = reader[k]
    ours = r.signal[0]
    ref = mne_fp1_f7[r.window_start:r.window_start + 256]
    assert np.sqrt(np.mean((ours - ref) ** 2)) < 0.02 * np.std(ref)


def test_worker_count_does_not_change_a_byte(mixed_folder, tmp_path):
  recipe = get_recipe("pretrain_tcp20")
  convert_lib.convert(str(mixed_folder), recipe, tmp_path / "w1", workers=1)
  convert_lib.convert(str(mixed_folder), recipe, tmp_path / "w2", workers=2)
  assert tree_digest(tmp_path / "w1") == tree_digest(tmp_path / "w2")


def test_other_recipe_into_same_dir_is_an_error_naming_the_difference(mixed_folder, tmp_path):
  path = str(mixed_folder / "tuh" / "aaaaaaaa_s001_t000.edf")
  convert_lib.convert(path, get_recipe("pretrain_tcp20"), tmp_path, workers=1)
  with pytest.raises(job.RecipeMismatchError, match="notch_hz: 60.0 -> 50.0"):
    convert_lib.convert(path, get_recipe("pretrain_tcp20", notch_hz=50), tmp_path, workers=1)
  cli = run_cli(f"--input={path}", "--recipe=pretrain_tcp20", f"--output={tmp_path}",
                "--notch_hz=50")
  assert cli.returncode == 2 and "notch_hz" in cli.stderr


def test_too_short_for_pretraining_is_rejected(tmp_path):
  path = mk.write_edf(tmp_path / "in" / "short.edf", duration_s=120)
  m = convert_lib.convert(str(tmp_path / "in"), get_recipe("pretrain_tcp20"),
                          tmp_path / "out", workers=1)
  assert m["files"] == [] and m["windows"] == 0
  assert m["rejected"] == [{"path": str(path), "reason": m["rejected"][0]["reason"]}]
  assert "too short: 120.0 s" in m["rejected"][0]["reason"]
  cli = run_cli(f"--input={tmp_path / 'in'}", "--recipe=pretrain_tcp20",
                f"--output={tmp_path / 'out'}")
  assert cli.returncode == 1


def test_artifact_rules_count_rejected_windows(tmp_path):
  names = list(mk.TUH_NAMES)
  raw = mk.make_raw(names, duration_s=60, sfreq=256, seed=3)
  data = raw.get_data()
  clean = data.copy()
  data[names.index("EEG O2-REF"), int(30.5 * 256):int(30.6 * 256)] += 400e-6  # window 7
  raw._data = data
  mne.export.export_raw(tmp_path / "spike.edf", raw, fmt="edf", verbose="error")
  data = clean
  data[names.index("EEG F7-REF")] = data[names.index("EEG FP1-REF")]  # Fp1-F7 == 0
  raw._data = data
  mne.export.export_raw(tmp_path / "flat.edf", raw, fmt="edf", verbose="error")
  recipe = get_recipe("pretrain_tcp20", min_duration_s=0, trim_start_s=0, trim_end_s=0)
  m = convert_lib.convert(str(tmp_path), recipe, tmp_path / "out", workers=1)
  by_name = {Path(f["path"]).name: f for f in m["files"]}
  spike = by_name["spike.edf"]
  assert 1 <= spike["rejected_windows"]["amplitude"] <= 3  # the spike's window (+ ringing)
  assert spike["windows"] + spike["rejected_windows"]["amplitude"] == 15
  assert by_name["flat.edf"]["windows"] == 0
  assert by_name["flat.edf"]["rejected_windows"] == {"flat_channel": 15}
  assert m["rejected_windows"]["flat_channel"] == 15
  kept = rec.read_split(tmp_path / "out", "train")
  assert all(np.abs(r.signal).max() <= 100 for r in kept)


@pytest.mark.parametrize("fmt", ["fif", "brainvision", "eeglab", "edf"])
def test_generic_reads_every_writable_format(tmp_path, fmt):
  raw = mk.make_raw(["Fp1", "Fp2", "CZ", "O1", "ECG"], duration_s=20, sfreq=200, seed=1)
  ext = {"fif": "_raw.fif", "brainvision": ".vhdr", "eeglab": ".set", "edf": ".edf"}[fmt]
  path = tmp_path / "in" / f"sub01_rest{ext}"
  path.parent.mkdir()
  if fmt == "fif":
    raw.save(path, verbose="error")
  else:
    mne.export.export_raw(path, raw, fmt=fmt, verbose="error")
  m = convert_lib.convert(str(tmp_path / "in"), get_recipe("generic"), tmp_path / "out", 1)
  assert m["rejected"] == [] and m["windows"] == 5
  assert m["channels"] == ["Fp1", "Fp2", "Cz", "O1"]  # ECG dropped, case restored
  split = next(iter(m["shards"]))
  r = rec.read_split(tmp_path / "out", split)[0]
  np.testing.assert_allclose(r.positions, geometry.electrode_positions(
      ["Fp1", "Fp2", "Cz", "O1"], "standard_1005"), rtol=1e-6)


def test_generic_annotation_labels_and_split_lists(tmp_path):
  ann = [(2.0, 4.0, "T1"), (8.0, 4.0, "T2"), (14.0, 4.0, "T0"), (20.0, 4.0, "T1")]
  for subject in ("S001", "S002", "S003"):
    mk.write_edf(tmp_path / "in" / f"{subject}R04.edf", names=["C3..", "Cz..", "C4.."],
                 duration_s=30, sfreq=160, seed=int(subject[-1]), annotations=ann)
  recipe = get_recipe("generic", channels=["C3", "Cz", "C4"], **{
      "params.label_source": "annotations", "params.label_map": "T1=left,T2=right",
      "params.split_rule": "lists", "params.split_lists": "val=S002,test=S003"})
  assert recipe.config.label_names == ("left", "right")
  m = convert_lib.convert(str(tmp_path / "in"), recipe, tmp_path / "out", 1)
  assert m["counts"]["split"] == {"test": 3, "train": 3, "val": 3}
  assert m["counts"]["label"]["train"] == {"left": 2, "right": 1}
  test = rec.read_split(tmp_path / "out", "test")
  assert [(r.label, r.label_name, r.window_start_s) for r in test] == [
      (0, "left", 2.0), (1, "right", 8.0), (0, "left", 20.0)]
  assert {r.subject for r in test} == {"S003"}


def test_generic_folder_labels(tmp_path):
  for label in ("normal", "abnormal", "unsure"):
    mk.write_edf(tmp_path / "in" / label / f"p_{label}.edf", names=["Fp1", "Fp2"],
                 duration_s=8, sfreq=128, seed=2)
  recipe = get_recipe("generic", **{"params.label_source": "folder",
                                    "params.label_map": "normal=normal,abnormal=abnormal"})
  m = convert_lib.convert(str(tmp_path / "in"), recipe, tmp_path / "out", 1)
  labels = {s: c for per in m["counts"]["label"].values() for s, c in per.items()}
  assert labels == {"normal": 2, "abnormal": 2}
  assert [Path(r["path"]).parent.name for r in m["rejected"]] == ["unsure"]
  assert "not in label_map" in m["rejected"][0]["reason"]


def test_glob_and_comma_inputs(mixed_folder, tmp_path):
  a = mixed_folder / "tuh" / "aaaaaaaa_s001_t000.edf"
  b = mixed_folder / "tuh" / "aaaaaaab_s001_t000.edf"
  recipe = get_recipe("pretrain_tcp20")
  by_glob = [str(p) for p, _ in job.discover(str(mixed_folder / "**" / "aaaaaaa[ab]*.edf"),
                                             recipe)]
  by_list = [str(p) for p, _ in job.discover(f"{a},{b}", recipe)]
  assert by_glob == by_list == [str(a), str(b)]
  with pytest.raises(FileNotFoundError):
    job.discover(str(mixed_folder / "nope"), recipe)


def test_helpfull_documents_every_flag():
  out = subprocess.run([sys.executable, "-m", "data_prep.convert", "--helpfull"], cwd=REPO,
                       capture_output=True, text=True, timeout=60).stdout
  for flag in ("--input", "--recipe", "--output", "--workers", "--runner", "--strict",
               "--positions", "--notch_hz", "--set", "--label_source", "--split_rule",
               "--beam_options"):
    assert flag in out, flag


def test_bids_dataset_ids_and_digitised_positions(tmp_path):
  mne_bids = pytest.importorskip("mne_bids")
  names = ["Fp1", "Fp2", "Cz", "O1", "O2"]
  pos = mne.channels.make_standard_montage("colin27_1020").get_positions()
  digitised = {n: pos["ch_pos"][n] + np.array([0.004, 0.0, 0.0]) for n in names}
  raw = mk.make_raw(names, duration_s=20, sfreq=128)
  raw.set_montage(mne.channels.make_dig_montage(
      ch_pos=digitised, nasion=pos["nasion"], lpa=pos["lpa"], rpa=pos["rpa"],
      coord_frame="head"))
  for sub in ("01", "02"):
    bids_path = mne_bids.BIDSPath(subject=sub, session="a", task="rest", datatype="eeg",
                                  root=tmp_path / "bids")
    mne_bids.write_raw_bids(raw, bids_path, format="EDF", allow_preload=True, verbose="error")
  recipe = get_recipe("generic", positions="recording")
  m = convert_lib.convert(str(tmp_path / "bids"), recipe, tmp_path / "out", workers=1)
  assert m["rejected"] == []
  assert [(f["subject"], f["session"], f["windows"]) for f in m["files"]] == [
      ("sub-01", "a", 5), ("sub-02", "a", 5)]
  np.testing.assert_allclose(m["positions"], [digitised[n] for n in names], atol=1e-6)
