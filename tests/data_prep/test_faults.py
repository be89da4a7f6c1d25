"""Bad input never stops a run; interrupted runs resume; a dying worker is survived."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep import convert as convert_lib
from data_prep import job
from data_prep import manifest as manifest_lib
from data_prep.recipes import get_recipe
from neuript_jax.data import record as rec
from tests.data_prep import _fault_recipes
from tests.data_prep import _make_edf as mk
from tests.data_prep.test_convert import REPO, run_cli, tree_digest

NAMES = ["EEG FP1-REF", "EEG CZ-REF", "EEG O1-REF", "ECG ECG1"]


def _generic(**kw):
  return get_recipe("generic", channels=["Fp1", "Cz", "O1"], **kw)


def _fif_with(path, values_fn, sfreq=128.0):
  raw = mk.make_raw(NAMES, duration_s=12, sfreq=sfreq, seed=5)
  data = raw.get_data()
  values_fn(data)
  raw._data = data
  raw.save(path, verbose="error")
  return path


def _zero_record_edf(src, dst):
  """The header of a valid EDF with its record count set to 0 and no data."""
  data = bytearray(Path(src).read_bytes())
  header_bytes = int(data[184:192].decode().strip())
  data[236:244] = b"0".ljust(8)
  Path(dst).write_bytes(bytes(data[:header_bytes]))
  return dst


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
  """One good recording and one file per bad-input class, with the expected reason."""
  d = tmp_path_factory.mktemp("bad")
  good = mk.write_edf(d / "good.edf", names=NAMES, duration_s=12, sfreq=128, seed=1)
  expected = {}
  mk.truncate(good, d / "truncated.edf", 0.5)
  expected["truncated.edf"] = "truncated EDF"
  (d / "text.edf").write_text("not a recording\n")
  expected["text.edf"] = "not an EDF file"
  (d / "empty.edf").write_bytes(b"")
  expected["empty.edf"] = "empty file"
  _zero_record_edf(good, d / "zero_length.edf")
  expected["zero_length.edf"] = "zero-length recording"
  corrupt = bytearray(good.read_bytes())
  corrupt[236:244] = b"abcdefgh"
  (d / "corrupt_header.edf").write_bytes(bytes(corrupt))
  expected["corrupt_header.edf"] = "corrupt EDF header"
  (d / "random_raw.fif").write_bytes(np.random.default_rng(0).bytes(4096))
  expected["random_raw.fif"] = "not a FIF file"
  _fif_with(d / "nan_raw.fif", lambda x: x.__setitem__((1, slice(100, 110)), np.nan))
  expected["nan_raw.fif"] = "10 NaN/inf samples in channel(s) Cz"
  _fif_with(d / "inf_raw.fif", lambda x: x.__setitem__((2, 50), np.inf))
  expected["inf_raw.fif"] = "NaN/inf samples in channel(s) O1"
  mk.write_edf(d / "missing_o1.edf", names=NAMES[:2] + NAMES[3:], duration_s=12, sfreq=128)
  expected["missing_o1.edf"] = "missing channel(s) O1"
  mk.write_edf(d / "unknown_names.edf", names=["EEG 000", "EEG 001"], duration_s=12,
               sfreq=128)
  expected["unknown_names.edf"] = "missing channel(s) Fp1, Cz, O1"
  mk.write_edf(d / "low_rate.edf", names=NAMES, duration_s=12, sfreq=50)
  expected["low_rate.edf"] = "sampling rate 50 Hz is below the recipe's minimum 64 Hz"
  return d, expected


def test_every_bad_input_class_becomes_a_readable_rejection(bad_folder, tmp_path):
  d, expected = bad_folder
  m = convert_lib.convert(str(d), _generic(), tmp_path, workers=2)
  assert [Path(f["path"]).name for f in m["files"]] == ["good.edf"]
  assert m["windows"] == 3
  reasons = {Path(r["path"]).name: r["reason"] for r in m["rejected"]}
  assert set(reasons) == set(expected)
  for name, fragment in expected.items():
    assert fragment in reasons[name], (name, reasons[name])
  assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_unknown_names_without_channel_list_are_named(bad_folder, tmp_path):
  d, _ = bad_folder
  m = convert_lib.convert(str(d / "unknown_names.edf"), get_recipe("generic"), tmp_path, 1)
  reason = m["rejected"][0]["reason"]
  assert "no channel has a standard 10-05 electrode name" in reason and "EEG 000" in reason


def test_strict_makes_rejections_an_error(bad_folder, tmp_path):
  d, _ = bad_folder
  inputs = f"--input={d / 'good.edf'},{d / 'text.edf'}"
  common = (inputs, "--recipe=generic", "--channels=Fp1,Cz,O1", "--workers=1")
  assert run_cli(*common, f"--output={tmp_path / 'a'}").returncode == 0
  strict = run_cli(*common, f"--output={tmp_path / 'b'}", "--strict")
  assert strict.returncode == 1 and "text.edf" in strict.stdout


def test_too_low_rate_for_the_band_pass(tmp_path):
  mk.write_edf(tmp_path / "slow.edf", names=NAMES, duration_s=12, sfreq=50)
  recipe = _generic(min_source_rate_hz=0)
  m = convert_lib.convert(str(tmp_path / "slow.edf"), recipe, tmp_path / "o", 1)
  assert "too low for a 30 Hz low-pass" in m["rejected"][0]["reason"]


@pytest.fixture(scope="module")
def resume_folder(tmp_path_factory):
  d = tmp_path_factory.mktemp("resume")
  for i in range(10):
    mk.write_edf(d / f"rec{i:02d}.edf", names=NAMES, duration_s=40, sfreq=128, seed=i)
  return d


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_without_duplicates(resume_folder, tmp_path, sig):
  reference = tmp_path / "reference"
  convert_lib.convert(str(resume_folder), _generic(), reference, workers=2)
  out = tmp_path / "out"
  # rec00..rec04 convert; the workers then hold on rec05.. until the signal: the run is
  # interrupted midway whatever the machine's load.
  proc = subprocess.Popen(
      [sys.executable, "-m", "tests.data_prep._fault_recipes", str(resume_folder), str(out),
       "2", "rec05"], cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE)
  deadline = time.monotonic() + 300
  committed = []
  try:
    while len(committed) < 3:
      assert proc.poll() is None, proc.communicate()[1][-3000:]
      assert time.monotonic() < deadline, "no 3 files committed in 300 s"
      committed = list((out / ".state").glob("rec[0-9]*.json")) if out.exists() else []
      time.sleep(0.02)
    os.killpg(proc.pid, sig)
    proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:   # a failed wait above: do not leave the held workers behind
      os.killpg(proc.pid, signal.SIGKILL)
      proc.communicate()
  assert 3 <= len(committed) <= 5, "the run was not interrupted midway"
  assert not (out / "manifest.json").exists()
  # An interrupted worker commits nothing more: no state for a file it was holding or had
  # queued (a worker that went on after a Ctrl-C, its imports half done, once committed an
  # "internal error" rejection that every rerun kept).
  after = sorted(p.name.split(".")[0] for p in (out / ".state").glob("rec[0-9]*.json"))
  assert after and all(name < "rec05" for name in after), after
  # Whatever shard is visible is complete: it equals the reference's shard.
  visible = sorted((out / "train").glob("*.array_record")) if (out / "train").exists() else []
  for shard in visible + sorted(out.glob("[tv]*/*.array_record")):
    twin = reference / shard.relative_to(out)
    assert shard.read_bytes() == twin.read_bytes()
  # The same command again (here: the plain CLI, same recipe hash) finishes the job.
  again = run_cli(f"--input={resume_folder}", "--recipe=generic", "--channels=Fp1,Cz,O1",
                  f"--output={out}", "--workers=2")
  assert again.returncode == 0, again.stderr
  assert "already done" in again.stderr
  assert tree_digest(out) == tree_digest(reference)
  m = manifest_lib.read(out)
  starts = [(r.recording, r.window_start) for s in m["shards"] for r in rec.read_split(out, s)]
  assert len(starts) == len(set(starts)) == m["windows"] == 10 * 10


def test_a_dying_worker_rejects_only_its_file(resume_folder, tmp_path):
  inputs = tmp_path / "in"
  inputs.mkdir()
  for name in ("rec00", "rec01", "rec02", "rec03"):
    (inputs / f"{name}.edf").write_bytes((resume_folder / f"{name}.edf").read_bytes())
  (inputs / "crash_me.edf").write_bytes((resume_folder / "rec04.edf").read_bytes())
  recipe = _fault_recipes.crashing(channels=["Fp1", "Cz", "O1"])
  m = convert_lib.convert(str(inputs), recipe, tmp_path / "out", workers=2)
  assert len(m["files"]) == 4 and m["windows"] == 40
  assert [Path(r["path"]).name for r in m["rejected"]] == ["crash_me.edf"]
  assert "worker process died" in m["rejected"][0]["reason"]
  assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp-" in p.name]


def test_changed_input_is_reconverted(tmp_path):
  path = mk.write_edf(tmp_path / "in" / "a.edf", names=NAMES, duration_s=12, sfreq=128)
  m1 = convert_lib.convert(str(path), _generic(), tmp_path / "out", 1)
  mk.write_edf(path, names=NAMES, duration_s=20, sfreq=128, seed=9)
  m2 = convert_lib.convert(str(path), _generic(), tmp_path / "out", 1)
  assert (m1["windows"], m2["windows"]) == (3, 5)
  assert m1["files"][0]["sha256"] != m2["files"][0]["sha256"]


def test_two_runs_into_one_output_are_refused(tmp_path):
  path = mk.write_edf(tmp_path / "in" / "a.edf", names=NAMES, duration_s=12, sfreq=128)
  held = job.lock_output(tmp_path / "out")
  try:
    with pytest.raises(job.OutputBusyError, match="another data_prep.convert"):
      convert_lib.convert(str(path), _generic(), tmp_path / "out", 1)
  finally:
    held.close()
  assert convert_lib.convert(str(path), _generic(), tmp_path / "out", 1)["windows"] == 3


def test_channel_without_template_position_is_a_setting_error(tmp_path):
  from neuript_jax import geometry
  path = mk.write_edf(tmp_path / "in" / "a.edf", names=NAMES, duration_s=12, sfreq=128)
  with pytest.raises(geometry.UnknownChannelError, match="X9"):
    convert_lib.convert(str(path), get_recipe("generic", channels=["Cz", "X9"]),
                        tmp_path / "out", 1)
  cli = run_cli(f"--input={path}", "--recipe=generic", "--channels=Cz,X9",
                f"--output={tmp_path / 'cli'}")
  assert cli.returncode == 2 and "X9" in cli.stderr


def test_workers_that_die_at_startup_stop_the_run_with_advice(tmp_path):
  """A script without a main guard re-runs itself in every worker: reported, not looped."""
  path = mk.write_edf(tmp_path / "in" / "a.edf", names=NAMES, duration_s=12, sfreq=128)
  script = tmp_path / "unguarded.py"
  script.write_text(
      "from data_prep import convert\nfrom data_prep.recipes import get_recipe\n"
      f"convert.convert({str(path)!r}, get_recipe('generic'), {str(tmp_path / 'out')!r}, 2)\n")
  proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                        text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
  assert proc.returncode != 0
  assert "worker processes die before converting any file" in proc.stderr


def test_output_of_another_engine_version_is_refused(tmp_path, monkeypatch):
  from data_prep import pipeline
  path = mk.write_edf(tmp_path / "in" / "a.edf", names=NAMES, duration_s=12, sfreq=128)
  m = convert_lib.convert(str(path), _generic(), tmp_path / "out", 1)
  assert m["engine_version"] == pipeline.ENGINE_VERSION
  monkeypatch.setattr(pipeline, "ENGINE_VERSION", pipeline.ENGINE_VERSION + 1)
  with pytest.raises(job.RecipeMismatchError, match="engine version"):
    convert_lib.convert(str(path), _generic(), tmp_path / "out", 1)


def test_a_recipe_bug_on_one_path_rejects_only_that_file(tmp_path):
  for name in ("S001R01.edf", "odd.edf"):
    mk.write_edf(tmp_path / "in" / name, names=NAMES, duration_s=12, sfreq=128)
  # A subject pattern that matches only EEGMMIDB names: group(1) fails on the other file.
  recipe = _generic(**{"params.subject_pattern": r"(S\d{3})|odd"})
  m = convert_lib.convert(str(tmp_path / "in"), recipe, tmp_path / "out", 1)
  assert [Path(f["path"]).name for f in m["files"]] == ["S001R01.edf"]
  assert m["files"][0]["subject"] == "S001"
  assert m["rejected"][0]["path"].endswith("odd.edf")
  assert "does not match" in m["rejected"][0]["reason"]


class _SloppyRecipe(_fault_recipes.generic.Generic):
  """A buggy recipe: no subject for one file, an exception for another."""

  def describe(self, path, root):
    info = super().describe(path, root)
    if path.stem == "nosubject":
      info.subject = None
    if path.stem == "boom":
      raise KeyError("boom")
    return info


def test_buggy_recipe_hooks_reject_files_not_the_run(tmp_path):
  for name in ("good.edf", "nosubject.edf", "boom.edf"):
    mk.write_edf(tmp_path / "in" / name, names=NAMES, duration_s=12, sfreq=128)
  recipe = _SloppyRecipe(_generic().config)
  m = convert_lib.convert(str(tmp_path / "in"), recipe, tmp_path / "out", 1)
  assert [Path(f["path"]).name for f in m["files"]] == ["good.edf"]
  reasons = {Path(r["path"]).name: r["reason"] for r in m["rejected"]}
  assert "invalid subject (None)" in reasons["nosubject.edf"]
  assert "could not parse this path (KeyError" in reasons["boom.edf"]


class _MovesS2ToVal(_fault_recipes.generic.Generic):
  """Same config as the generic recipe, but subject s2 is put in val."""

  def describe(self, path, root):
    info = super().describe(path, root)
    info.split = "val" if info.subject == "s2" else info.split
    return info


def test_a_changed_split_decision_moves_the_file_on_rerun(tmp_path):
  for subject in ("s1", "s2"):
    mk.write_edf(tmp_path / "in" / f"{subject}_rest.edf", names=NAMES, duration_s=12,
                 sfreq=128)
  first = convert_lib.convert(str(tmp_path / "in"), _generic(**{
      "params.split_rule": "lists", "params.split_lists": "test=s2"}), tmp_path / "out", 1)
  assert first["counts"]["split"] == {"test": 3, "train": 3}
  # The same recipe config (hash) but a different decision, as a sorted-fraction rule would
  # make after new subjects arrive: simulate it with a recipe whose describe moves s2.
  recipe = _MovesS2ToVal(_generic(**{"params.split_rule": "lists",
                             "params.split_lists": "test=s2"}).config)
  m = convert_lib.convert(str(tmp_path / "in"), recipe, tmp_path / "out", 0)
  assert m["counts"]["split"] == {"train": 3, "val": 3}
  assert not list((tmp_path / "out" / "test").glob("*.array_record"))
  assert len(rec.read_split(tmp_path / "out", "val")) == 3
