"""--runner=beam (DirectRunner) writes the same shards and manifest as the local runner."""

import pytest

from data_prep import convert as convert_lib
from data_prep.recipes import get_recipe
from tests.data_prep import _make_edf as mk
from tests.data_prep.test_convert import run_cli, tree_digest

pytest.importorskip("apache_beam")

NAMES = ["EEG FP1-REF", "EEG CZ-REF", "EEG O1-REF", "PHOTIC-REF"]


def test_beam_direct_runner_matches_local_byte_for_byte(tmp_path):
  inputs = tmp_path / "in"
  for i in range(3):
    mk.write_edf(inputs / f"sub{i}" / f"sub{i}_run1.edf", names=NAMES, duration_s=20,
                 sfreq=128, seed=i)
  (inputs / "broken.edf").write_text("nope")
  common = (f"--input={inputs}", "--recipe=generic", "--channels=Fp1,Cz,O1")
  beam = run_cli(*common, f"--output={tmp_path / 'beam'}", "--runner=beam", timeout=300)
  assert beam.returncode == 0, beam.stderr[-3000:]
  recipe = get_recipe("generic", channels=["Fp1", "Cz", "O1"])
  m = convert_lib.convert(str(inputs), recipe, tmp_path / "local", workers=2)
  assert m["windows"] == 15 and len(m["rejected"]) == 1
  assert tree_digest(tmp_path / "beam") == tree_digest(tmp_path / "local")
  # Rerunning with Beam on the finished output changes nothing.
  again = run_cli(*common, f"--output={tmp_path / 'beam'}", "--runner=beam", timeout=300)
  assert again.returncode == 0
  assert tree_digest(tmp_path / "beam") == tree_digest(tmp_path / "local")
