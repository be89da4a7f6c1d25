"""Every downstream recipe end-to-end on its miniature layout (tests/data_prep/miniature.py).

Each test converts a miniature copy with the library entry ``data_prep.convert.convert`` and
checks the exact window, label and split counts of the fixture, the subject → split
assignment (no subject in two splits), label/window alignment on individual records, the
reported rejections, and that a second conversion writes byte-identical shards and manifest.
One test runs the CLI (``python -m data_prep.convert``) with ``--set`` overrides.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import logging

from data_prep import convert
from tests.data_prep import miniature
from data_prep.recipes import base
from data_prep.recipes import get_recipe
from data_prep.recipes import sleepedfx
from data_prep.recipes import tuev
from neuript_jax import geometry
from neuript_jax.data.record import read_split

REPO = Path(__file__).resolve().parents[2]
REAL = REPO / ".." / "shared" / "data" / "real"

logging.set_verbosity(logging.ERROR)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
  """Builds a miniature dataset once per module: mini(name, **builder_kwargs) -> root."""
  base_dir = tmp_path_factory.mktemp("mini")
  cache = {}

  def make(name, **kwargs):
    key = (name, tuple(sorted(kwargs.items())))
    if key not in cache:
      cache[key] = miniature.BUILDERS[name](base_dir / f"{name}-{len(cache)}", **kwargs)
    return cache[key]
  return make


def run(root, out, name, **overrides) -> dict:
  """Convert ``root`` with recipe ``name`` into ``out`` (one worker); returns the manifest."""
  return convert.convert(str(root), get_recipe(name, **overrides), out, workers=1,
                         progress_interval_s=1e9)


def records(out, split):
  with read_split(out, split) as reader:
    return list(reader)


def subject_splits(manifest) -> dict[str, set[str]]:
  table = collections.defaultdict(set)
  for f in manifest["files"]:
    table[f["subject"]].add(f["split"])
  return dict(table)


def check_common(manifest, out, name, expected_split_counts, expected_subjects):
  """Counts per split, subject → split (disjoint), record shapes and ids."""
  assert manifest["counts"]["split"] == expected_split_counts
  table = subject_splits(manifest)
  assert all(len(v) == 1 for v in table.values()), f"subject in two splits: {table}"
  assert {s: next(iter(v)) for s, v in table.items()} == expected_subjects
  cfg = get_recipe(name).config
  for split in expected_split_counts:
    recs = records(out, split)
    assert len(recs) == expected_split_counts[split]
    for r in recs:
      assert r.split == split
      assert r.signal.shape == (len(r.channel_names), cfg.window_samples)
      assert r.sampling_rate == 64.0
      assert np.isfinite(r.signal).all()
      assert r.label_name == cfg.label_names[r.label]
      assert expected_subjects[r.subject] == split


def check_deterministic(root, out_a, tmp_path, name, **overrides):
  """A second conversion (fresh directory) writes the same manifest and shard bytes."""
  out_b = tmp_path / "again"
  run(root, out_b, name, **overrides)
  a = (Path(out_a) / "manifest.json").read_text()
  b = (out_b / "manifest.json").read_text()
  assert a == b
  for shard in json.loads(a)["shards"].values():
    for rel in shard:
      assert (Path(out_a) / rel).read_bytes() == (out_b / rel).read_bytes()


def label_counts(manifest):
  return manifest["counts"]["label"]


# ---------------------------------------------------------------------------------------------
# TUAB


def test_tuab(mini, tmp_path):
  root = mini("tuab")
  out = tmp_path / "out"
  m = run(root, out, "tuab")
  check_common(m, out, "tuab", {"train": 10, "val": 2, "test": 4},
               {"aaaaaaaa": "train", "aaaaaaab": "train", "aaaaaaac": "val",
                "aaaaaaad": "train", "aaaaaaae": "train", "aaaaaaag": "test",
                "aaaaaaah": "test"})
  assert label_counts(m) == {"train": {"normal": 6, "abnormal": 4}, "val": {"normal": 2},
                             "test": {"normal": 2, "abnormal": 2}}
  assert len(m["rejected"]) == 1
  assert m["rejected"][0]["path"].endswith("aaaaaaaf_s001_t000.edf")
  assert "O2" in m["rejected"][0]["reason"]
  assert m["channels"] == list(geometry.TCP20)
  rates = {Path(f["path"]).name: f["source_rate_hz"] for f in m["files"]}
  assert rates["aaaaaaah_s001_t000.edf"] == 256.0
  starts = sorted(r.window_start_s for r in records(out, "test"))
  assert starts == [0.0, 0.0, 10.0, 10.0]
  check_deterministic(root, out, tmp_path, "tuab")


def test_tuab_v2_nested_layout(mini, tmp_path):
  m = run(mini("tuab", layout="v2"), tmp_path / "out", "tuab")
  assert m["counts"]["split"] == {"train": 10, "val": 2, "test": 4}
  assert all(len(v) == 1 for v in subject_splits(m).values())
  assert all(f["subject"].isdigit() and len(f["subject"]) == 8 for f in m["files"])


def test_tuab_pooled_val_rule(mini):
  root = mini("tuab")
  recipe = get_recipe("tuab", params={"val_rule": "pooled_sorted"})
  files = sorted(root.rglob("*.edf"))
  infos = recipe.assign_splits([recipe.describe(p, root) for p in files])
  table = {i.subject: i.split for i in infos}
  assert table == {"aaaaaaaa": "train", "aaaaaaab": "train", "aaaaaaac": "train",
                   "aaaaaaad": "train", "aaaaaaae": "val", "aaaaaaaf": "val",
                   "aaaaaaag": "test", "aaaaaaah": "test"}


def test_tuab_rejects_foreign_path(tmp_path):
  with pytest.raises(base.Rejected, match="train/ or eval/"):
    get_recipe("tuab").describe(tmp_path / "x" / "aaaaaaaa_s001_t000.edf", tmp_path)


# ---------------------------------------------------------------------------------------------
# TUEV


def test_tuev(mini, tmp_path):
  root = mini("tuev")
  out = tmp_path / "out"
  m = run(root, out, "tuev")
  check_common(m, out, "tuev", {"train": 7, "val": 1, "test": 5},
               {"aaaaaaar": "train", "aaaaaaas": "train", "aaaaaaat": "val",
                "eval-000": "test", "eval-001": "test"})
  assert label_counts(m) == {
      "train": {"spsw": 2, "gped": 1, "pled": 1, "eyem": 1, "artf": 1, "bckg": 1},
      "val": {"bckg": 1}, "test": {"bckg": 3, "pled": 2}}
  assert m["rejected"] == [] and m["rejected_windows"] == {}
  # Records of the first train file, in .rec order; starts are 2 s before the event on the
  # wrap-padded time axis (the recording padded by window_s = 5 s at each end).
  first = [r for r in records(out, "train") if r.recording.endswith("aaaaaaar_00000001")]
  assert [(r.window_start_s, r.label_name) for r in first] == [
      (3.5, "bckg"), (8.0, "spsw"), (8.0, "spsw"), (13.0, "eyem"), (17.0, "artf")]
  check_deterministic(root, out, tmp_path, "tuev")


def test_tuev_edge_and_duplicate_options(mini, tmp_path):
  root = mini("tuev")
  m = run(root, tmp_path / "drop", "tuev", params={"edge": "drop"})
  assert m["rejected_windows"] == {"outside_recording": 2}
  assert m["windows"] == 11
  m = run(root, tmp_path / "clamp", "tuev", params={"edge": "clamp", "duplicates": "collapse"})
  assert m["counts"]["split"] == {"train": 6, "val": 1, "test": 4}
  starts = sorted(r.window_start_s for r in records(tmp_path / "clamp", "test"))
  assert starts == [2.0, 4.0, 10.0, 15.0]


def test_tuev_wrap_window_content(mini, tmp_path):
  """A window wrapped past the file start continues with the file's first samples."""
  root = mini("tuev")
  raw_signal = {"bandpass_hz": None, "notch_hz": None, "resample_method": "polyphase"}
  run(root, tmp_path / "wrap", "tuev", params={"duplicates": "collapse"}, **raw_signal)
  recs = [r for r in records(tmp_path / "wrap", "train")
          if r.recording.endswith("aaaaaaar_00000001")]
  wrapped = recs[0]  # event at 0.5 s: window from -1.5 s (= 3.5 s on the padded axis)
  assert wrapped.window_start_s == 3.5
  assert wrapped.signal.shape == (20, 320)
  # Its last 3.5 s are the file's first 3.5 s: compare with the window clamped to t = 0.
  run(root, tmp_path / "clamp", "tuev", params={"edge": "clamp", "duplicates": "collapse"},
      **raw_signal)
  clamped = [r for r in records(tmp_path / "clamp", "train")
             if r.recording.endswith("aaaaaaar_00000001")]
  assert clamped[0].window_start_s == 0.0
  head = wrapped.signal[:, 96 + 8:96 + 88]   # file seconds 0.1..1.35 (away from the seam)
  ref = clamped[0].signal[:, 8:88]
  assert np.corrcoef(head.ravel(), ref.ravel())[0, 1] > 0.99


