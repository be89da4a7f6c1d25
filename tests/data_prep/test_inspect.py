"""data_prep.inspect: manifest summary text and the PNGs it writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import logging

from data_prep import convert
from data_prep import inspect as inspect_lib
from tests.data_prep import miniature
from data_prep.recipes import get_recipe

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

logging.set_verbosity(logging.ERROR)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """The TUAB miniature converted (3 splits, one rejected file)."""
  base = tmp_path_factory.mktemp("inspect")
  root = miniature.build_tuab(base / "in")
  out = base / "out"
  manifest = convert.convert(str(root), get_recipe("tuab"), out, workers=1,
                             progress_interval_s=1e9)
  return out, manifest


def test_summary_lists_recipe_splits_labels_and_rejections(converted):
  _, manifest = converted
  text = inspect_lib.summarize(manifest)
  assert "recipe      tuab" in text
  assert "20: Fp1-F7, F7-T3" in text
  assert "train     10 windows, 4 subjects; abnormal 4, normal 6" in text
  assert "val       2 windows, 1 subjects; normal 2" in text
  assert "8 converted, 1 rejected" in text
  assert "aaaaaaaf_s001_t000.edf: missing channel(s) O2" in text


def test_pngs_per_split_and_positions(converted, tmp_path):
  out, _ = converted
  paths = inspect_lib.inspect_dir(out, tmp_path, per_split=2)
  assert sorted(p.name for p in paths) == ["positions.png", "test_windows.png",
                                           "train_windows.png", "val_windows.png"]
  import matplotlib.image
  for p in paths:
    assert p.read_bytes()[:8] == PNG_MAGIC
    img = matplotlib.image.imread(p)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert np.asarray(img).std() > 0.01  # something was drawn


def test_positions_plot_without_template_names(tmp_path):
  """Channels the template cannot place (recording positions) still plot, without lines."""
  pos = np.array([[0.0, 0.05, 0.08], [0.03, -0.02, 0.09]])
  path = inspect_lib.plot_positions(["E1-E2", "X"], pos, tmp_path / "p.png",
                                    montage="standard_1020")
  assert path.read_bytes()[:8] == PNG_MAGIC


def test_cli(converted, tmp_path):
  out, _ = converted
  proc = subprocess.run([sys.executable, "-m", "data_prep.inspect", str(out),
                         f"--out={tmp_path}", "--per_split=1"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "recipe      tuab" in proc.stdout
  assert (tmp_path / "positions.png").exists() and (tmp_path / "train_windows.png").exists()