def test_tuev_rec_reader_one_line_and_bad_code(tmp_path):
  one = tmp_path / "a.rec"
  one.write_text("13,90.4,91.4,6\n")
  assert tuev.read_rec(one) == [(13, 90.4, 91.4, 6)]
  bad = tmp_path / "b.rec"
  bad.write_text("1,2.0,3.0,9\n")
  with pytest.raises(base.Rejected, match="code 9"):
    tuev.read_rec(bad)


def test_tuev_missing_rec_is_rejected(mini, tmp_path):
  root = mini("tuev")
  edf = next(root.rglob("aaaaaaas_00000001.edf"))
  with pytest.raises(base.Rejected, match="label file"):
    get_recipe("tuev").describe(edf.with_name("zzzzzzzz_00000001.edf"), root)


# ---------------------------------------------------------------------------------------------
# BCIC-IV-2a


def test_bcic2a(mini, tmp_path):
  root = mini("bcic2a")
  out = tmp_path / "out"
  m = run(root, out, "bcic2a")
  check_common(m, out, "bcic2a", {"train": 24, "val": 8, "test": 8},
               {"A01": "train", "A04": "train", "A06": "val", "A08": "test"})
  assert label_counts(m) == {
      "train": {"left_hand": 6, "right_hand": 6, "feet": 6, "tongue": 6},
      "val": {"left_hand": 2, "right_hand": 2, "feet": 2, "tongue": 2},
      "test": {"left_hand": 2, "right_hand": 2, "feet": 1, "tongue": 3}}
  assert m["channels"] == list(geometry.BCIC2A16)
  # A01T: EOG runs skipped; runs of 36 s concatenated; trials every 8 s from 3 s; window
  # 2 s after trial start; labels y - 1.
  a01t = [r for r in records(out, "train") if r.recording == "A01T"]
  assert [r.window_start_s for r in a01t] == [5.0, 13.0, 21.0, 29.0, 41.0, 49.0, 57.0, 65.0]
  assert [r.label + 1 for r in a01t] == [1, 2, 3, 4, 4, 3, 2, 1]
  # A04T has one EOG struct, and both MI runs are kept.
  assert sum(r.recording == "A04T" for r in records(out, "train")) == 8
  check_deterministic(root, out, tmp_path, "bcic2a")


def test_bcic2a_cue_reference_and_label_files(mini, tmp_path):
  root = mini("bcic2a")
  m = run(root, tmp_path / "cue", "bcic2a", params={"window_reference": "cue"})
  a01t = [r for r in records(tmp_path / "cue", "train") if r.recording == "A01T"]
  assert a01t[0].window_start_s == 7.0
  assert m["windows"] == 40
  # A competition label file (classlabel only) beside the data is not an input.
  import scipy.io
  scipy.io.savemat(root / "A02E.mat", {"classlabel": np.ones((4, 1))})
  try:
    assert not get_recipe("bcic2a").accepts(root / "A02E.mat")
  finally:
    (root / "A02E.mat").unlink()


def test_bcic2a_gdf_distribution(tmp_path):
  root = miniature.build_bcic2a_gdf(tmp_path / "in")
  out = tmp_path / "out"
  m = run(root, out, "bcic2a")
  check_common(m, out, "bcic2a", {"train": 16, "val": 8}, {"A01": "train", "A07": "val"})
  assert m["rejected"] == []                       # the classlabel .mat files are not inputs
  assert len(m["files"]) == 3
  by_rec = collections.defaultdict(list)
  for r in records(out, "train") + records(out, "val"):
    by_rec[r.recording].append(r)
  for stem, runs in miniature.BCIC2A_GDF_FILES.items():
    recs = by_rec[stem]
    # T labels from the cue codes 769-772, E labels from A01E.mat in cue order.
    assert [r.label + 1 for r in recs] == [y for run in runs for y in run]
    # Trial starts every 8 s from 3 s in runs of 36 s; window = trial start + 2 s.
    assert [r.window_start_s for r in recs] == [5.0, 13.0, 21.0, 29.0, 41.0, 49.0, 57.0, 65.0]
  # The GDF channels are renamed to 10-10 names before the bipolar derivation.
  assert m["channels"] == list(geometry.BCIC2A16)
  # Missing-value runs: kept by default, dropped on request (A07T's third trial).
  m = run(root, tmp_path / "drop", "bcic2a", params={"missing_samples": "drop"})
  assert m["counts"]["split"] == {"train": 16, "val": 7}
  assert [r.window_start_s for r in records(tmp_path / "drop", "val")][:3] == [5.0, 13.0, 29.0]
  check_deterministic(root, out, tmp_path, "bcic2a")


def test_bcic2a_gdf_evaluation_without_labels_is_rejected(tmp_path):
  root = miniature.build_bcic2a_gdf(tmp_path / "in")
  (root / "A01E.mat").unlink()
  m = run(root, tmp_path / "out", "bcic2a")
  assert [Path(r["path"]).name for r in m["rejected"]] == ["A01E.gdf"]
  assert "A01E.mat" in m["rejected"][0]["reason"]


def test_bcic2a_missing_run_detector():
  from data_prep.recipes import bcic2a
  x = np.random.default_rng(0).normal(0, 10, (3, 200))
  x[1, 50:55] = -100.0
  x[2, 10] = -100.0                               # a single low sample is not a run
  mask = bcic2a.find_missing_runs(x)
  assert mask.sum() == 5 and mask[50:55].all()


# ---------------------------------------------------------------------------------------------
# SEED-V


def test_seedv(mini, tmp_path):
  root = mini("seedv")
  out = tmp_path / "out"
  table = {"params": {"trial_table": miniature.SEEDV_TEST_TRIALS}}
  m = run(root, out, "seedv", **table)
  check_common(m, out, "seedv", {"train": 21, "val": 7, "test": 8},
               {"1": "train", "2": "train", "16": "val", "11": "test"})
  assert label_counts(m) == {
      "train": {"happy": 7, "fear": 4, "neutral": 3, "sad": 3, "disgust": 4},
      "val": {"sad": 3, "disgust": 4}, "test": {"happy": 3, "fear": 2, "neutral": 3}}
  assert [Path(r["path"]).name for r in m["rejected"]] == ["3_1_20180730.cnt"]
  assert "trial table ends at 12 s" in m["rejected"][0]["reason"]
  assert m["channels"] == list(geometry.SEEDV17)
  s1 = [r for r in records(out, "train") if r.recording == "EEG_raw/1_1_20180804"]
  assert [r.window_start_s for r in s1] == [1.0, 2.0, 3.0, 5.0, 6.0, 9.0, 10.0, 11.0]
  assert [r.label for r in s1] == [4, 4, 4, 1, 1, 3, 3, 3]
  check_deterministic(root, out, tmp_path, "seedv", **table)


def test_seedv_keep_complete_and_default_table(mini, tmp_path):
  root = mini("seedv")
  m = run(root, tmp_path / "out", "seedv",
          params={"trial_table": miniature.SEEDV_TEST_TRIALS, "short_recording": "keep_complete"})
  assert m["rejected"] == []
  assert m["counts"]["subject"]["train"]["3"] == 6
  # The real table starts trials at 30 s: every miniature file is far too short for it.
  m = run(root, tmp_path / "real_table", "seedv")
  assert m["windows"] == 0 and len(m["rejected"]) == 6


def test_seedv_cli_with_set_override(mini, tmp_path):
  root = mini("seedv")
  out = tmp_path / "cli"
  table = json.dumps(miniature.SEEDV_TEST_TRIALS, separators=(",", ":"))
  proc = subprocess.run(
      [sys.executable, "-m", "data_prep.convert", f"--input={root}", "--recipe=seedv",
       f"--output={out}", "--workers=1", f"--set=params.trial_table={table}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  m = json.loads((out / "manifest.json").read_text())
  assert m["counts"]["split"] == {"train": 21, "val": 7, "test": 8}


# ---------------------------------------------------------------------------------------------
# Sleep-EDFx

_STAGES_PER_PSG = ["W"] * 3 + ["N1"] * 2 + ["N2"] * 4 + ["N3"] * 4 + ["REM"] * 3 + ["W"] * 2


def test_sleepedfx(mini, tmp_path):
  root = mini("sleepedfx")
  out = tmp_path / "out"
  m = run(root, out, "sleepedfx")
  check_common(m, out, "sleepedfx", {"train": 72, "val": 18, "test": 18},
               {"SC400": "train", "SC401": "train", "ST701": "train", "ST702": "val",
                "SC402": "test"})
  assert m["channels"] == list(geometry.SLEEP2)
  assert m["rejected"] == []
  recs = [r for r in records(out, "train") if r.recording.endswith("SC4001E0-PSG")]
  assert [r.label_name for r in recs] == _STAGES_PER_PSG
  starts = [r.window_start_s for r in recs]
  assert starts == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 330, 360, 390, 420,
                    450, 540, 570]
  assert recs[0].signal.shape == (2, 1920)
  check_deterministic(root, out, tmp_path, "sleepedfx")


def test_sleepedfx_pairing_and_wake_crop(mini, tmp_path):
  root = mini("sleepedfx")
  recipe = get_recipe("sleepedfx")
  psg = root / "sleep-telemetry" / "ST7011J0-PSG.edf"
  assert sleepedfx.find_hypnogram(psg).name == "ST7011JP-Hypnogram.edf"
  assert not recipe.accepts(root / "sleep-telemetry" / "ST7011JP-Hypnogram.edf")
  lonely = tmp_path / "SC4999E0-PSG.edf"
  lonely.write_bytes(b"")
  with pytest.raises(base.Rejected, match="no hypnogram"):
    recipe.describe(lonely, tmp_path)
  hyp = root / "sleep-cassette" / "SC4001EC-Hypnogram.edf"
  cropped = sleepedfx.read_hypnogram_epochs(hyp, 600.0, crop_wake_min=1.0)
  assert [t for t, _ in cropped][:3] == [30.0, 60.0, 90.0]
  assert len(cropped) == 15


def test_sleepedfx_real_hypnogram(tmp_path):
  """The label reader on the real SC4001EC hypnogram, paired with a synthetic PSG of the
  real recording's length (79,500 s): every 30-s epoch up to the PSG end is labelled."""
  hyp = REAL / "SC4001EC-Hypnogram.edf"
  if not hyp.exists():
    pytest.skip(f"shared real data not found at {REAL}")
  folder = tmp_path / "sleep-cassette"
  psg = miniature.write_psg_for_hypnogram(hyp, folder)
  assert psg.name == "SC4001E0-PSG.edf"
  out = tmp_path / "out"
  m = run(tmp_path, out, "sleepedfx", params={"split_fractions": {"train": 1.0}})
  assert m["rejected"] == []
  assert m["files"][0]["duration_s"] == 79500.0
  # Stage counts of SC4001 (the ? stage starts exactly at the PSG end; stage 4 merges into N3).
  assert m["counts"]["label"] == {"train": {"W": 1997, "N1": 58, "N2": 250, "N3": 220,
                                            "REM": 125}}
  assert m["windows"] == 79500 // 30
  # Epochs are contiguous 30-s steps from 0.
  with read_split(out, "train") as reader:
    assert reader[0].window_start_s == 0.0
    assert reader[len(reader) - 1].window_start_s == 79470.0


# ---------------------------------------------------------------------------------------------
# MentalArithmetic


def test_mental_arithmetic(mini, tmp_path):
  root = mini("mental_arithmetic")
  out = tmp_path / "out"
  m = run(root, out, "mental_arithmetic")
  check_common(m, out, "mental_arithmetic", {"train": 18, "val": 6, "test": 12},
               {"Subject00": "train", "Subject01": "train", "Subject02": "train",
                "Subject28": "val", "Subject32": "test", "Subject35": "test"})
  assert label_counts(m) == {"train": {"rest": 12, "task": 6}, "val": {"rest": 4, "task": 2},
                             "test": {"rest": 8, "task": 4}}
  assert m["rejected"] == []  # README, RECORDS, SHA256SUMS, subject-info.csv are not inputs
  assert len(m["files"]) == 12
  assert m["channels"] == list(geometry.TCP20)
  check_deterministic(root, out, tmp_path, "mental_arithmetic")


# ---------------------------------------------------------------------------------------------
# Mumtaz2016

_MUMTAZ_COUNTS = {"params": {"split_counts": {"MDD": [1, 1, 1], "H": [2, 1, 1]}}}


def test_mumtaz(mini, tmp_path):
  root = mini("mumtaz")
  out = tmp_path / "out"
  m = run(root, out, "mumtaz", **_MUMTAZ_COUNTS)
  check_common(m, out, "mumtaz", {"train": 10, "val": 4, "test": 7},
               {"H-S1": "train", "H-S2": "train", "H-S3": "val", "H-S15": "test",
                "MDD-S1": "train", "MDD-S2": "val", "MDD-S11": "test"})
  assert label_counts(m) == {"train": {"healthy": 6, "mdd": 4}, "val": {"healthy": 2, "mdd": 2},
                             "test": {"healthy": 4, "mdd": 3}}
  names = {Path(f["path"]).name for f in m["files"]}
  assert "MDD S1 TASK.edf" not in names and len(names) == 10
  assert {"MDD S11  EC.edf", "6921143_H S15 EO.edf", "6921959_H S15 EO.edf"} <= names
  assert m["rejected"] == []
  check_deterministic(root, out, tmp_path, "mumtaz", **_MUMTAZ_COUNTS)


def test_mumtaz_keep_last_duplicate_and_default_counts(mini, tmp_path):
  root = mini("mumtaz")
  m = run(root, tmp_path / "dup", "mumtaz",
          params={"duplicates": "keep_last", "split_counts": _MUMTAZ_COUNTS["params"]
                  ["split_counts"]})
  assert [Path(r["path"]).name for r in m["rejected"]] == ["6921143_H S15 EO.edf"]
  assert "duplicate" in m["rejected"][0]["reason"]
  assert m["windows"] == 19
  # Paper counts (MDD 24/5/5, H 19/4/5): a handful of subjects all land in train.
  m = run(root, tmp_path / "paper", "mumtaz")
  assert m["counts"]["split"] == {"train": 21}


# ---------------------------------------------------------------------------------------------
# PhysioNet P300


def test_physionet_p300(mini, tmp_path):
  root = mini("physionet_p300")
  out = tmp_path / "out"
  m = run(root, out, "physionet_p300")
  check_common(m, out, "physionet_p300", {"train": 48, "val": 12},
               {"s01": "train", "s06": "train", "s03": "val"})
  assert label_counts(m) == {"train": {"non_target": 40, "target": 8},
                             "val": {"non_target": 10, "target": 2}}
  assert not any("/s08/" in f["path"] for f in m["files"])  # excluded subject
  assert m["rejected"] == []
  rc01 = [r for r in records(out, "train") if r.recording.endswith("s01/rc01")]
  flashes = miniature.p300_flashes("A", 2, hash_for_underscore=False)
  assert [r.label for r in rc01] == [y for _, _, y in flashes]
  assert np.allclose([r.window_start_s for r in rc01], [t - 0.7 for t, _, _ in flashes])
  # s06 writes '_' as '#': the '#Tgt#' target still matches the '56789#' and 'FLRX4#' flashes.
  s06 = [r for r in records(out, "train") if r.subject == "s06"]
  assert sum(r.label for r in s06) == 2 and len(s06) == 12
  check_deterministic(root, out, tmp_path, "physionet_p300")


def test_every_recipe_has_a_miniature():
  from data_prep.recipes import RECIPE_MODULES
  downstream = set(RECIPE_MODULES) - {"pretrain_tcp20", "generic"}
  assert downstream == set(miniature.BUILDERS)
